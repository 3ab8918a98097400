"""Demo data: axial slices of the MNI152 2009 T1 template with CSF / GM / WM labels, built offline.

Source: nilearn's bundled MNI152 2009 template (T1, grey- and white-matter probability maps and brain mask),
so nothing is downloaded. Classes: 0 background, 1 CSF (= brain - GM - WM), 2 GM, 3 WM; each voxel takes
the class of highest probability after area-downsampling the maps to 1.5 mm in-plane (192 mm field of view
-> 128 x 128). Axial slices with more than 200 WM pixels are kept and split by slab: test = the central slab
z 74-98, a 13-slice gap on each side is dropped, the rest is the training pool, and every 12th pool slice is
held out for validation. Slices are written once as 2D NIfTI files (real geometry) plus ``datalist.json``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Resize, SpatialCrop

from monai_siamese.data.datalist import write_datalist
from monai_siamese.data.io import save_nifti
from monai_siamese.data.slicing import iter_slices
from monai_siamese.utils import atomic_write_text

__all__ = [
    "DEMO_VERSION",
    "CLASS_NAMES",
    "demo_dir",
    "demo_datalist",
    "build_demo_data",
    "ensure_demo_data",
    "demo_volumes",
    "DEMO_VOLUME_VERSION",
    "demo_volume_dir",
    "demo_volume_datalist",
    "build_demo_volume",
    "ensure_demo_volume",
]

logger = logging.getLogger(__name__)

DEMO_VERSION = "mni152-2009-v1"
CLASS_NAMES = ["background", "CSF", "GM", "WM"]
TEST_SLAB = (74, 98)
GAP = 13
MIN_WM_PIXELS = 200
SIZE = 128
FOV_MM = 192
VAL_EVERY = 12
_MARKER = ".complete"


def _cache_dir(env_var: str, version: str) -> str:
    """``$env_var`` when set, else ``~/.cache/monai_siamese/<version>``."""
    env = os.environ.get(env_var)
    if env:
        return str(Path(env).expanduser())
    return str(Path.home() / ".cache" / "monai_siamese" / version)


def demo_dir() -> str:
    """Folder of the demo data (``$MONAI_SIAMESE_DEMO_DIR`` or ``~/.cache/monai_siamese/<version>``); not built."""
    return _cache_dir("MONAI_SIAMESE_DEMO_DIR", DEMO_VERSION)


def demo_datalist() -> str:
    """Path of the demo ``datalist.json``, building the demo data first if needed."""
    return str(Path(ensure_demo_data()) / "datalist.json")


def _is_complete(root: Path, version: str = DEMO_VERSION) -> bool:
    marker = root / _MARKER
    return marker.is_file() and marker.read_text().strip() == version


@contextmanager
def _built_aside(root: Path, version: str) -> Iterator[Path]:
    """A temporary folder next to ``root`` to build into; on success it is marked complete with ``version`` and
    replaces ``root``, on error it is removed."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        yield tmp
        atomic_write_text(tmp / _MARKER, version + "\n")
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _datalist_info(name: str, description: str) -> dict[str, Any]:
    """The ``datalist.json`` fields every demo has: its name and description, the classes, MR T1 (``mr`` preset)."""
    return {
        "name": name,
        "description": description,
        "labels": {str(i): n for i, n in enumerate(CLASS_NAMES)},
        "num_classes": len(CLASS_NAMES),
        "modality": "MR T1",
        "preset": "mr",
    }


def ensure_demo_data(root: str | os.PathLike | None = None) -> str:
    """Return the demo folder, building it once when missing or from another version."""
    root = Path(root or demo_dir())
    if not _is_complete(root):
        build_demo_data(str(root))
    return str(root)


def _load_mni() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        from nilearn import datasets
    except ImportError as e:  # pragma: no cover - message for users without the extra
        raise ImportError('the demo data need nilearn: pip install "monai-siamese[demo]"') from e
    t1_img = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    brain = datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32)
    t1 = t1_img.get_fdata(dtype=np.float32)
    gm, wm = gm * brain, wm * brain
    csf = np.clip(brain - gm - wm, 0, 1)
    probs = np.stack([1 - brain, csf, gm, wm])
    return t1, probs, np.asarray(t1_img.affine, dtype=np.float64)


def demo_volumes() -> tuple[MetaTensor, MetaTensor]:
    """The demo's T1 image and CSF/GM/WM label as channel-first 3D MetaTensors on the demo grid.

    1.5 mm in-plane (192 mm field of view centred on the brain, 128 x 128), the template's 1 mm axial spacing kept
    (189 slices), RAS; slice ``z`` of these volumes is the 2D demo's slice ``z``.
    """
    t1, probs, affine = _load_mni()
    brain = probs[0] < 0.5
    xs, ys = np.where(brain.any((1, 2)))[0], np.where(brain.any((0, 2)))[0]
    center = [int(round((xs.min() + xs.max()) / 2)), int(round((ys.min() + ys.max()) / 2)), t1.shape[2] // 2]
    crop = SpatialCrop(roi_center=center, roi_size=(FOV_MM, FOV_MM, t1.shape[2]))
    resize_area = Resize((SIZE, SIZE, -1), mode="area")
    image = resize_area(crop(MetaTensor(torch.from_numpy(t1)[None], affine=torch.from_numpy(affine))))
    p = resize_area(crop(MetaTensor(torch.from_numpy(probs), affine=torch.from_numpy(affine))))
    label = MetaTensor(p.argmax(0, keepdim=True).to(torch.uint8), meta=dict(p.meta))
    image.meta["filename_or_obj"] = "nilearn:MNI152_T1_1mm (2009)"
    label.meta["filename_or_obj"] = "nilearn:MNI152_gm/wm/brain_mask (2009)"
    return image, label


def build_demo_data(root: str | os.PathLike | None = None) -> str:
    """Build the demo slices and datalist into ``root`` (atomically: built aside, then moved in place)."""
    root = Path(root or demo_dir())
    logger.info(f"building the MNI152 demo data in {root}")
    image, label = demo_volumes()

    with _built_aside(root, DEMO_VERSION) as tmp:
        splits: dict[str, list] = {"training": [], "validation": [], "test": []}
        pool = []
        slices = iter_slices(
            {"image": image, "label": label}, axis=2, min_foreground=MIN_WM_PIXELS + 1, foreground_classes=[3]
        )
        for s in slices:
            z = s["slice_index"]
            if not TEST_SLAB[0] <= z <= TEST_SLAB[1] and TEST_SLAB[0] - GAP <= z <= TEST_SLAB[1] + GAP:
                continue  # the gap between test slab and training pool
            name = f"mni152_z{z:03d}.nii.gz"
            save_nifti(s["image"][0].float(), s["image"].affine, tmp / "images" / name)
            save_nifti(s["label"][0].to(torch.uint8), s["label"].affine, tmp / "labels" / name)
            entry = {"image": f"images/{name}", "label": f"labels/{name}", "slice_index": z}
            (splits["test"] if TEST_SLAB[0] <= z <= TEST_SLAB[1] else pool).append(entry)
        for i, entry in enumerate(pool):
            splits["validation" if i % VAL_EVERY == VAL_EVERY // 2 else "training"].append(entry)
        write_datalist(
            tmp / "datalist.json",
            splits,
            relative=False,
            extra={
                **_datalist_info("MNI152 2009 T1 demo (axial slices)", __doc__.strip().splitlines()[0]),
                "version": DEMO_VERSION,
                "test_slab": list(TEST_SLAB),
                "gap": GAP,
            },
        )
    counts = {k: len(v) for k, v in splits.items()}
    logger.info(f"demo data ready in {root}: {counts}")
    return str(root)


# --- the same demo as one 3D volume, for 3D trainers and slice-consistent volume generation --------------------

DEMO_VOLUME_VERSION = "mni152-2009-volume-v1"


def demo_volume_dir() -> str:
    """Folder of the 3D demo (``$MONAI_SIAMESE_DEMO_VOLUME_DIR`` or ``~/.cache/monai_siamese/<version>``); not
    built."""
    return _cache_dir("MONAI_SIAMESE_DEMO_VOLUME_DIR", DEMO_VOLUME_VERSION)


def demo_volume_datalist() -> str:
    """Path of the 3D demo ``datalist.json``, building the 3D demo first if needed."""
    return str(Path(ensure_demo_volume()) / "datalist.json")


def ensure_demo_volume(root: str | os.PathLike | None = None) -> str:
    """Return the 3D demo folder, building it once when missing or from another version."""
    root = Path(root or demo_volume_dir())
    if not _is_complete(root, DEMO_VOLUME_VERSION):
        build_demo_volume(str(root))
    return str(root)


def build_demo_volume(root: str | os.PathLike | None = None) -> str:
    """Build the MNI152 demo as one 3D image + label NIfTI pair and a small 3D datalist, offline (nilearn).

    Same grid and classes as the 2D demo (:func:`demo_volumes`: 1.5 mm in-plane, 128 x 128 x 189, 0 background,
    1 CSF, 2 GM, 3 WM). Layout: ``images/mni152_t1.nii.gz``, ``labels/mni152_label.nii.gz`` and ``datalist.json``
    with the pair under ``training`` and the label alone under ``masks`` (the input of a volume generation run:
    ``{"label": ...}`` entries). One subject only: there is nothing to split, so the datalist is for smoke tests,
    consistency measurements and the 3D drop-in check, not for a held-out evaluation. Built aside and moved in
    place atomically; cached until :data:`DEMO_VOLUME_VERSION` changes.
    """
    root = Path(root or demo_volume_dir())
    logger.info(f"building the MNI152 3D demo volume in {root}")
    image, label = demo_volumes()
    with _built_aside(root, DEMO_VOLUME_VERSION) as tmp:
        save_nifti(image[0].float(), image.affine, tmp / "images" / "mni152_t1.nii.gz")
        save_nifti(label[0].to(torch.uint8), label.affine, tmp / "labels" / "mni152_label.nii.gz")
        pair = {"image": "images/mni152_t1.nii.gz", "label": "labels/mni152_label.nii.gz"}
        write_datalist(
            tmp / "datalist.json",
            {"training": [pair], "masks": [{"label": pair["label"]}]},
            relative=False,
            extra={
                **_datalist_info(
                    "MNI152 2009 T1 demo (3D volume)",
                    "MNI152 2009 T1 template with CSF/GM/WM labels as one 3D volume (1.5 mm in-plane)",
                ),
                "slice_axis": 2,
                "version": DEMO_VOLUME_VERSION,
            },
        )
    logger.info(f"3D demo volume ready in {root}")
    return str(root)
