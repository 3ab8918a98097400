"""Per-item re-seeding of MONAI's own random transforms (``reseed`` without constructing generators) gives exactly
the random states and outputs of their ``set_random_state``."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from monai import transforms as mt
from monai.transforms import Randomizable

from monai_siamese.data.sampling import SAME_SEED_MEMBERS, reseed

KEYS = ["image", "label"]
CASES = {
    "RandFlipd": lambda: mt.RandFlipd(KEYS, prob=0.5, spatial_axis=0),
    "RandAxisFlipd": lambda: mt.RandAxisFlipd(KEYS, prob=0.5),
    "RandAffined": lambda: mt.RandAffined(
        KEYS, prob=0.5, rotate_range=0.3, scale_range=0.1, mode=["bilinear", "nearest"], padding_mode="border"
    ),
    "RandAffine": lambda: mt.RandAffine(prob=0.5, rotate_range=0.3, translate_range=2),
    "RandRotated": lambda: mt.RandRotated(KEYS, range_x=0.3, prob=0.5, mode=["bilinear", "nearest"]),
    "RandZoomd": lambda: mt.RandZoomd(KEYS, prob=0.5, min_zoom=0.8, max_zoom=1.2, mode=["bilinear", "nearest"]),
    "Rand2DElasticd": lambda: mt.Rand2DElasticd(KEYS, spacing=(4, 4), magnitude_range=(1, 2), prob=0.5),
    "Rand2DElastic": lambda: mt.Rand2DElastic(spacing=(4, 4), magnitude_range=(1, 2), prob=0.5),
    "RandGaussianNoised": lambda: mt.RandGaussianNoised("image", prob=0.5),
    "RandAdjustContrastd": lambda: mt.RandAdjustContrastd("image", prob=0.5),
    "RandGaussianSmoothd": lambda: mt.RandGaussianSmoothd("image", prob=0.5),
    "RandScaleIntensityd": lambda: mt.RandScaleIntensityd("image", factors=0.2, prob=0.5),
    "RandShiftIntensityd": lambda: mt.RandShiftIntensityd("image", offsets=0.2, prob=0.5),
    "RandBiasFieldd": lambda: mt.RandBiasFieldd("image", prob=0.5),
}


def _states(t, members):
    out = [t.R.get_state()]
    for name in members:
        m = getattr(t, name)
        out += _states(m, SAME_SEED_MEMBERS.get(type(m).__name__, ()))
    return out


def _random_members(t) -> set[str]:
    return {k for k, v in vars(t).items() if isinstance(v, Randomizable) and k != "R"}


def test_every_listed_transform_is_tested():
    assert set(CASES) == set(SAME_SEED_MEMBERS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_reseed_of_monai_transforms_matches_set_random_state(name):
    members = SAME_SEED_MEMBERS[name]
    a, b = CASES[name](), CASES[name]()
    # the listed members are all the random parts the transform holds (a MONAI release adding one fails here)
    assert _random_members(a) == set(members)
    owned: dict = {}
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 16, 16, generator=gen)
    label = torch.randint(0, 4, (1, 16, 16), generator=gen).float()
    for seed in [0, 1, 2**32 - 1, 12345, 0, 7, 99]:
        a.set_random_state(seed=seed)
        reseed(b, seed, owned)
        for sa, sb in zip(_states(a, members), _states(b, members), strict=True):
            assert np.array_equal(sa[1], sb[1]) and sa[2:] == sb[2:]
        if isinstance(a, mt.MapTransform):
            oa, ob = a({"image": image.clone(), "label": label.clone()}), b({"image": image.clone(), "label": label})
            assert all(torch.equal(torch.as_tensor(oa[k]), torch.as_tensor(ob[k])) for k in oa)
        else:
            assert torch.equal(torch.as_tensor(a(image.clone())), torch.as_tensor(b(image.clone())))
    # generators are reused from call to call, not constructed
    first = b.R
    reseed(b, 5, owned)
    assert b.R is first and b.R is not Randomizable.R


def test_subclasses_of_listed_transforms_keep_their_own_set_random_state():
    calls = []

    class Custom(mt.RandFlipd):
        def set_random_state(self, seed=None, state=None):
            calls.append(seed)
            return super().set_random_state(seed, state)

    tree = mt.Compose([Custom(KEYS, prob=0.5)])
    calls.clear()  # Compose seeds its members when it is built
    reseed(tree, 3, {})
    assert len(calls) == 1


def _seeded_items(tmp_path, demo_dir, bundle: str, count: int, base_seed: int, **over):
    """The bundle's ``train#seeded_dataset`` and, per item, (what it gives for ``(index, seed)``, what a deep copy of
    its transform gives after MONAI's own ``set_random_state(seed)``)."""
    from helpers import bundle_workflow

    wf = bundle_workflow(
        bundle,
        ["train.json"],
        dataset_dir=demo_dir,
        spatial_size=[32, 32],
        ckpt_dir=str(tmp_path / "m"),
        log_dir=str(tmp_path / "l"),
        **over,
    )
    ds = wf.parser.get_parsed_content("train#seeded_dataset")
    reference = copy.deepcopy(ds.transform)
    pairs = []
    for i in range(count):
        item = ds.dataset[i % 3]
        reference.set_random_state(seed=base_seed + i)
        pairs.append((ds[(i % 3, base_seed + i)], reference(copy.deepcopy(item))))
    return ds, pairs


def test_the_segmentation_bundle_augmentation_replays_identically(tmp_path, demo_dir):
    """The whole training augmentation of the segmentation bundle, reseeded per item, equals MONAI's
    ``set_random_state`` item for item (photometric part on)."""
    _, pairs = _seeded_items(tmp_path, demo_dir, "segmentation", 12, 1000, intensity_prob=0.5)
    for got, expected in pairs:
        assert torch.equal(torch.as_tensor(got["image"]), torch.as_tensor(expected["image"]))
        assert torch.equal(torch.as_tensor(got["label"]), torch.as_tensor(expected["label"]))


@pytest.mark.parametrize("bundle", ["seg_guided_diffusion", "meddiff_ft"])
def test_generator_pipelines_run_directly_and_equal_monai_compose(tmp_path, demo_dir, bundle):
    """The generators' per-item pipelines qualify for the direct calls, and give what MONAI's ``Compose`` gives with
    the same seed, item for item (condition dropout raised so that its branch runs too)."""
    from monai_siamese.data.sampling import direct_chain

    ds, pairs = _seeded_items(tmp_path, demo_dir, bundle, 16, 2000, cond_dropout_prob=0.3)
    assert direct_chain(ds.transform) is not None
    for got, expected in pairs:
        assert set(got) == set(expected)
        for k, v in expected.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(torch.as_tensor(got[k]), torch.as_tensor(v)), k


class _Twice(mt.MapTransform):
    """Returns two items (a multi-sample transform): ``Compose`` maps the rest of the chain over them."""

    def __call__(self, data):
        return [dict(data), {k: v + 1 for k, v in data.items()}]


class _Fails(mt.MapTransform):
    def __call__(self, data):
        raise ValueError("broken item")


def test_direct_calls_fall_back_to_monai_where_they_would_differ():
    from monai_siamese.data import SeededDataset
    from monai_siamese.data.sampling import direct_chain

    data = [{"x": torch.arange(4.0)}]
    noise = mt.RandGaussianNoised("x", prob=1.0)
    assert direct_chain(mt.OneOf([noise, mt.Identityd("x")])) is None  # not a plain Compose
    assert direct_chain(mt.Compose([mt.RandFlipd("x", prob=0.5)])) is None  # lazy-capable: pending resampling
    chain = direct_chain(mt.Compose([noise, mt.Compose([mt.Identityd("x")])]))
    assert chain is not None and chain[0] is noise and isinstance(chain[1], mt.Identityd)

    twice = mt.Compose([_Twice("x"), mt.RandGaussianNoised("x", prob=1.0)])
    expected = copy.deepcopy(twice)
    expected.set_random_state(seed=7)
    want = expected(dict(data[0]))
    got = SeededDataset(data, twice)[(0, 7)]
    assert isinstance(got, list) and len(got) == 2
    assert all(torch.equal(g["x"], w["x"]) for g, w in zip(got, want))

    with pytest.raises(RuntimeError, match="applying transform") as err:
        SeededDataset(data, mt.Compose([mt.Identityd("x"), _Fails("x")]))[(0, 3)]
    causes, e = [], err.value
    while e is not None:  # MONAI's chain: the Compose, then the transform, then the error itself
        causes.append(str(e))
        e = e.__cause__
    assert any("_Fails" in c for c in causes) and causes[-1] == "broken item"
