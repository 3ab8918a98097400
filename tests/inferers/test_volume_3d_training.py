"""Drop-in check: a stock MONAI 3D segmentation training reads and trains on volumes written by VolumeGenerator.

Nothing from monai_siamese runs in the training loop: MONAI's datalist loader, LoadImaged, EnsureChannelFirstd,
ScaleIntensityd, RandSpatialCropd, a 3D UNet and DiceCELoss, as a user's existing 3D pipeline would.
"""

from __future__ import annotations

import numpy as np
import torch
from helpers import tiny_denoiser, write_nifti
from monai.data import DataLoader, Dataset, load_decathlon_datalist
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, LoadImaged, RandSpatialCropd, ScaleIntensityd

from monai_siamese.inferers import ConditionalSampler, VolumeGenerator
from monai_siamese.transforms import context_channels


def _synthetic_datalist(tmp_path) -> str:
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    labels = []
    for i in range(2):
        lab = np.zeros((24, 22, 20), np.uint8)
        lab[4 + i : 20, 5:18, 3:17] = 1
        lab[8:16, 8 + i : 15, 6:14] = 2
        labels.append(write_nifti(tmp_path / f"label{i}.nii.gz", lab, affine))
    gen = VolumeGenerator(
        tiny_denoiser(context_channels(3, 1)),
        ConditionalSampler("ddim", num_inference_steps=2),
        labels,
        tmp_path / "synthetic",
        num_classes=3,
        spatial_size=16,
        preset="ct",
        context_slices=1,
        device="cpu",
        previews=False,
        progress=False,
    )
    return gen.run()["datalist"]


def test_stock_monai_3d_training_on_generated_volumes(tmp_path):
    datalist = _synthetic_datalist(tmp_path)
    files = load_decathlon_datalist(datalist, is_segmentation=True, data_list_key="training")
    assert len(files) == 2 and all(f["synthetic"] for f in files)
    transforms = Compose(
        [
            LoadImaged(keys=["image", "label"]),
            EnsureChannelFirstd(keys=["image", "label"]),
            ScaleIntensityd(keys="image"),
            RandSpatialCropd(keys=["image", "label"], roi_size=(16, 16, 16), random_size=False),
            EnsureTyped(keys=["image", "label"]),
        ]
    )
    torch.manual_seed(0)
    loader = DataLoader(Dataset(files, transforms), batch_size=2, shuffle=True, num_workers=0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8), strides=(2,), num_res_units=0)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    losses = []
    for _ in range(3):
        for batch in loader:
            assert batch["image"].shape == (2, 1, 16, 16, 16) and batch["label"].shape == (2, 1, 16, 16, 16)
            opt.zero_grad()
            loss = loss_fn(net(batch["image"]), batch["label"])
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
