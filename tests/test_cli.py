"""The command line: the demo plumbing end to end on a tiny budget (the full demo is timed by hand, see README)."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import torch


def test_demo_command_small_budget(tmp_path, demo_dir):
    out = tmp_path / "demo_out"
    r = subprocess.run(
        [sys.executable, "-m", "monai_siamese", "demo", "--out", str(out), "--iterations", "3", "--steps", "2"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["pairs"] >= 16
    entries = json.loads((out / "synthetic" / "datalist.json").read_text())["training"]
    assert len(entries) == summary["pairs"]
    img = nib.load(str(out / "synthetic" / entries[0]["image"]))
    assert img.shape == (64, 64)
    assert (out / "synthetic_pairs.png").is_file() and (out / "samples" / "latest.png").is_file()
    assert set(summary["class_mean_intensity"]["generated"]) == {"0", "1", "2", "3"}
    assert "[demo] total" in r.stdout


def test_demo_command_siamese_diffusion(tmp_path, demo_dir):
    out = tmp_path / "siamese_out"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai_siamese",
            "demo",
            "--out",
            str(out),
            "--method",
            "siamese_diffusion",
            "--iterations",
            "3",
            "--steps",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["method"] == "siamese_diffusion" and summary["pairs"] >= 16
    manifest = json.loads((out / "synthetic" / "manifest.json").read_text())
    assert manifest["method"] == "siamese_diffusion"
    assert (out / "synthetic_pairs.png").is_file() and (out / "samples" / "latest.png").is_file()
    ckpt = torch.load(out / "models" / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 3  # the demo's epoch length follows a shorter --iterations
