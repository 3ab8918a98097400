"""File I/O helpers shared by the data layer, the writers and the evaluation: NIfTI with a RAS affine, 2D PNG images
as MONAI's ``LoadImage`` reads them, and the shape of an image file without loading it. Every write is atomic."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from monai_siamese.utils import atomic_path

__all__ = ["save_nifti", "save_png_array", "image_shape"]


def save_nifti(array: np.ndarray | torch.Tensor, affine: np.ndarray | torch.Tensor, path: str | os.PathLike) -> str:
    """Save a ``(H, W)`` / ``(X, Y, Z)`` array with a 4x4 RAS affine as NIfTI (qform = sform), atomically."""
    arr = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    aff = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    img = nib.Nifti1Image(arr, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return str(path)


def save_png_array(array: np.ndarray, path: str | os.PathLike) -> str:
    """Save a uint8 ``(x, y)`` or ``(x, y, 3)`` array, indexed as MONAI's ``LoadImage`` returns a PNG (first axis =
    columns), as a PNG file, atomically; reading it back with MONAI gives ``array``."""
    arr = np.ascontiguousarray(np.swapaxes(np.asarray(array), 0, 1))
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return str(path)


def image_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """Spatial shape ``(H, W)`` of a 2D image file (NIfTI or PNG/JPG) without loading it through MONAI."""
    p = str(path)
    if p.endswith((".nii", ".nii.gz")):
        return tuple(int(s) for s in nib.load(p).shape[:2])
    with Image.open(p) as im:
        return (im.size[0], im.size[1])
