"""write_mask_datalist: NIfTI with the source geometry, a datalist the data layer loads, reruns and resumes that
reproduce the files, errors that name the source and the regime and leave nothing; the figure helper."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from helpers import write_nifti
from PIL import Image

from monai_siamese.data import SliceDataset, load_datalist, pair_load_transform, write_datalist
from monai_siamese.masks import (
    MaskSourceError,
    context_mask_source,
    load_regime_masks,
    mask_source_figure,
    write_mask_datalist,
)
from monai_siamese.masks import writer as mask_writer


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.nii.gz"))}


def test_written_datalist_loads_and_keeps_geometry(regime_datalist, tmp_path):
    res = write_mask_datalist("augmented:0.5,interpolated:0.5", regime_datalist, tmp_path / "m", 6, seed=3)
    assert not res.reused and res.split == "training"
    counts = json.loads(Path(res.manifest).read_text())["counts"]
    assert counts["requested"] == 6 and counts["written"] + counts["dropped"] == 6
    assert set(counts["by_source"]) == {"augmented", "interpolated"}
    entries = load_datalist(res.datalist, "training")
    assert len(entries) == counts["written"] >= 4
    regime = {e["label"]: e for e in load_datalist(regime_datalist, "training")}
    for e in entries:
        assert e["mask_source"] in ("augmented", "interpolated") and e["seed"] == 3
        assert e["source_mask"] in regime and e["source_masks"][0] == e["source_mask"]
        assert Path(e["label"]).is_file() and Path(e["image"]).is_file()
        written = nib.load(e["label"])
        np.testing.assert_allclose(written.affine, nib.load(e["source_mask"]).affine)
        np.testing.assert_allclose(nib.load(e["image"]).affine, written.affine)
        if e["mask_source"] == "interpolated":
            assert len(e["source_masks"]) == 2 and "lambda" in e["mask_params"]
            assert e["canvas_label"] == e["source_mask"]
        else:
            assert "rotate_degrees" in e["mask_params"] and e["slice_index"] == regime[e["source_mask"]]["slice_index"]
            assert "canvas_label" not in e  # the canvas moved with the mask
    ds = SliceDataset(entries, pair_load_transform(4), progress=False)
    assert len(ds) == len(entries)
    assert ds[0]["image"].shape == ds[0]["label"].shape == (1, 128, 128)
    assert int(ds[0]["label"].max()) <= 3


def test_rerun_is_unchanged_and_an_interrupted_run_resumes(regime_datalist, tmp_path, monkeypatch):
    first = write_mask_datalist("augmented", regime_datalist, tmp_path / "a", 4, seed=1)
    before = _files(tmp_path / "a")
    again = write_mask_datalist("augmented", regime_datalist, tmp_path / "a", 4, seed=1)
    assert again.reused and again.counts == first.counts and _files(tmp_path / "a") == before

    # interrupt a run after two masks: the partial folder holds them, the final folder does not exist
    real_draw = mask_writer.build_mask_source

    def failing(*args, **kwargs):
        src = real_draw(*args, **kwargs)
        draw = src.draw

        def draw_or_fail(i, seed=0):
            if i == 2:
                raise KeyboardInterrupt
            return draw(i, seed)

        src.draw = draw_or_fail
        return src

    monkeypatch.setattr(mask_writer, "build_mask_source", failing)
    with pytest.raises(KeyboardInterrupt):
        write_mask_datalist("augmented", regime_datalist, tmp_path / "b", 4, seed=1)
    assert not (tmp_path / "b").exists() and len(list((tmp_path / ".b.partial" / "records").iterdir())) == 2
    monkeypatch.setattr(mask_writer, "build_mask_source", real_draw)
    write_mask_datalist("augmented", regime_datalist, tmp_path / "b", 4, seed=1)
    assert not (tmp_path / ".b.partial").exists()
    assert _files(tmp_path / "b") == before

    with pytest.raises(FileExistsError, match="overwrite"):
        write_mask_datalist("augmented", regime_datalist, tmp_path / "a", 4, seed=2)
    res = write_mask_datalist("regime", regime_datalist, tmp_path / "a", 4, seed=2, overwrite=True)
    assert {e["mask_source"] for e in load_datalist(res.datalist)} == {"regime"}


def test_no_usable_mask_is_an_error_that_writes_nothing(regime_datalist, tmp_path):
    one = write_datalist(
        tmp_path / "one.json",
        {"training": load_datalist(regime_datalist)[:1]},
        relative=False,
        extra={"num_classes": 4},
    )
    with pytest.raises(MaskSourceError, match=r"'interpolated'.*one\.json.*at least 2") as err:
        write_mask_datalist("interpolated", one, tmp_path / "i", 4)
    assert err.value.source == "interpolated" and err.value.regime == one
    with pytest.raises(MaskSourceError, match=r"'augmented'.*regime\.json.*dropped.*cut_by_fov"):
        write_mask_datalist(
            "augmented",
            regime_datalist,
            tmp_path / "cut",
            2,
            options={"augmented": {"scale_range": (2.5, 2.5)}},
            max_tries=2,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.json"]
    with pytest.raises(ValueError, match="unknown mask source"):
        write_mask_datalist("augmneted", regime_datalist, tmp_path / "x", 2)
    with pytest.raises(ValueError, match=">= 0"):
        write_mask_datalist({"augmented": -1}, regime_datalist, tmp_path / "x", 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.json"]


def test_3d_label_volumes_are_augmented_with_their_geometry(make_nested, tmp_path):
    affine = np.diag([1.2, 1.2, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 30.0]
    entries = []
    for i, c in enumerate([(12, 12, 12), (11, 13, 12)]):
        lab = make_nested(24, c, (8, 5, 2.5)).astype(np.uint8)
        img = lab.astype(np.float32) * 100 + 20
        entries.append(
            {
                "image": write_nifti(tmp_path / f"img{i}.nii.gz", img, affine),
                "label": write_nifti(tmp_path / f"lab{i}.nii.gz", lab, affine),
            }
        )
    dl = write_datalist(tmp_path / "vols.json", {"training": entries}, extra={"num_classes": 4})
    assert load_regime_masks(dl, 4)[0].label.ndim == 3
    res = write_mask_datalist("augmented", dl, tmp_path / "out", 2, seed=0)
    assert res.counts["written"] == 2
    for e in load_datalist(res.datalist):
        lab = nib.load(e["label"])
        assert lab.shape == (24, 24, 24)
        np.testing.assert_allclose(lab.affine, affine)
        assert set(np.unique(np.asarray(lab.dataobj))) == {0, 1, 2, 3}
    # slicing the volumes instead gives 2D masks with the slice geometry
    sliced = load_regime_masks(dl, 4, slice_axis=2, min_foreground=50)
    assert all(m.label.ndim == 2 and m.slice_index >= 0 for m in sliced)


def test_context_hook_and_figure(regime_datalist, tmp_path):
    ctx = SimpleNamespace(regime_datalist=regime_datalist, num_real=4, seed=0, work_dir=str(tmp_path), num_classes=4)
    datalist, split = context_mask_source("interpolated", masks_per_real=1)(ctx)
    assert split == "training" and Path(datalist).parent.name == "masks_interpolated"
    assert 1 <= len(load_datalist(datalist)) <= 4
    png = mask_source_figure(regime_datalist, tmp_path / "fig.png", sources=("regime", "augmented"), num_examples=2)
    w, h = Image.open(png).size
    assert h == 2 * (128 + 2) + 2 and w == 3 * (128 + 2) + 2
