"""Handlers: latest checkpoint lookup, gradient clipping between backward and step, weight export."""

from __future__ import annotations

import torch
from monai.engines import SupervisedTrainer

from monai_siamese.engines import ExportWeightsHandler, GradientClipHandler, find_latest_checkpoint
from monai_siamese.networks import load_weights


def test_find_latest_checkpoint(tmp_path):
    assert find_latest_checkpoint(tmp_path) is None
    for it in (5, 40, 100):
        (tmp_path / f"checkpoint_iteration={it}.pt").write_bytes(b"x")
    (tmp_path / "checkpoint_final.pt").write_bytes(b"x")
    assert find_latest_checkpoint(tmp_path).endswith("checkpoint_iteration=100.pt")


def test_gradient_clip_and_export(tmp_path):
    net = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    data = [{"image": torch.ones(2, 4) * 100, "label": torch.zeros(2, 1)}]
    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=opt,
        loss_function=torch.nn.MSELoss(),
        decollate=False,
        train_handlers=[GradientClipHandler(max_norm=0.5), ExportWeightsHandler(net, tmp_path / "w.safetensors")],
    )
    w0 = torch.cat([p.detach().flatten() for p in net.parameters()]).clone()
    trainer.run()
    assert float(trainer.state.grad_norm) > 100  # the norm before clipping
    step = torch.cat([p.detach().flatten() for p in net.parameters()]) - w0
    assert abs(float(step.norm()) - 0.5) < 1e-4  # lr 1 x clipped norm 0.5
    other = torch.nn.Linear(4, 1)
    load_weights(other, tmp_path / "w.safetensors")
    torch.testing.assert_close(other.weight, net.weight)
