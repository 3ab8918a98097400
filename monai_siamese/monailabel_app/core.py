"""MONAI Label integration, the part that does not import ``monailabel``: run our bundles on datastore files and put
2D results back into the source image's geometry.

Used by the MONAI Label tasks in :mod:`monai_siamese.monailabel_app.tasks` (which need the ``monailabel`` package,
installed in its own venv by ``scripts/setup_monailabel_env.sh``); testable in any venv with this package.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy.ndimage import map_coordinates

from monai_siamese.bundles import GENERATORS, run_bundle
from monai_siamese.data.datalist import write_datalist
from monai_siamese.data.io import save_nifti
from monai_siamese.monailabel_app.params import (
    FILL_CHOICES,
    PAIRS_PARAMS,
    SYNTHESIS_PARAMS,
    RequestError,
    check_choice,
    check_device,
    check_inside,
    check_params,
)
from monai_siamese.monailabel_app.params import request_overrides as request_overrides_of
from monai_siamese.monailabel_app.params import resolve_output_dir

__all__ = [
    "GENERATOR_BUNDLES",
    "write_request_datalist",
    "paste_slices",
    "masked_label",
    "synthesize",
    "segment",
    "generate_pairs",
    "check_outside",
    "check_synthesis_request",
    "check_pairs_request",
    "check_request_paths",
    "RequestError",
]

logger = logging.getLogger(__name__)

#: generator bundles a synthesis request can name as ``method``
GENERATOR_BUNDLES = GENERATORS


def write_request_datalist(
    path: str | os.PathLike, training: Sequence[Mapping], validation: Sequence[Mapping] = (), **extra: Any
) -> str:
    """Write a datalist of absolute paths (``training``, ``validation`` and ``test`` = training) for a bundle run."""
    splits = {"training": [dict(e) for e in training], "test": [dict(e) for e in training]}
    if validation:
        splits["validation"] = [dict(e) for e in validation]
    return write_datalist(path, splits, relative=False, extra=extra)


def _affine4(affine: Any) -> np.ndarray:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape == (3, 3):  # a 2D affine: insert the through-plane axis
        out = np.eye(4)
        out[:2, :2], out[:2, 3] = a[:2, :2], a[:2, 2]
        return out
    return a


def paste_slices(
    reference: str | os.PathLike,
    slices: Sequence[tuple[np.ndarray, np.ndarray]],
    fill: float | np.ndarray = 0.0,
    order: int = 1,
    dtype: Any = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample 2D slices (each ``(array (H, W), 4x4 affine)`` as written by our bundles, i.e. at the model's size
    with the affine of the resized/padded slice) onto the voxel grid of the ``reference`` NIfTI file.

    A reference voxel takes its value from the slice whose through-plane coordinate (the third column of the slice
    affine is the volume's step between slices) is within half a step of it; in-plane it is interpolated
    (``order`` 1 linear for images, 0 nearest for labels) in world coordinates, so any reorientation, resize or
    padding done by the bundle is undone exactly. Voxels of slices not given keep ``fill`` (a scalar or an array
    of the reference's shape).

    Returns:
        the array in the reference's shape and the reference's affine.
    """
    ref = nib.load(str(reference))
    shape = tuple(int(s) for s in ref.shape[:3])
    ref_aff = np.asarray(ref.affine, dtype=np.float64)
    out = np.empty(shape, dtype=dtype)
    out[...] = fill
    if not slices:
        return out, ref_aff
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"), -1)
    grid = grid.reshape(-1, len(shape))
    if len(shape) == 2:
        grid = np.concatenate([grid, np.zeros((grid.shape[0], 1))], 1)
    world = grid @ ref_aff[:3, :3].T + ref_aff[:3, 3]
    flat = out.reshape(-1)
    assigned = np.zeros(flat.shape[0], dtype=bool)
    for array, affine in slices:
        inv = np.linalg.inv(_affine4(affine))
        uvw = world @ inv[:3, :3].T + inv[:3, 3]
        sel = (np.abs(uvw[:, 2]) < 0.5) & ~assigned
        if not sel.any():
            continue
        arr = np.asarray(array, dtype=np.float64)
        arr = arr.reshape(arr.shape[:2])
        vals = map_coordinates(arr, [uvw[sel, 0], uvw[sel, 1]], order=order, mode="nearest")
        flat[sel] = vals.astype(dtype)
        assigned |= sel
    return flat.reshape(shape), ref_aff


def masked_label(label: str | os.PathLike, slice_index: int, axis: int, out: str | os.PathLike) -> str:
    """Copy ``label`` keeping only slice ``slice_index`` along ``axis`` of its RAS orientation (how the bundles
    slice volumes), so a bundle run synthesises that slice only. The copy keeps the file's own orientation."""
    img = nib.load(str(label))
    data = np.asarray(img.dataobj)
    if data.ndim < 3:
        raise ValueError(f"slice_index is for 3D volumes; {label} has shape {data.shape}")
    ornt = nib.orientations.io_orientation(img.affine)  # file axis i -> RAS axis ornt[i, 0], flipped if -1
    file_axis = int(np.where(ornt[:, 0] == axis)[0][0])
    n = data.shape[file_axis]
    if not 0 <= slice_index < n:
        raise ValueError(f"slice_index {slice_index} outside 0..{n - 1} (axis {axis} of {label})")
    index = slice_index if ornt[file_axis, 1] > 0 else n - 1 - slice_index
    keep = np.zeros_like(data)
    idx = [slice(None)] * data.ndim
    idx[file_axis] = index
    keep[tuple(idx)] = data[tuple(idx)]
    return save_nifti(keep, img.affine, out)


def check_outside(folder: str | os.PathLike, forbidden: str | os.PathLike | None) -> None:
    """Raise when ``folder`` lies inside ``forbidden`` (the annotators' datastore): generated pairs never go there."""
    if forbidden is None:
        return
    f, d = Path(folder).resolve(), Path(forbidden).resolve()
    if f == d or d in f.parents:
        raise RequestError(f"output folder {f} is inside the datastore {d}: choose a folder outside it")


def _is_upload(path: str) -> bool:
    """A file MONAI Label saved from this request's upload: ``tempfile.NamedTemporaryFile(suffix=...).name``, i.e.
    ``tmp<random><suffix>`` directly in the temporary folder, a regular file (not a symlink)."""
    p = Path(path)
    return (
        p.name.startswith("tmp")
        and p.parent.resolve() == Path(tempfile.gettempdir()).resolve()
        and p.is_file()
        and not p.is_symlink()
    )


def check_request_paths(request: Mapping[str, Any], roots: Sequence[str | os.PathLike | None]) -> None:
    """Server files named by an infer request stay inside the server's folders.

    MONAI Label lets a request's ``params`` name ``image`` and ``label`` as server paths (an uploaded file is saved
    as ``<tmp>/tmp<random><suffix>``). A ``label`` sent with the request, and an ``image`` that is an existing path
    (instead of a datastore id), must lie inside one of ``roots`` (the datastore, MONAI Label's sessions folder) or
    be such an upload; anything else raises :class:`RequestError` naming the parameter and the path.
    """
    roots = [r for r in roots if r]
    for key in ("label", "image"):
        value = request.get(key)
        if not value or (key == "image" and not (isinstance(value, str) and os.path.exists(value))):
            continue  # an image id: the datastore resolves it
        if not isinstance(value, str):
            raise RequestError(f"{key}: expected a file, got {type(value).__name__}")
        if not _is_upload(value):
            check_inside(value, roots, key)


def check_synthesis_request(request: Mapping[str, Any], methods: Sequence[str]) -> dict[str, Any]:
    """Validate the parameters of a ``/infer/synthesis`` request before anything runs; return the keyword arguments
    of :func:`synthesize` they give (``method``, ``samples``, ``seed``, ``slice_index``, ``fill``,
    ``request_overrides``, and ``device`` when sent).

    ``method`` must be one of ``methods`` (the served generator bundles); the numbers are integers in range, ``fill``
    one of :data:`~monai_siamese.monailabel_app.params.FILL_CHOICES`, ``overrides`` only keys of
    :data:`~monai_siamese.monailabel_app.params.SAMPLING_OVERRIDES` with plain JSON values.

    Raises:
        RequestError: naming the parameter (and the override key) refused.
    """
    out: dict[str, Any] = {"method": check_choice("method", request.get("method") or list(methods)[0], methods)}
    p = check_params(request, SYNTHESIS_PARAMS)
    sl = p.get("slice_index", -1)
    out.update(
        samples=p.get("samples", 1),
        seed=p.get("seed", 0),
        slice_index=None if sl < 0 else sl,
        fill=p.get("fill", "min"),
        request_overrides=request_overrides_of(request.get("overrides"), "synthesis"),
    )
    if request.get("device"):
        out["device"] = check_device(request["device"])
    return out


def check_pairs_request(request: Mapping[str, Any], generators: Sequence[str]) -> dict[str, Any]:
    """Validate the parameters of a ``/scoring/generate_pairs`` request before anything runs: ``generator`` one of
    ``generators``, ``num_pairs`` and ``seed`` integers in range, ``overrides`` as for synthesis, ``device``.
    ``output_dir`` is resolved by :func:`generate_pairs` inside the server's output root.

    Raises:
        RequestError: naming the parameter (and the override key) refused.
    """
    out: dict[str, Any] = {
        "generator": check_choice("generator", request.get("generator") or list(generators)[0], generators)
    }
    p = check_params(request, PAIRS_PARAMS)
    out.update(
        num_pairs=p.get("num_pairs", 8),
        seed=p.get("seed", 0),
        request_overrides=request_overrides_of(request.get("overrides"), "synthesis"),
    )
    if request.get("device"):
        out["device"] = check_device(request["device"])
    return out


def _run(bundle: Path, configs: Sequence[str], workflow_type: str, overrides: Mapping[str, Any]) -> Any:
    return run_bundle(bundle, list(configs), "run", workflow_type, overrides)


def _read_pairs(folder: Path) -> list[dict]:
    return json.loads((folder / "datalist.json").read_text())["training"]


def synthesize(
    bundle: str | os.PathLike,
    image: str,
    label: str,
    out_file: str | os.PathLike,
    samples: int = 1,
    seed: int = 0,
    slice_index: int | None = None,
    configs: Sequence[str] = ("inference.json",),
    overrides: Mapping[str, Any] | None = None,
    fill: str = "min",
    work_dir: str | os.PathLike | None = None,
    keep_work: bool = False,
    request_overrides: Mapping[str, Any] | str | None = None,
) -> dict[str, Any]:
    """Synthesise an image for ``label`` with a generator bundle and write it in ``image``'s geometry.

    The bundle's inference workflow runs on a one-entry datalist (so slicing, foreground filter, intensity preset,
    sampling and writing are the bundle's own); its 2D pairs are resampled back onto the source grid
    (:func:`paste_slices`). A 2D source gives one slice. A 3D source, with a bundle that has a ``volume`` run
    (:class:`~monai_siamese.inferers.VolumeGenerator`), becomes one whole volume on the label's grid, slices sampled
    in order (consistent with their neighbours for a 2.5D model, see ``context.json``); with other bundles, or with
    ``slice_index``, it is cut along the bundle's ``slice_axis`` and every slice with at least ``min_foreground``
    foreground pixels is synthesised (or only ``slice_index``) and pasted back.

    Args:
        bundle: generator bundle folder.
        image: source image (NIfTI), the geometry of the output.
        label: its label (the datastore's, or one the annotator edited), same geometry.
        out_file: output NIfTI. With ``samples > 1`` the samples are stacked on a trailing axis
            (``(H, W, 1, S)`` for 2D, ``(X, Y, Z, S)`` for 3D); the affine is the source's.
        samples: samples per label.
        seed: base seed (sample ``k`` of slice ``m`` uses :func:`~monai_siamese.inferers.sample_seed`).
        slice_index: synthesise only this slice (index along ``slice_axis`` of the RAS-oriented volume).
        configs: bundle config files (``inference.json`` plus overrides such as ``demo.json``).
        overrides: the server's own config overrides (network size, ``ckpt_dir``...: trusted, not checked).
            MedDiff-FT runs with ``mask_source="regime"`` (inpaint for this label, not a new mask) and no quality
            filter unless overridden.
        fill: value of voxels not synthesised: ``min`` (the source's minimum), ``zero`` or ``source`` (the real
            image there).
        work_dir: parent of the temporary run folder.
        keep_work: keep the temporary folder (debugging).
        request_overrides: overrides sent with a request (a JSON object or its text), applied last. Only keys of
            :data:`~monai_siamese.monailabel_app.params.SAMPLING_OVERRIDES` with plain JSON values: anything else
            raises :class:`RequestError` before anything is read or run.
    """
    req = request_overrides_of(request_overrides, "synthesis")
    samples = SYNTHESIS_PARAMS["samples"].check("samples", samples)
    seed = SYNTHESIS_PARAMS["seed"].check("seed", seed)
    if slice_index is not None:
        slice_index = SYNTHESIS_PARAMS["slice_index"].check("slice_index", slice_index)
    if fill not in FILL_CHOICES:
        raise RequestError(f"fill must be one of {list(FILL_CHOICES)}, got {fill!r}")
    bundle = Path(bundle)
    work = Path(tempfile.mkdtemp(prefix="synth_", dir=work_dir))
    try:
        # MedDiff-FT: inpaint for this label (not a generated mask), no filter that could drop the only sample
        over = {"mask_source": "regime", "use_quality_filter": False, **dict(overrides or {}), **req}
        if slice_index is None and nib.load(str(image)).ndim >= 3 and _has_run(bundle, configs, "volume"):
            return _synthesize_volume(bundle, image, label, out_file, samples, seed, configs, over, work)
        if slice_index is not None:
            axis = int(over.get("slice_axis", 2))
            label = masked_label(label, int(slice_index), axis, work / "label_slice.nii.gz")
        datalist = write_request_datalist(work / "datalist.json", [{"image": str(image), "label": str(label)}])
        pairs_dir = work / "pairs"
        over.update(
            {
                "datalist": datalist,
                "dataset_dir": str(work),
                "output_dir": str(pairs_dir),
                "mask_split": "training",
                "samples_per_mask": int(samples),
                "num_pairs": None,
                "seed": int(seed),
            }
        )
        _run(bundle, configs, "infer", over)
        entries = _read_pairs(pairs_dir)
        src = nib.load(str(image))
        src_data = np.asarray(src.dataobj, dtype=np.float32)
        if fill == "source":
            fill_value: Any = src_data.reshape(src_data.shape[:3]) if src_data.ndim > 3 else src_data
        elif fill == "zero":
            fill_value = 0.0
        else:
            fill_value = float(src_data.min())
        volumes, slices_used = [], set()
        for k in range(int(samples)):
            parts = []
            for e in entries:
                if int(e.get("sample_index", 0)) != k:
                    continue
                gen = nib.load(str(pairs_dir / e["image"]))
                parts.append((np.asarray(gen.dataobj, dtype=np.float32), gen.affine))
                slices_used.add(int(e.get("slice_index", -1)))
            vol, affine = paste_slices(image, parts, fill=fill_value, order=1)
            volumes.append(vol)
        data = (
            volumes[0]
            if len(volumes) == 1
            else np.stack([v.reshape(*v.shape[:3], *([1] * (3 - v.ndim))) for v in volumes], -1)
        )
        save_nifti(data, affine, out_file)
        return {
            "method": bundle.name,
            "samples": int(samples),
            "seed": int(seed),
            "slices": sorted(slices_used),
            "pairs": len(entries),
            "fill": fill,
            "shape": list(data.shape),
            "seeds": [e.get("seed") for e in entries],
        }
    finally:
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)


def _has_run(bundle: Path, configs: Sequence[str], run_id: str) -> bool:
    from monai_siamese.bundles import read_config

    return run_id in read_config(bundle, configs).config


def _synthesize_volume(
    bundle: Path, image: str, label: str, out_file: str | os.PathLike, samples: int, seed: int,
    configs: Sequence[str], over: dict[str, Any], work: Path,
) -> dict[str, Any]:  # fmt: skip
    """A 3D request through the bundle's ``volume`` run: the synthetic volume on exactly the label's grid."""
    datalist = write_datalist(work / "volumes.json", {"masks": [{"label": str(label), "image": str(image)}]}, False)
    out_dir = work / "volumes"
    over = {**over, "volume_datalist": datalist, "volume_split": "masks", "output_dir": str(out_dir),
            "samples_per_volume": int(samples), "volume_mask_source": "regime", "seed": int(seed)}  # fmt: skip
    run_bundle(bundle, list(configs), "volume", "infer", over)
    entries = _read_pairs(out_dir)
    src = nib.load(str(image))
    vols = [np.asarray(nib.load(str(out_dir / e["image"])).dataobj, dtype=np.float32) for e in entries]
    data = vols[0] if len(vols) == 1 else np.stack(vols, -1)
    save_nifti(data, src.affine, out_file)
    return {"method": bundle.name, "samples": int(samples), "seed": int(seed), "volume": True, "pairs": len(entries),
            "shape": list(data.shape), "seeds": [e.get("seed") for e in entries]}  # fmt: skip


def segment(
    bundle: str | os.PathLike,
    image: str,
    out_file: str | os.PathLike,
    configs: Sequence[str] = ("inference.json",),
    overrides: Mapping[str, Any] | None = None,
    work_dir: str | os.PathLike | None = None,
    request_overrides: Mapping[str, Any] | str | None = None,
) -> dict[str, Any]:
    """Segment ``image`` with the segmentation bundle's inference workflow (every slice) and write the label in the
    image's geometry (uint8 NIfTI).

    ``overrides`` are the server's own (trusted); ``request_overrides`` those of a request, only keys of
    :data:`~monai_siamese.monailabel_app.params.SEGMENTATION_OVERRIDES` (checked before anything runs).
    """
    req = request_overrides_of(request_overrides, "segmentation")
    bundle = Path(bundle)
    work = Path(tempfile.mkdtemp(prefix="seg_", dir=work_dir))
    try:
        over = {**dict(overrides or {}), **req}
        datalist = write_request_datalist(work / "datalist.json", [{"image": str(image)}])
        over.update(
            {
                "datalist": datalist,
                "dataset_dir": str(work),
                "output_dir": str(work / "pred"),
                "predict_split": "test",
                "min_foreground": 0,
            }
        )
        _run(bundle, configs, "infer", over)
        files = sorted((work / "pred").glob("*.nii*"))
        parts = []
        for f in files:
            img = nib.load(str(f))
            parts.append((np.asarray(img.dataobj), img.affine))
        data, affine = paste_slices(image, parts, fill=0, order=0, dtype=np.uint8)
        save_nifti(data, affine, out_file)
        return {"slices": len(files), "classes": sorted(int(c) for c in np.unique(data))}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def generate_pairs(
    bundle: str | os.PathLike,
    entries: Sequence[Mapping],
    output_dir: str | os.PathLike | None,
    num_pairs: int,
    seed: int = 0,
    configs: Sequence[str] = ("inference.json",),
    overrides: Mapping[str, Any] | None = None,
    datastore_dir: str | os.PathLike | None = None,
    output_root: str | os.PathLike | None = None,
    request_overrides: Mapping[str, Any] | str | None = None,
) -> dict[str, Any]:
    """Write ``num_pairs`` synthetic pairs from the masks of ``entries`` (the datastore's labelled images) into
    ``output_dir`` with the bundle's :class:`~monai_siamese.data.SyntheticPairWriter` (``images/``, ``labels/``,
    ``previews/``, ``datalist.json``, ``manifest.json``), ready for the segmentation bundle's
    ``--synthetic_datalist``. ``output_dir`` must lie outside ``datastore_dir``; reruns resume.

    Args:
        output_root: the server's output folder. When given, ``output_dir`` (a request's; empty: the bundle's name)
            is resolved inside it (relative paths are relative to it) and refused when it resolves outside
            (:func:`~monai_siamese.monailabel_app.params.resolve_output_dir`).
        overrides: the server's own config overrides (trusted).
        request_overrides: overrides sent with a request: keys of
            :data:`~monai_siamese.monailabel_app.params.SAMPLING_OVERRIDES` only, plain JSON values.

    Raises:
        RequestError: a refused request value or output folder, before anything is written or run.
    """
    req = request_overrides_of(request_overrides, "synthesis")
    num_pairs = PAIRS_PARAMS["num_pairs"].check("num_pairs", num_pairs)
    seed = PAIRS_PARAMS["seed"].check("seed", seed)
    if output_root is not None:
        out = resolve_output_dir(None if output_dir is None else str(output_dir), output_root, Path(bundle).name)
    elif output_dir is None:
        raise ValueError("output_dir is required without output_root")
    else:
        out = Path(output_dir).resolve()
    check_outside(out, datastore_dir)
    if not entries:
        raise RequestError("no labelled image in the datastore: label some images first")
    out.mkdir(parents=True, exist_ok=True)
    # the request's datalist lives in a temporary folder: nothing is written outside ``out``
    run_dir = Path(tempfile.mkdtemp(prefix="pairs_request_"))
    try:
        datalist = write_request_datalist(run_dir / "datalist.json", entries)
        over = {**dict(overrides or {}), **req}
        per_mask = max(1, -(-int(num_pairs) // len(entries)))
        over.update(
            {
                "datalist": datalist,
                "dataset_dir": str(run_dir),
                "output_dir": str(out),
                "mask_split": "training",
                "samples_per_mask": per_mask,
                "num_pairs": int(num_pairs),
                "seed": int(seed),
            }
        )
        _run(Path(bundle), configs, "infer", over)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    pairs = _read_pairs(out)
    return {
        "method": Path(bundle).name,
        "output_dir": str(out),
        "datalist": str(out / "datalist.json"),
        "manifest": str(out / "manifest.json"),
        "pairs": len(pairs),
    }
