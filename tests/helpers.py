"""Test helpers: writing small NIfTI / PNG / DICOM files, a tiny conditioned denoiser, loading scripts."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from monai_siamese.networks import ConcatConditionedUNet

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"


def load_script(name: str):
    """``scripts/<name>.py`` imported as the module ``<name>_script``."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"{name}_script"] = mod
    spec.loader.exec_module(mod)
    return mod


def write_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray | None = None) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return str(path)


def write_png(path: str | os.PathLike, array: np.ndarray) -> str:
    """Write ``array`` given as MONAI sees it, ``(x, y)`` or ``(x, y, 3)``, as a PNG (rows = y)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(np.swapaxes(array, 0, 1))).save(str(path))
    return str(path)


def write_dicom_series(folder: str | os.PathLike, volume: np.ndarray, affine: np.ndarray, modality: str = "MR") -> str:
    """Write an int16 ``(x, y, z)`` volume with a RAS ``affine`` as a DICOM series (one file per z slice, LPS
    patient coordinates), as a scanner would."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vol = np.asarray(volume)
    if vol.dtype != np.int16:
        raise ValueError("volume must be int16")
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    col_dir = ras_to_lps @ (affine[:3, 0] / np.linalg.norm(affine[:3, 0]))  # direction of increasing x index
    row_dir = ras_to_lps @ (affine[:3, 1] / np.linalg.norm(affine[:3, 1]))  # direction of increasing y index
    sx, sy, sz = (float(np.linalg.norm(affine[:3, i])) for i in range(3))
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(vol.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.PatientName = modality, "MNI152", "MNI152^Template"
        ds.InstanceNumber = k + 1
        pos = ras_to_lps @ (affine @ np.array([0.0, 0.0, k, 1.0]))[:3]
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.ImageOrientationPatient = [float(v) for v in (*col_dir, *row_dir)]
        ds.PixelSpacing = [sy, sx]  # row spacing (between rows = y), column spacing (x)
        ds.SliceThickness = sz
        ds.Rows, ds.Columns = vol.shape[1], vol.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = np.ascontiguousarray(vol[:, :, k].T).tobytes()
        ds.save_as(str(folder / f"slice_{k:04d}.dcm"), enforce_file_format=True)
    return str(folder)


def tiny_denoiser(cond_channels: int) -> ConcatConditionedUNet:
    """A small 2D :class:`ConcatConditionedUNet` (one image channel + ``cond_channels``; channels 8, 16), with the
    weights of ``torch.manual_seed(0)`` (the global generator is reseeded), in training mode."""
    import torch
    from monai.networks.nets import DiffusionModelUNet

    from monai_siamese.networks import ConcatConditionedUNet

    torch.manual_seed(0)
    unet = DiffusionModelUNet(
        spatial_dims=2,
        in_channels=1 + cond_channels,
        out_channels=1,
        channels=(8, 16),
        attention_levels=(False, False),
        num_res_blocks=1,
        norm_num_groups=8,
    )
    return ConcatConditionedUNet(unet)


#: the bad entries of :func:`write_bad_datalist` (file name -> what is wrong); ``ok_lab.nii.gz`` is fine
BAD_FILES = {"does_not_exist.nii.gz": "not found", "shape_lab.nii.gz": "(8, 9)", "seven_lab.nii.gz": "{0, 7}"}


def write_bad_datalist(folder: str | os.PathLike, splits: tuple[str, ...] = ("training",)) -> Path:
    """A datalist with one good pair and three broken ones (a missing label, a label of another shape, a label
    value outside the classes), the same entries under each of ``splits``."""
    folder = Path(folder)
    img = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    good_lab = np.zeros((8, 8), np.uint8)
    good_lab[2:5, 2:5] = 2
    write_nifti(folder / "ok_img.nii.gz", img)
    write_nifti(folder / "ok_lab.nii.gz", good_lab)
    write_nifti(folder / "missing_lab_img.nii.gz", img)
    write_nifti(folder / "shape_img.nii.gz", img)
    write_nifti(folder / "shape_lab.nii.gz", np.zeros((8, 9), np.uint8) + (np.arange(9) == 3))
    write_nifti(folder / "seven_img.nii.gz", img)
    seven = np.zeros((8, 8), np.uint8)
    seven[1, 1] = 7
    write_nifti(folder / "seven_lab.nii.gz", seven)
    entries = [
        {"image": "ok_img.nii.gz", "label": "ok_lab.nii.gz"},
        {"image": "missing_lab_img.nii.gz", "label": "does_not_exist.nii.gz"},
        {"image": "shape_img.nii.gz", "label": "shape_lab.nii.gz"},
        {"image": "seven_img.nii.gz", "label": "seven_lab.nii.gz"},
    ]
    path = folder / "datalist.json"
    path.write_text(json.dumps({**{s: entries for s in splits}, "num_classes": 4}))
    return path


def bundle_workflow(
    bundle: str | os.PathLike,
    configs: list[str],
    run_id: str = "training",
    workflow_type: str = "train",
    initialize: bool = True,
    **overrides,
):
    """A bundle's ``ConfigWorkflow`` (``configs`` over ``common.json``, no logging file), initialised unless told."""
    from monai.bundle import ConfigWorkflow

    from monai_siamese.bundles import bundle_path, config_files

    root = bundle_path(bundle)
    wf = ConfigWorkflow(
        config_file=config_files(root, configs),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=workflow_type,
        run_id=run_id,
        bundle_root=str(root),
        **overrides,
    )
    if initialize:
        wf.initialize()
    return wf
