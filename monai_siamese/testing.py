"""Bundle workflow checks shared by the test suites (``tests/`` and ``tests_monailabel/``), in the spirit of the
model-zoo's ``check_workflow``: train -> kill -9 -> resume (from the newest intact checkpoint) -> infer, with the
resumed weights compared bit for bit against an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_siamese.bundles import bundle_path, config_files, folder_overrides, run_bundle

__all__ = ["final_weights", "max_weight_difference", "bundle_command", "kill_after_checkpoints", "check_workflow"]


def final_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights a training run exports in ``folder/models``: ``model.safetensors`` (generators, the EMA model) or
    ``model_final.pt`` (segmentation), plus the raw network of ``checkpoint_final.pt`` under ``network.*``."""
    from monai_siamese.networks import load_state_dict_file

    models = Path(folder) / "models"
    out: dict[str, torch.Tensor] = {}
    for name in ("model.safetensors", "model_final.pt"):
        if (models / name).is_file():
            out.update(load_state_dict_file(models / name))
    final = models / "checkpoint_final.pt"
    if final.is_file():
        state = torch.load(str(final), map_location="cpu", weights_only=True)
        out.update({f"network.{k}": v for k, v in state.get("network", {}).items()})
    return out


def max_weight_difference(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Largest absolute difference between two state dicts with the same keys (inf when the keys differ)."""
    if set(a) != set(b) or not a:
        return float("inf")
    return max(float((a[k].float() - b[k].float()).abs().max()) if a[k].numel() else 0.0 for k in a)


def bundle_command(
    bundle: str | os.PathLike, configs: Sequence[str], run_id: str, overrides: Mapping[str, Any], args_file: Path
) -> list[str]:
    """The ``python -m monai.bundle run`` command line of a bundle run (overrides in a JSON ``--args_file``)."""
    folder = bundle_path(bundle)
    files = config_files(folder, configs)
    args_file.write_text(json.dumps(dict(overrides)))
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        run_id,
        "--config_file",
        str(files),
        "--meta_file",
        str(folder / "configs" / "metadata.json"),
        "--logging_file",
        str(folder / "configs" / "logging.conf"),
        "--args_file",
        str(args_file),
    ]


def kill_after_checkpoints(
    command: Sequence[str], ckpt_dir: str | os.PathLike, count: int = 2, timeout: float = 300, cwd: str | None = None
) -> list[str]:
    """Start ``command``, SIGKILL it as soon as ``count`` ``CheckpointSaver`` checkpoints exist in ``ckpt_dir``;
    returns the checkpoints it left. Raises when it ends on its own first (nothing was interrupted)."""
    from monai_siamese.engines import list_checkpoints

    # the killed run computes its iterations with the thread count of this process (which runs the uninterrupted
    # and the resumed parts): CPU kernels split reductions by thread, so another count changes the last bits
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    start = time.time()
    try:
        while time.time() - start < timeout:
            if len(list_checkpoints(ckpt_dir)) >= count:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return list_checkpoints(ckpt_dir)
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace")[-3000:] if proc.stdout else ""
                raise RuntimeError(f"the run ended (status {proc.returncode}) before {count} checkpoints:\n{out}")
            time.sleep(0.02)
        raise TimeoutError(f"no {count} checkpoints in {ckpt_dir} after {timeout} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def check_workflow(
    bundle: str | os.PathLike,
    work_dir: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    train_configs: Sequence[str] = ("train.json", "tiny.json"),
    infer_configs: Sequence[str] | None = ("inference.json", "tiny.json"),
    infer_overrides: Mapping[str, Any] | None = None,
    iterations: int = 10,
    checkpoint_interval: int = 2,
    truncate_latest: bool = True,
) -> dict[str, Any]:
    """Train ``bundle`` uninterrupted (in-process), train it again with ``python -m monai.bundle run`` in a
    subprocess killed with SIGKILL once two checkpoints exist, truncate the newest checkpoint (a kill during a write
    on a file system without atomic rename), rerun the same training in-process (it must resume from the older
    intact checkpoint, with a warning), then sample / predict with ``infer_configs``.

    Args:
        bundle: bundle name or folder.
        work_dir: folder of the runs (``full/``, ``killed/``, ``infer/``).
        overrides: overrides of both trainings (data, sizes).
        train_configs: training configs.
        infer_configs: inference configs (None: no inference).
        infer_overrides: further inference overrides.
        iterations: training iterations (the kill comes after ``2 * checkpoint_interval``).
        checkpoint_interval: iterations between checkpoints.
        truncate_latest: truncate the newest checkpoint left by the kill.

    Returns:
        ``{"max_abs_diff", "killed_checkpoints", "resumed_from", "skipped", "infer_dir"}``.
    """
    from monai_siamese.engines import handlers

    work = Path(work_dir)
    common = {
        **dict(overrides or {}),
        "num_iterations": iterations,
        "epoch_length": checkpoint_interval,
        "checkpoint_interval": checkpoint_interval,
        "checkpoints_kept": 5,
    }
    run_bundle(bundle, train_configs, "training", "train", {**common, **folder_overrides(work / "full")})
    killed = {**common, **folder_overrides(work / "killed")}
    command = bundle_command(bundle, train_configs, "training", killed, work / "killed_args.json")
    cwd = work / "cwd"  # the command runs from an unrelated, empty folder: the configs find their bundle
    cwd.mkdir(parents=True, exist_ok=True)
    left = kill_after_checkpoints(command, work / "killed" / "models", count=2, cwd=str(cwd))
    if (work / "killed" / "models" / "checkpoint_final.pt").exists():
        raise RuntimeError("the killed run finished before it was killed")
    if list(cwd.iterdir()):
        raise RuntimeError(f"the bundle run wrote into its working directory: {sorted(p.name for p in cwd.iterdir())}")
    if truncate_latest:
        newest = Path(left[0])
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    loaded: dict[str, Any] = {}
    original = handlers.ResumeHandler.attach

    def spy(self, engine):  # record where the resumed run started
        original(self, engine)
        loaded.update(resumed_from=self.loaded_from, skipped=list(self.skipped))

    handlers.ResumeHandler.attach = spy
    try:
        run_bundle(bundle, train_configs, "training", "train", killed)
    finally:
        handlers.ResumeHandler.attach = original
    result = {
        "max_abs_diff": max_weight_difference(final_weights(work / "full"), final_weights(work / "killed")),
        "killed_checkpoints": left,
        **loaded,
    }
    if infer_configs is not None:
        infer = {
            **dict(overrides or {}),
            "ckpt_dir": str(work / "killed" / "models"),
            "output_dir": str(work / "infer"),
            **dict(infer_overrides or {}),
        }
        run_bundle(bundle, infer_configs, "inference", "infer", infer)
        result["infer_dir"] = str(work / "infer")
    return result
