"""A synthetic set that a quality filter cut to one pair or to none is still scored (faithfulness where it exists,
FID / KID not a number) instead of stopping the evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from helpers import BUNDLES
from monai.networks.nets import UNet

from monai_siamese.data import load_datalist
from monai_siamese.evaluation import synthetic_quality
from monai_siamese.evaluation.scoring import class_table, load_images, real_reference
from monai_siamese.networks import save_weights
from monai_siamese.quality import load_segmenter, per_class_scores

TINY = {
    "spatial_size": [32, 32],
    "network_def#channels": [8, 16, 32],
    "network_def#strides": [2, 2],
    "network_def#num_res_units": 0,
}


def test_synthetic_quality_of_one_pair_and_of_none(tmp_path, demo_dir):
    torch.manual_seed(0)
    save_weights(UNet(2, 1, 4, (8, 16, 32), (2, 2), num_res_units=0), tmp_path / "model.pt")
    judge = load_segmenter(BUNDLES / "segmentation", overrides=TINY, weights=tmp_path / "model.pt", device="cpu")
    pool = load_datalist(Path(demo_dir) / "datalist.json", "training")[:4]
    names = ["CSF", "GM", "WM"]
    for n in (1, 0):
        dl = tmp_path / f"synthetic_{n}.json"
        dl.write_text(json.dumps({"training": [{**e, "mask_index": i} for i, e in enumerate(pool[:n])]}))
        q = synthetic_quality(judge, str(dl), pool, names, kid_subsets=5)
        assert q["pairs"] == n and math.isnan(q["fid"]) and math.isnan(q["kid"])
        faith = [q["faithfulness_dice"][c] for c in [*names, "mean"]]
        assert all(math.isnan(v) for v in faith) if n == 0 else 0.0 <= q["faithfulness_dice"]["mean"] <= 1.0
    # two pairs: the distances are numbers again
    dl = tmp_path / "synthetic_2.json"
    dl.write_text(json.dumps({"training": [{**e, "mask_index": i} for i, e in enumerate(pool[:2])]}))
    q = synthetic_quality(judge, str(dl), pool, names, kid_subsets=5)
    assert q["pairs"] == 2 and math.isfinite(q["fid"]) and math.isfinite(q["kid"])


def test_real_reference_scores_real_test_slices_as_faithfulness_at_any_size(tmp_path, demo_dir):
    torch.manual_seed(0)
    save_weights(UNet(2, 1, 4, (8, 16, 32), (2, 2), num_res_units=0), tmp_path / "model.pt")
    judge = load_segmenter(BUNDLES / "segmentation", overrides=TINY, weights=tmp_path / "model.pt", device="cpu")
    datalist = Path(demo_dir) / "datalist.json"
    pool, test = load_datalist(datalist, "training")[:4], load_datalist(datalist, "test")[:6]
    names = ["CSF", "GM", "WM"]
    # at the judge's own size it is the judge's test Dice, computed as score_segmentation does (the tiny judge has no
    # segmenter.json for score_segmentation itself to load)
    own = real_reference(judge, test, pool, (32, 32), names, kid_subsets=5)
    data = load_images(judge.settings, test)
    ref = class_table(per_class_scores(judge.predict(data["image"]), data["label"], judge.num_classes)["dice"], names)
    assert own["image_size"] == [32, 32] and own["sets"] == {"test": 6, "pool": 4}
    for c in [*names, "mean"]:
        a, b = own["test_dice_at_size"][c], ref[c]
        assert math.isclose(a, b, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b))
    # at a smaller size images and labels are resized first (the labels nearest-neighbour), as synthetic pairs are
    small = real_reference(judge, test, pool, (16, 16), names, kid_subsets=5)
    data = load_images(judge.settings, test, spatial_size=(16, 16))
    assert data["label"].shape[-2:] == (16, 16) and small["image_size"] == [16, 16]
    ref = class_table(per_class_scores(judge.predict(data["image"]), data["label"], judge.num_classes)["dice"], names)
    assert math.isclose(small["test_dice_at_size"]["mean"], ref["mean"], abs_tol=1e-6)
