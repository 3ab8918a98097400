"""VolumeGenerator: geometry kept exactly, HU units, determinism, resume, shared noise, the previous slice, errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import tiny_denoiser, write_nifti

from monai_siamese.data import LabelValueError, SliceDataset, fit_slice_transform, pair_load_transform
from monai_siamese.data.volume import read_label_volume
from monai_siamese.inferers import ConditionalSampler, VolumeGenerator
from monai_siamese.transforms import NULL_CONDITION, context_channels

# oblique-free but permuted and flipped axes (file axes are not RAS), anisotropic spacing
AFFINE = np.array([[0.0, -1.2, 0.0, 30.0], [0.0, 0.0, 2.5, -50.0], [0.9, 0.0, 0.0, 12.0], [0, 0, 0, 1.0]])


def _label(path: Path, shape=(14, 11, 9), values=(1, 2, 3)) -> str:
    lab = np.zeros(shape, np.uint8)
    lab[2:12, 2:9, 1:8] = values[0]
    lab[4:10, 3:8, 2:7] = values[1]
    lab[6:8, 4:7, 3:6] = values[2]
    return write_nifti(path, lab, AFFINE)


def _generator(labels, out, mode="consistent", k=1, **kwargs) -> VolumeGenerator:
    prev = mode == "consistent"
    kw = dict(num_classes=4, spatial_size=16, preset="ct", device="cpu", progress=False, previews=False)
    kw.update(kwargs)
    return VolumeGenerator(
        tiny_denoiser(context_channels(4, k, previous_image=prev)).eval(),
        ConditionalSampler("ddim", num_inference_steps=2),
        labels,
        out,
        mode=mode,
        context_slices=k,
        **kw,
    )


def _written(out: Path) -> tuple[nib.Nifti1Image, nib.Nifti1Image, dict]:
    (entry,) = json.loads((out / "datalist.json").read_text())["training"]
    return nib.load(str(out / entry["image"])), nib.load(str(out / entry["label"])), entry


@pytest.mark.parametrize("mode,k", [("consistent", 1), ("independent", 0)])
def test_written_volume_has_the_label_grid_and_ct_units(tmp_path, mode, k):
    src = _label(tmp_path / "case.nii.gz")
    res = _generator([{"label": src}], tmp_path / "out", mode=mode, k=k, previews=True).run()
    assert res["written"] == 1
    img, lab, entry = _written(tmp_path / "out")
    ref = nib.load(src)
    assert img.shape == lab.shape == ref.shape
    np.testing.assert_array_equal(img.affine, ref.affine)
    np.testing.assert_array_equal(lab.affine, ref.affine)
    np.testing.assert_array_equal(np.asarray(lab.dataobj), np.asarray(ref.dataobj))
    data = img.get_fdata()
    assert -160.0 <= data.min() and data.max() <= 240.0 and data.std() > 1.0  # HU, the CT window
    assert entry["synthetic"] is True and entry["source_label"] == src and entry["mode"] == mode
    assert entry["method"] == "volume" and isinstance(entry["seed"], int) and entry["intensity_range"] == [-160, 240]
    assert (tmp_path / "out" / entry["preview"]).is_file()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["mode"] == mode and manifest["counts"]["pairs_total"] == 1


def test_same_seed_same_volume_and_resume(tmp_path):
    srcs = [_label(tmp_path / "a.nii.gz"), _label(tmp_path / "b.nii.gz", values=(2, 1, 3))]
    _generator(srcs, tmp_path / "o1", seed=5).run()
    _generator(srcs, tmp_path / "o2", seed=5).run()
    _generator(srcs[:1], tmp_path / "o3", seed=6).run()
    e1 = json.loads((tmp_path / "o1" / "datalist.json").read_text())["training"]
    assert len(e1) == 2
    vols = {o: [nib.load(str(tmp_path / o / e["image"])).get_fdata() for e in e1] for o in ("o1", "o2")}
    for a, b in zip(vols["o1"], vols["o2"]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(vols["o1"][0], nib.load(str(tmp_path / "o3" / e1[0]["image"])).get_fdata())
    # resume: a finished volume is skipped, a lost one is regenerated bit for bit
    (tmp_path / "o1" / "records" / f"{Path(e1[1]['image']).name[:-7]}.json").unlink()
    (tmp_path / "o1" / e1[1]["image"]).unlink()
    res = _generator(srcs, tmp_path / "o1", seed=5).run()
    assert res["generated"] == 1 and res["written"] == 1
    np.testing.assert_array_equal(nib.load(str(tmp_path / "o1" / e1[1]["image"])).get_fdata(), vols["o2"][1])


def test_label_errors_stop_before_sampling_and_name_the_file(tmp_path):
    good = _label(tmp_path / "good.nii.gz")
    flat = write_nifti(tmp_path / "flat.nii.gz", np.ones((12, 10), np.uint8))
    single = write_nifti(tmp_path / "single.nii.gz", np.ones((12, 10, 1), np.uint8))
    unknown = _label(tmp_path / "unknown.nii.gz", values=(1, 2, 7))
    for bad, what in [(flat, "expected a 3D label volume"), (single, "expected a 3D label volume"), (unknown, "7")]:
        gen = _generator([good, bad], tmp_path / f"out_{Path(bad).name}")
        with pytest.raises(LabelValueError) as err:
            gen.run()
        msg = str(err.value)
        assert bad in msg and what in msg and "\n" not in msg
        assert not list((tmp_path / f"out_{Path(bad).name}" / "images").iterdir())  # nothing sampled


def test_condition_channels_must_match_the_model(tmp_path):
    gen = _generator([_label(tmp_path / "a.nii.gz")], tmp_path / "out", mode="consistent", k=1)
    gen.context_slices = 2
    with pytest.raises(ValueError, match="condition channels"):
        gen.run()


def test_consistent_mode_conditions_on_the_previous_generated_slice(tmp_path):
    gen = _generator([_label(tmp_path / "a.nii.gz")], tmp_path / "out", mode="consistent", k=1)
    conds, outs = [], []
    sampler = gen.sampler

    def recording(den, cond, noise, **kw):
        conds.append(cond.clone())
        x = ConditionalSampler.__call__(sampler, den, cond, noise, **kw)
        outs.append(x.clone())
        return x

    gen.sampler = type("S", (), {"__call__": staticmethod(recording), "num_inference_steps": 2})()
    vol = read_label_volume(tmp_path / "a.nii.gz", 4)
    gen.generate(vol, volume_seed=1)
    assert len(conds) == vol.data.shape[2]
    assert bool((conds[0][:, -1] == NULL_CONDITION).all())  # first slice: no previous slice
    for i in range(1, len(conds)):
        torch.testing.assert_close(conds[i][:, -1:], outs[i - 1])


def test_shared_noise_gives_identical_slices_for_identical_masks(tmp_path):
    lab = np.zeros((12, 10, 6), np.uint8)
    lab[3:9, 2:8, :] = 2  # every slice has the same mask
    src = write_nifti(tmp_path / "tube.nii.gz", lab)
    vol = read_label_volume(src, 4)
    shared = _generator([src], tmp_path / "o1", mode="independent", k=0, noise="shared").generate(vol, 3)
    per = _generator([src], tmp_path / "o2", mode="independent", k=0, noise="per_slice").generate(vol, 3)
    for z in range(1, 6):
        torch.testing.assert_close(shared[..., z], shared[..., 0])
    assert not torch.allclose(per[..., 1], per[..., 0])


def test_generation_fits_slices_as_training_did(tmp_path):
    # non-square slices with a non-RAS file: the generator's fitted label slices equal the training dataset's
    src = _label(tmp_path / "a.nii.gz", shape=(18, 7, 9))
    gen = _generator([src], tmp_path / "out", mode="independent", k=0)
    vol = read_label_volume(src, 4)
    fitted = gen._fit_labels(torch.from_numpy(vol.data).movedim(2, 0))
    ds = SliceDataset(
        [{"label": src}],
        pair_load_transform(4, preset="ct"),
        slice_transform=fit_slice_transform(16),
        min_foreground=0,
        progress=False,
    )
    assert len(ds) == vol.data.shape[2] == fitted.shape[0]
    for it in ds:
        torch.testing.assert_close(torch.as_tensor(it["label"][0]).long(), fitted[int(it["slice_index"])])
    # and undoing the fit returns a smooth image to its own grid
    h, w = vol.data.shape[:2]
    ramp = torch.linspace(-1, 1, h)[:, None].expand(h, w)[None, None].clone()
    there = gen.fit({"image": ramp[0]})["image"][None]
    back = gen._unfit(torch.as_tensor(there), h, w)
    assert back.shape == (1, 1, h, w)
    assert float((back - ramp).abs()[..., 2:-2, :].max()) < 0.1


def test_a_datalist_of_label_volumes_gives_a_3d_synthetic_datalist(tmp_path):
    from monai_siamese.data import load_label_entries, write_datalist

    _label(tmp_path / "labels" / "a.nii.gz")
    _label(tmp_path / "labels" / "b.nii.gz", values=(3, 2, 1))
    datalist = write_datalist(
        tmp_path / "masks.json", {"masks": [{"label": "labels/a.nii.gz"}, {"label": "labels/b.nii.gz"}]}
    )
    entries = load_label_entries(datalist, "masks")
    assert all(Path(e["label"]).is_absolute() and Path(e["label"]).is_file() for e in entries)
    res = _generator(entries, tmp_path / "out", mode="independent", k=0, samples_per_label=2).run()
    assert res["written"] == 4
    out = json.loads(Path(res["datalist"]).read_text())["training"]
    assert len({e["image"] for e in out}) == 4 and len({e["seed"] for e in out}) == 4
    assert sorted({e["source_label"] for e in out}) == sorted(e["label"] for e in entries)
    for e in out:
        assert nib.load(str(tmp_path / "out" / e["image"])).shape == (14, 11, 9)
