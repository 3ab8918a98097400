"""2.5D context: neighbour labels and the previous slice image per slice, at the edges too; the condition tensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import write_nifti
from monai.data import MetaTensor

from monai_siamese.data import SliceDataset, fit_slice_transform, iter_slices, pair_load_transform
from monai_siamese.data.context import NULL_IMAGE
from monai_siamese.transforms import (
    NULL_CONDITION,
    ContextConditiond,
    EncodeMaskd,
    context_channels,
    encode_mask,
    mask_channels,
)

N_Z = 6


def _volume():
    """Slice ``z`` of the label holds class ``z % 4`` in a square (so every slice is identifiable); the image's slice
    ``z`` is the constant ``z / 10``."""
    lab = torch.zeros(1, 8, 7, N_Z, dtype=torch.int64)
    for z in range(N_Z):
        lab[0, 2:6, 2:6, z] = z % 4
        lab[0, 0, 0, z] = 1  # every slice has some foreground
    img = torch.arange(N_Z, dtype=torch.float32).reshape(1, 1, 1, N_Z).expand(1, 8, 7, N_Z) / 10
    return {"image": MetaTensor(img.clone()), "label": MetaTensor(lab)}


def test_context_at_the_edges_clamps_labels_and_flags_them():
    item = _volume()
    slices = {s["slice_index"]: s for s in iter_slices(item, axis=2, context_slices=2)}
    assert sorted(slices) == list(range(N_Z))
    for z, s in slices.items():
        ctx, valid = s["label_context"], s["context_valid"]
        assert ctx.shape == (4, 8, 7) and valid.shape == (4,)
        for c, off in enumerate([-2, -1, 1, 2]):
            src = min(max(z + off, 0), N_Z - 1)
            torch.testing.assert_close(ctx[c].as_tensor(), item["label"][0, :, :, src].as_tensor())
            assert bool(valid[c]) == (0 <= z + off < N_Z)
        prev = s["previous_image"]
        assert prev.shape == (1, 8, 7)
        if z == 0:
            assert not bool(s["previous_valid"]) and bool((prev == NULL_IMAGE).all())
        else:
            assert bool(s["previous_valid"])
            torch.testing.assert_close(prev.as_tensor(), torch.full((1, 8, 7), (z - 1) / 10))
    # context 0: nothing added (today's items)
    plain = next(iter(iter_slices(item, axis=2)))
    assert not {"label_context", "previous_image"} & set(plain)
    assert NULL_IMAGE == NULL_CONDITION


def test_neighbours_come_from_the_whole_volume_not_only_kept_slices():
    item = _volume()
    item["label"][0, 0, 0, 3] = 0
    item["label"][0, :, :, 3][item["label"][0, :, :, 3] > 0] = 0  # slice 3 empty: dropped by the filter
    kept = {s["slice_index"]: s for s in iter_slices(item, axis=2, context_slices=1)}
    assert 3 not in kept
    torch.testing.assert_close(kept[4]["label_context"][0].as_tensor(), item["label"][0, :, :, 3].as_tensor())
    torch.testing.assert_close(kept[4]["previous_image"].as_tensor(), item["image"][:, :, :, 3].as_tensor())


def test_2d_items_have_only_edge_context():
    item = {"image": MetaTensor(torch.rand(1, 8, 8)), "label": MetaTensor(torch.ones(1, 8, 8, dtype=torch.int64))}
    s = next(iter(iter_slices(item, context_slices=1)))
    assert s["label_context"].shape == (2, 8, 8) and not bool(s["context_valid"].any())
    assert not bool(s["previous_valid"]) and bool((s["previous_image"] == NULL_IMAGE).all())


def test_slice_dataset_fits_the_context_like_the_slice(tmp_path):
    lab = np.zeros((20, 12, N_Z), np.uint8)
    img = np.zeros((20, 12, N_Z), np.float32)
    for z in range(N_Z):
        lab[3 + z : 12 + z, 2:9, z] = 1 + z % 3
        img[:, :, z] = np.linspace(0, 1, 20)[:, None] * (z + 1)
    entry = {"image": write_nifti(tmp_path / "img.nii.gz", img), "label": write_nifti(tmp_path / "lab.nii.gz", lab)}
    ds = SliceDataset(
        [entry],
        load_transform=pair_load_transform(4, preset="minmax"),
        slice_transform=fit_slice_transform(16),
        context_slices=1,
        progress=False,
    )
    items = {int(it["slice_index"]): it for it in ds}
    assert sorted(items) == list(range(N_Z))
    for z, it in items.items():
        assert it["image"].shape == it["previous_image"].shape == (1, 16, 16)
        assert it["label_context"].shape == (2, 16, 16)
        if z > 0:  # the fitted previous image is exactly the previous item's fitted image
            torch.testing.assert_close(torch.as_tensor(it["previous_image"]), torch.as_tensor(items[z - 1]["image"]))
            torch.testing.assert_close(
                torch.as_tensor(it["label_context"][0]).long(), torch.as_tensor(items[z - 1]["label"][0]).long()
            )
        else:  # null everywhere, padding included
            assert bool((torch.as_tensor(it["previous_image"]) == NULL_IMAGE).all())
        if z < N_Z - 1:
            torch.testing.assert_close(
                torch.as_tensor(it["label_context"][1]).long(), torch.as_tensor(items[z + 1]["label"][0]).long()
            )


@pytest.mark.parametrize("encoding", ["onehot", "faithful"])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_condition_channels_and_layout(encoding, k):
    item = _volume()
    s = {x["slice_index"]: x for x in iter_slices(item, axis=2, context_slices=2)}[1]
    t = ContextConditiond("label", num_classes=4, context_slices=k, encoding=encoding)
    cond = t(s)["cond"]
    m = mask_channels(4, encoding)
    assert cond.shape[0] == context_channels(4, k, encoding) == t.channels
    assert cond.shape[0] == m * (1 + 2 * k) + (1 if k > 0 else 0)
    torch.testing.assert_close(cond[:m], encode_mask(s["label"].as_tensor(), 4, encoding))
    if k == 0:  # today's condition, exactly
        torch.testing.assert_close(cond, EncodeMaskd("label", 4, encoding)(s)["cond"])
        return
    # neighbour -1 of slice 1 is slice 0; with k = 2 neighbour -2 is clamped to slice 0 as well
    first_nb = encode_mask(item["label"][:, :, :, max(1 - k, 0)].as_tensor(), 4, encoding)
    torch.testing.assert_close(cond[m : 2 * m], first_nb)
    torch.testing.assert_close(cond[-1:], torch.full((1, 8, 7), 0.0))  # previous image of slice 1 = slice 0 = 0.0


def test_edge_null_dropout_noise_and_ablation():
    item = _volume()
    s0 = {x["slice_index"]: x for x in iter_slices(item, axis=2, context_slices=1)}[0]
    cond = ContextConditiond("label", num_classes=4, context_slices=1, edge="null")(s0)["cond"]
    assert bool((cond[4:8] == NULL_CONDITION).all())  # the neighbour above slice 0 is outside: null
    assert bool((cond[-1] == NULL_CONDITION).all())  # no previous slice
    clamp = ContextConditiond("label", num_classes=4, context_slices=1)(s0)["cond"]
    torch.testing.assert_close(clamp[4:8], clamp[:4])  # clamped: the edge slice itself

    s2 = {x["slice_index"]: x for x in iter_slices(item, axis=2, context_slices=1)}[2]
    dropped = ContextConditiond("label", num_classes=4, context_slices=1, previous_dropout_prob=1.0)(s2)["cond"]
    assert bool((dropped[-1] == NULL_CONDITION).all())
    t = ContextConditiond("label", num_classes=4, context_slices=1, previous_noise_std=0.1)
    t.set_random_state(3)
    noisy = t(s2)["cond"][-1]
    assert 0.05 < float((noisy - 0.1).std()) < 0.2
    t.set_random_state(3)
    torch.testing.assert_close(t(s2)["cond"][-1], noisy)  # seeded: reproducible

    # ablation: one drop pattern for the mask and all neighbours
    abl = ContextConditiond("label", num_classes=4, context_slices=1, ablation_prob=1.0)(s2)["cond"]
    full = ContextConditiond("label", num_classes=4, context_slices=1)(s2)["cond"]
    torch.testing.assert_close(abl[-1], full[-1])  # the previous image is not a mask
    for g in range(3):
        assert bool((abl[g * 4 + 1 : g * 4 + 4] == 0).all())  # every foreground class dropped in every group
        torch.testing.assert_close(abl[g * 4], full[g * 4])  # background never dropped


def test_fewer_neighbours_than_stored_and_missing_context_errors():
    item = _volume()
    s = {x["slice_index"]: x for x in iter_slices(item, axis=2, context_slices=2)}[3]
    c1 = ContextConditiond("label", num_classes=4, context_slices=1)(s)["cond"]
    s1 = {x["slice_index"]: x for x in iter_slices(item, axis=2, context_slices=1)}[3]
    torch.testing.assert_close(c1, ContextConditiond("label", num_classes=4, context_slices=1)(s1)["cond"])
    with pytest.raises(ValueError, match="context_slices >= 2"):
        ContextConditiond("label", num_classes=4, context_slices=2)(s1)
    plain = next(iter(iter_slices(item, axis=2)))
    with pytest.raises(KeyError, match="previous_image"):
        ContextConditiond("label", num_classes=4, previous_image=True, missing_previous="error")(plain)
    # a mask-only item gets the null previous image, like the first slice of a volume
    cond = ContextConditiond("label", num_classes=4, previous_image=True)(plain)["cond"]
    assert cond.shape[0] == 5 and bool((cond[-1] == NULL_CONDITION).all())


def test_works_on_the_mni_demo_volume(demo_volume_dir):
    from monai_siamese.data import load_datalist

    entries = load_datalist(f"{demo_volume_dir}/datalist.json", "training")
    ds = SliceDataset(
        entries,
        load_transform=pair_load_transform(4, preset="mr"),
        slice_transform=fit_slice_transform(32),
        transform=ContextConditiond("label", num_classes=4, context_slices=1, previous_dropout_prob=0.2),
        context_slices=1,
        progress=False,
    )
    assert 120 < len(ds) <= 189
    z = [int(it["slice_index"]) for it in ds.data]
    assert z == sorted(z) and z == list(range(z[0], z[-1] + 1))  # contiguous brain slab
    item = ds[len(ds) // 2]
    assert item["cond"].shape == (context_channels(4, 1), 32, 32)
    assert -1.0 <= float(item["cond"][-1].min()) and float(item["cond"][-1].max()) <= 1.0
