"""The segmentation bundle on tiny settings: ConfigWorkflow training and inference, real + synthetic batches at
the configured ratio, a synthetic datalist read by a plain MONAI config, metadata, DDP, data validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import BUNDLES, bundle_workflow

from monai_siamese.bundles import config_files, run_bundle
from monai_siamese.data import SyntheticPairWriter, load_datalist

BUNDLE = BUNDLES / "segmentation"
TINY = {
    "spatial_size": [32, 32],
    "network_def#channels": [8, 16],
    "network_def#strides": [2],
    "network_def#num_res_units": 0,
    "batch_size": 4,
    "num_workers": 0,
    "epoch_length": 2,
    "num_iterations": 4,
    "val_interval": 1,
    "checkpoint_interval": 2,
    "max_train_slices": 8,
}


def _dirs(tmp_path, demo_dir):
    return {"dataset_dir": demo_dir, "ckpt_dir": str(tmp_path / "models"), "log_dir": str(tmp_path / "logs")}


@pytest.fixture(scope="module")
def synthetic_datalist(demo_dir, tmp_path_factory) -> str:
    """A synthetic folder as the generator bundles write it (writer, records, datalist with ``synthetic: true``),
    here from real demo slices with noise added, at 24 x 24 (another size than the real slices)."""
    from monai_siamese.data import build_slice_dataset

    out = tmp_path_factory.mktemp("synthetic")
    entries = load_datalist(os.path.join(demo_dir, "datalist.json"), "training")[::11]
    ds = build_slice_dataset(entries, num_classes=4, spatial_size=24)
    writer = SyntheticPairWriter(out, method="unit_test", num_classes=4)
    gen = torch.Generator().manual_seed(0)
    for i, item in enumerate(ds):
        lo, hi = item["intensity_range"].tolist()
        image = (item["image"] + 0.1 * torch.randn(item["image"].shape, generator=gen)).clamp(-1, 1)
        image = (image + 1) / 2 * (hi - lo) + lo
        writer.write(f"pair_{i:03d}", image, item["label"], item["image"].affine, record={"seed": i, "mask_index": i})
    return writer.finalize()["datalist"]


def _workflow(tmp_path, demo_dir, **extra):
    return bundle_workflow(BUNDLE, ["train.json"], **{**TINY, **_dirs(tmp_path, demo_dir), **extra})


@pytest.mark.parametrize(
    "ratio,until,per_batch", [(0.25, 1.0, [1] * 6), (0.5, 1.0, [2] * 6), (0.5, 0.5, [2, 2, 2, 0, 0, 0])]
)
def test_synthetic_items_fill_the_configured_share_of_every_batch(
    tmp_path, demo_dir, synthetic_datalist, ratio, until, per_batch
):
    """``synthetic_ratio`` of every batch is synthetic; with ``synthetic_until`` only in that first part of the run."""
    from ignite.engine import Events

    wf = _workflow(
        tmp_path,
        demo_dir,
        synthetic_datalist=synthetic_datalist,
        synthetic_ratio=ratio,
        synthetic_until=until,
        num_iterations=6,
        val_interval=3,
    )
    trainer = wf.parser.get_parsed_content("train#trainer")
    counts = []
    trainer.add_event_handler(
        Events.ITERATION_STARTED, lambda e: counts.append(int(torch.as_tensor(e.state.batch["synthetic"]).sum()))
    )
    wf.run()
    assert trainer.state.iteration == 6  # the iteration budget does not grow with synthetic data
    assert counts == per_batch
    assert len(wf.parser.get_parsed_content("train#synthetic_dataset")) == 6
    real_only = _workflow(tmp_path / "real", demo_dir, num_iterations=2)
    seen = []
    t2 = real_only.parser.get_parsed_content("train#trainer")
    t2.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(int(e.state.batch["synthetic"].sum())))
    real_only.run()
    assert seen == [0, 0]


def test_photometric_augmentation_changes_only_the_image_and_replays_per_seed(tmp_path, demo_dir):
    """Gamma, blur and noise (``intensity_prob``) alter the image of an item, never its label, keep the background
    and tissue order of a real slice, and give the same result for the same item seed (exact resume)."""
    geometric_off = {"flip_prob": 0.0, "affine_prob": 0.0}
    wf = _workflow(tmp_path, demo_dir, intensity_prob=1.0, **geometric_off)
    data = wf.parser.get_parsed_content("train#seeded_dataset")
    real = data.dataset[0]
    a, b, c = data[(0, 7)], data[(0, 7)], data[(0, 8)]
    assert torch.equal(a["image"], b["image"])  # same seed, same image: a resumed run replays its batches
    assert not torch.equal(a["image"], c["image"])
    assert not torch.allclose(torch.as_tensor(a["image"]), torch.as_tensor(real["image"]), atol=1e-3)
    for item in (a, c):
        assert torch.equal(torch.as_tensor(item["label"]), torch.as_tensor(real["label"]))
        label = torch.as_tensor(item["label"])[0]
        means = [float(torch.as_tensor(item["image"])[0][label == k].mean()) for k in range(4)]
        assert means[0] < means[1] < means[2] < means[3]  # background < CSF < GM < WM survives the augmentation
    off = _workflow(tmp_path / "off", demo_dir, intensity_prob=0.0, **geometric_off)
    item = off.parser.get_parsed_content("train#seeded_dataset")[(0, 7)]
    assert torch.equal(torch.as_tensor(item["image"]), torch.as_tensor(real["image"]))


def test_synthetic_photometric_augmentation_changes_synthetic_images_only(tmp_path, demo_dir, synthetic_datalist):
    """``synthetic_intensity_prob`` augments the images of synthetic items only: real items are exactly those of a
    run without it, labels never change, and the same item seed gives the same image."""
    fixed = {"flip_prob": 0.0, "affine_prob": 0.0, "intensity_prob": 0.0, "synthetic_datalist": synthetic_datalist}
    on = _workflow(tmp_path, demo_dir, synthetic_intensity_prob=1.0, **fixed)
    off = _workflow(tmp_path / "off", demo_dir, synthetic_intensity_prob=0.0, **fixed)
    data_on = on.parser.get_parsed_content("train#seeded_dataset")
    data_off = off.parser.get_parsed_content("train#seeded_dataset")
    num_real = len(on.parser.get_parsed_content("train#dataset"))
    real_on, real_off = data_on[(0, 3)], data_off[(0, 3)]
    assert not real_on["synthetic"]
    assert torch.equal(torch.as_tensor(real_on["image"]), torch.as_tensor(real_off["image"]))
    syn_on, syn_off = data_on[(num_real, 3)], data_off[(num_real, 3)]
    assert syn_on["synthetic"]
    assert torch.equal(torch.as_tensor(syn_off["image"]), torch.as_tensor(data_off.dataset[num_real]["image"]))
    assert not torch.allclose(torch.as_tensor(syn_on["image"]), torch.as_tensor(syn_off["image"]), atol=1e-3)
    assert torch.equal(torch.as_tensor(syn_on["label"]), torch.as_tensor(syn_off["label"]))
    assert torch.equal(torch.as_tensor(data_on[(num_real, 3)]["image"]), torch.as_tensor(syn_on["image"]))


def test_synthetic_datalist_trains_a_plain_monai_pipeline(tmp_path, synthetic_datalist):
    """A MONAI 2D segmentation set-up that knows nothing of this project reads the synthetic datalist unchanged."""
    from monai.data import DataLoader, Dataset, load_decathlon_datalist
    from monai.engines import SupervisedTrainer
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet
    from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, LoadImaged, ScaleIntensityd

    data = load_decathlon_datalist(synthetic_datalist, is_segmentation=True, data_list_key="training")
    transform = Compose(
        [
            LoadImaged(["image", "label"]),
            EnsureChannelFirstd(["image", "label"]),
            ScaleIntensityd("image"),
            EnsureTyped(["image", "label"]),
        ]
    )
    loader = DataLoader(Dataset(data, transform), batch_size=3, shuffle=True)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 1, 24, 24) and batch["label"].shape == (3, 1, 24, 24)
    assert set(torch.unique(batch["label"]).tolist()) <= {0, 1, 2, 3}
    net = UNet(2, 1, 4, (8, 16), (2,))
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3),
        loss_function=DiceCELoss(to_onehot_y=True, softmax=True),
    )
    trainer.run()
    assert trainer.state.iteration == 2 and np.isfinite(trainer.state.output[0]["loss"])


def test_bad_synthetic_file_fails_before_training(tmp_path, demo_dir, synthetic_datalist):
    from monai_siamese.data import DataValidationError

    content = json.loads(Path(synthetic_datalist).read_text())
    content["training"][0]["image"] = "images/missing.nii.gz"
    bad = Path(synthetic_datalist).parent / "bad_datalist.json"
    bad.write_text(json.dumps(content))
    with pytest.raises(Exception) as info:
        run_bundle(
            BUNDLE,
            ["train.json"],
            "training",
            "train",
            {**TINY, **_dirs(tmp_path, demo_dir), "synthetic_datalist": str(bad)},
        )
    err = info.value
    while err is not None and not isinstance(err, DataValidationError):
        err = err.__cause__ or err.__context__
    assert isinstance(err, DataValidationError) and "missing.nii.gz: file not found" in str(err)
    assert not (tmp_path / "models").exists()


def test_ddp_two_cpu_processes(tmp_path, demo_dir, synthetic_datalist):
    cfg = config_files(BUNDLE, ["train.json", "multi_gpu_train.json"])
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "monai.bundle",
            "run", "training", "--config_file", str(cfg)]  # fmt: skip
    over = {**TINY, **_dirs(tmp_path, demo_dir), "bundle_root": str(BUNDLE), "synthetic_datalist": synthetic_datalist}
    for k, v in over.items():
        args += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "models" / "checkpoint_final.pt").is_file() and (tmp_path / "models" / "model.pt").is_file()
