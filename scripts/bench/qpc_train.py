"""Quality per compute, training side: the judge segmenter, and generator runs under CPU-time budgets.

A generator run is the bundle's own training (``train.json`` + ``demo.json`` on the demo data, run in-process by
``monai_siamese.bundles.run_bundle``-style ``ConfigWorkflow`` parsing) with one extra handler,
:class:`BudgetExportHandler`: when the process's CPU time spent in training (``time.process_time`` from the trainer's
``STARTED``; the time of the exports themselves is not counted) passes each budget, it writes the EMA weights (with
their ``trained_with`` settings) and records the iteration, CPU and wall seconds; after the last budget it ends the
run. ``num_iterations`` (the length of the LR schedule, the EMA warm-up and the Siamese-Diffusion ramps) is set from a
short calibration to what fits the largest budget, so the last export is the end of a full schedule and the earlier
ones are snapshots of the same run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "OBJECTIVES",
    "BudgetExportHandler",
    "judge_datalist",
    "train_judge",
    "objective_overrides",
    "train_with_budgets",
]

#: objectives compared: name -> bundle overrides
OBJECTIVES: dict[str, dict[str, Any]] = {
    "ddpm_eps": {"objective": "ddpm", "prediction_type": "epsilon", "min_snr_gamma": None},
    "ddpm_v": {"objective": "ddpm", "prediction_type": "v_prediction", "min_snr_gamma": None},
    "ddpm_eps_minsnr5": {"objective": "ddpm", "prediction_type": "epsilon", "min_snr_gamma": 5.0},
    "ddpm_x0": {"objective": "ddpm", "prediction_type": "sample", "min_snr_gamma": None},
    "rflow": {"objective": "rflow", "prediction_type": "epsilon", "min_snr_gamma": None},
}


def objective_overrides(name: str) -> dict[str, Any]:
    """Bundle overrides of an objective of :data:`OBJECTIVES`."""
    return dict(OBJECTIVES[name])


def judge_datalist(folder: str | Path) -> str:
    """A datalist whose ``training`` split is the whole demo training pool (training + validation), ``validation``
    the demo validation slices and ``test`` the demo test slab (absolute paths)."""
    from monai_siamese.data import ensure_demo_data, load_datalist
    from monai_siamese.utils import atomic_write_json

    demo = ensure_demo_data()
    dl = str(Path(demo) / "datalist.json")
    parts = {s: load_datalist(dl, s, demo) for s in ("training", "validation", "test")}
    content = json.loads(Path(dl).read_text())
    out = {k: v for k, v in content.items() if not isinstance(v, list)}
    out.update({"training": parts["training"] + parts["validation"], "validation": parts["validation"]})
    out["test"] = parts["test"]
    path = Path(folder) / "judge_datalist.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, out)
    return str(path)


def train_judge(
    folder: str | Path,
    iterations: int = 900,
    batch: int = 8,
    size: int = 128,
    channels: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence[int] = (2, 2, 2),
    res_units: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Train the judge (the segmentation bundle) on the whole demo training pool once and score it on the demo test
    slab (cached: a second call reads ``folder/result.json``).

    Returns:
        ``{"weights": path, "test_dice": {...}, "cpu_s": ..., "wall_s": ...}``.
    """
    from monai_siamese.bundles import bundle_path
    from monai_siamese.data import load_datalist
    from monai_siamese.data.demo import CLASS_NAMES
    from monai_siamese.evaluation.scoring import score_segmentation
    from monai_siamese.evaluation.steps import cached_step, train_segmentation

    folder = Path(folder)

    def step() -> dict[str, Any]:
        dl = judge_datalist(folder)
        w0, c0 = time.perf_counter(), time.process_time()
        over = {
            "network_def#channels": list(channels),
            "network_def#strides": list(strides),
            "network_def#num_res_units": int(res_units),
            "validate_data": False,
        }
        # common.json named explicitly: the spec written beside the weights lists every config it was built from
        train_segmentation(
            bundle_path("segmentation"),
            ["common.json", "train.json", "demo.json"],
            dl,
            folder,
            seed,
            iterations,
            batch,
            size,
            overrides=over,
        )
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        weights = str(folder / "models" / "model_final.pt")
        test = load_datalist(dl, "test")
        score = score_segmentation(weights, test, CLASS_NAMES[1:], device="cpu")
        return {
            "weights": weights,
            "iterations": iterations,
            "batch": batch,
            "size": size,
            "channels": list(channels),
            "strides": list(strides),
            "num_res_units": res_units,
            "train_slices": len(load_datalist(dl, "training")),
            "test_dice": score["dice"],
            "test_slices": score["slices"],
            "cpu_s": cpu,
            "wall_s": wall,
        }

    return cached_step(folder, step)


class BudgetExportHandler:
    """Export a module's weights each time the training's CPU time passes a budget; end the run after the last.

    Args:
        module: what to export (the EMA model).
        budgets_s: CPU-second budgets, ascending.
        folder: export folder (``cpu_<budget>.safetensors``).
        settings: ``trained_with`` settings stored with the weights.
    """

    def __init__(
        self, module: torch.nn.Module, budgets_s: Sequence[float], folder: str | Path, settings: Mapping[str, Any]
    ) -> None:
        self.module = module
        self.budgets = sorted(float(b) for b in budgets_s)
        self.folder = Path(folder)
        self.settings = dict(settings)
        self.exports: list[dict[str, Any]] = []
        self._cpu0 = self._wall0 = 0.0
        self._excluded = 0.0

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self._final)

    def _start(self, engine: Any) -> None:
        self._cpu0, self._wall0 = time.process_time(), time.perf_counter()

    def elapsed(self) -> tuple[float, float]:
        """Training CPU and wall seconds so far (export time excluded)."""
        return time.process_time() - self._cpu0 - self._excluded, time.perf_counter() - self._wall0 - self._excluded

    def _export(self, engine: Any, budget: float | None) -> None:
        from monai_siamese.networks import save_weights

        cpu, wall = self.elapsed()
        t0 = time.process_time()
        name = f"cpu_{int(budget)}" if budget is not None else "final"
        path = self.folder / f"{name}.safetensors"
        save_weights(self.module, path, settings=self.settings)
        self.exports.append(
            {
                "budget_s": budget,
                "path": str(path),
                "iteration": int(engine.state.iteration),
                "cpu_s": cpu,
                "wall_s": wall,
            }
        )
        self._excluded += time.process_time() - t0

    def __call__(self, engine: Any) -> None:
        cpu, _ = self.elapsed()
        while self.budgets and cpu >= self.budgets[0]:
            self._export(engine, self.budgets.pop(0))
            if not self.budgets:
                engine.terminate()

    def _final(self, engine: Any) -> None:
        for b in list(self.budgets):  # the schedule ended before a budget: that budget gets the final weights
            self._export(engine, b)
        self.budgets = []


def _calibrate(
    method: str, overrides: Mapping[str, Any], work: Path, size_config: str = "demo.json", iterations: int = 12
) -> float:
    """CPU seconds per training iteration of the bundle as configured (median over ``iterations`` after 3)."""
    import statistics

    from ignite.engine import Events

    from bench.bundle_setup import bundle_parser

    over = {**overrides, "num_iterations": 10_000, "sample_interval": 0, "checkpoint_interval": 10_000}
    parser = bundle_parser(method, ["train.json", size_config], overrides=over, work_dir=work)
    trainer = parser.get_parsed_content("train#trainer")
    times: list[float] = []
    last = [0.0]

    @trainer.on(Events.ITERATION_STARTED)
    def _t0(engine):
        last[0] = time.process_time()

    @trainer.on(Events.ITERATION_COMPLETED)
    def _t1(engine):
        times.append(time.process_time() - last[0])
        if engine.state.iteration >= iterations + 3:
            engine.terminate(skip_completed=True)  # no end-of-run grid or export

    trainer.run()
    return statistics.median(times[3:])


def train_with_budgets(
    method: str,
    objective: str,
    folder: str | Path,
    budgets_s: Sequence[float],
    extra_overrides: Mapping[str, Any] | None = None,
    iteration_margin: float = 1.0,
    size_config: str = "demo.json",
) -> dict[str, Any]:
    """Train ``method`` with ``objective`` on the demo data (its ``demo.json``) and export its EMA weights at each
    CPU-time budget (cached in ``folder/result.json``).

    Args:
        method: generator bundle.
        objective: key of :data:`OBJECTIVES`.
        folder: run folder.
        budgets_s: CPU-second budgets.
        extra_overrides: further overrides (e.g. ``pretrained_path`` of MedDiff-FT, smaller settings in tests).
        iteration_margin: ``num_iterations`` = this x the calibrated iterations of the largest budget.
        size_config: the bundle config with the sizes (``demo.json``; ``tiny.json`` in tests).
    """
    from bench.bundle_setup import bundle_parser
    from monai_siamese.evaluation.steps import cached_step

    folder = Path(folder)

    def step() -> dict[str, Any]:
        over: dict[str, Any] = {**objective_overrides(objective), "sample_interval": 0, **dict(extra_overrides or {})}
        per_iter = _calibrate(method, over, folder / "calibration", size_config)
        n = max(int(iteration_margin * max(budgets_s) / per_iter), 10)
        over["num_iterations"] = n
        parser = bundle_parser(method, ["train.json", size_config], overrides=over, work_dir=folder)
        trainer = parser.get_parsed_content("train#trainer")
        handler = BudgetExportHandler(
            parser.get_parsed_content("ema").ema_model,
            budgets_s,
            folder / "exports",
            parser.get_parsed_content("trained_with"),
        )
        handler.attach(trainer)
        parser.get_parsed_content("train#checkpoint_saver").attach(trainer)
        trainer.run()
        return {
            "method": method,
            "objective": objective,
            "overrides": json.loads(json.dumps(over, default=str)),
            "calibrated_cpu_s_per_iteration": per_iter,
            "num_iterations": n,
            "exports": handler.exports,
        }

    return cached_step(folder, step)
