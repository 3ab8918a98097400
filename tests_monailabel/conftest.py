"""Fixtures for the MONAI Label tests: they run in the monailabel venv (``scripts/setup_monailabel_env.sh``), against
the real ``monailabel`` package and server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests

REPO = Path(__file__).resolve().parent.parent
BUNDLES = REPO / "bundles"
APP = REPO / "monai_siamese" / "monailabel_app"

GENERATOR_TINY = {
    "spatial_size": [32, 32],
    "network_def#channels": [8, 16],
    "network_def#attention_levels": [False, False],
    "network_def#num_res_blocks": 1,
    "network_def#num_head_channels": 8,
    "network_def#norm_num_groups": 8,
    "batch_size": 4,
    "num_workers": 0,
    "epoch_length": 3,
    "checkpoint_interval": 1,
    "sample_interval": 1000,
    "sample_steps": 2,
    "max_train_slices": 8,
    "warmup_steps": 1,
    "ema_warmup_iters": 2,
    "num_inference_steps": 2,
}
SEGMENTATION_TINY = {
    "spatial_size": [32, 32],
    "network_def#channels": [8, 16],
    "network_def#strides": [2],
    "network_def#num_res_units": 0,
    "batch_size": 4,
    "num_workers": 0,
    "epoch_length": 3,
    "val_interval": 1,
    "checkpoint_interval": 1,
    "max_train_slices": 8,
}
OVERRIDES = {
    "seg_guided_diffusion": GENERATOR_TINY,
    "siamese_diffusion": GENERATOR_TINY,
    "segmentation": SEGMENTATION_TINY,
}


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> str:
    from monai_siamese.data.demo import demo_dir as default_demo_dir
    from monai_siamese.data.demo import ensure_demo_data

    if os.environ.get("MONAI_SIAMESE_DEMO_DIR") or os.path.isfile(os.path.join(default_demo_dir(), ".complete")):
        return ensure_demo_data()
    return ensure_demo_data(str(tmp_path_factory.mktemp("demo") / "mni152"))


def make_volume(demo: str, out_image: Path, out_label: Path, n: int = 5) -> None:
    """A small 3D volume from ``n`` demo slices, stored with slices on the file's first axis and flipped in-plane
    (not RAS), so the tests see a reorientation."""
    entries = json.loads((Path(demo) / "datalist.json").read_text())["training"][::7][:n]
    imgs = [nib.load(str(Path(demo) / e["image"])) for e in entries]
    labs = [np.asarray(nib.load(str(Path(demo) / e["label"])).dataobj) for e in entries]
    img = np.stack([np.asarray(i.dataobj, dtype=np.float32) for i in imgs], -1)  # (X, Y, Z) RAS
    lab = np.stack(labs, -1).astype(np.uint8)
    aff = np.asarray(imgs[0].affine, dtype=np.float64).copy()
    aff[2, 2] = 2.0
    # file axes (k, j', i') = (z, -y, -x): world = aff @ [X-1-i', Y-1-j', k]
    X, Y, _ = img.shape
    perm = np.zeros((4, 4))
    perm[0, 2], perm[0, 3] = -1.0, X - 1
    perm[1, 1], perm[1, 3] = -1.0, Y - 1
    perm[2, 0] = 1.0
    perm[3, 3] = 1.0
    file_aff = aff @ perm
    img_f = np.ascontiguousarray(np.transpose(img[::-1, ::-1, :], (2, 1, 0)))
    lab_f = np.ascontiguousarray(np.transpose(lab[::-1, ::-1, :], (2, 1, 0)))
    nib.save(nib.Nifti1Image(img_f, file_aff), str(out_image))
    nib.save(nib.Nifti1Image(lab_f, file_aff), str(out_label))


@pytest.fixture(scope="session")
def datastore(demo_dir, tmp_path_factory) -> Path:
    """A MONAI Label datastore: 6 demo slices (2D NIfTI) with final labels, and one small 3D volume."""
    root = tmp_path_factory.mktemp("studies")
    (root / "labels" / "final").mkdir(parents=True)
    entries = json.loads((Path(demo_dir) / "datalist.json").read_text())["training"][::9][:6]
    for e in entries:
        name = Path(e["image"]).name
        shutil.copy(Path(demo_dir) / e["image"], root / name)
        shutil.copy(Path(demo_dir) / e["label"], root / "labels" / "final" / name)
    make_volume(demo_dir, root / "volume3d.nii.gz", root / "labels" / "final" / "volume3d.nii.gz")
    return root


@pytest.fixture(scope="session")
def bundles_copy(tmp_path_factory) -> Path:
    """The repository's bundles (configs only), so training writes its models into a temporary folder."""
    root = tmp_path_factory.mktemp("bundles")
    for b in BUNDLES.iterdir():
        if (b / "configs").is_dir():
            shutil.copytree(b / "configs", root / b.name / "configs")
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(datastore, bundles_copy, tmp_path_factory):
    """``monailabel start_server`` on 127.0.0.1 serving the app with tiny overrides; yields its base URL."""
    work = tmp_path_factory.mktemp("server")
    # monailabel writes logs/, model/, bin/, lib/ into the app folder: serve a copy of main.py (it imports the package)
    app = work / "app"
    app.mkdir()
    shutil.copy(APP / "main.py", app / "main.py")
    overrides = work / "overrides.json"
    overrides.write_text(json.dumps(OVERRIDES))
    port = _free_port()
    exe = Path(sys.executable).parent / "monailabel"
    cmd = [
        str(exe),
        "start_server",
        "--app",
        str(app),
        "--studies",
        str(datastore),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--conf",
        "models",
        "seg_guided_diffusion,segmentation",
        "--conf",
        "bundles",
        str(bundles_copy),
        "--conf",
        "overrides",
        str(overrides),
        "--conf",
        "output_dir",
        str(work / "synthetic_pairs"),
    ]
    # the monailabel launcher runs `python -m monailabel.main`: this venv's python first on PATH
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {
        **os.environ,
        "PATH": path,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
        "MONAI_LABEL_SESSIONS": "false",
    }
    log = open(work / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(work), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {proc.returncode}:\n{(work / 'server.log').read_text()[-4000:]}"
                )
            try:
                if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"server not up in 180 s:\n{(work / 'server.log').read_text()[-4000:]}")
            time.sleep(1)
        yield {"url": url, "work": work, "bundles": bundles_copy, "datastore": datastore, "log": work / "server.log"}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        log.close()
