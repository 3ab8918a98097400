"""scripts/sampler_study.py on a micro evaluation: every variant sampled from the same masks and scored by the judge,
MONAI's DDIM swapped in where asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from helpers import BUNDLES, REPO, load_script


def test_sampler_study_on_a_micro_evaluation(tmp_path, demo_dir):
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "monai_siamese", "evaluate", "--preset", "micro", "--methods", "seg_guided_diffusion"]
    cmd += ["--mask_sources", "regime", "--selections", "none", "--out", str(out)]
    # the micro preset's tiny network, trained as a DDPM model (its demo.json trains a rectified flow: no DDIM there)
    tiny = {"channels": [8, 16], "attention_levels": [False, False], "num_res_blocks": 1, "num_head_channels": 8}
    over = {**{f"network_def#{k}": v for k, v in tiny.items()}, "network_def#norm_num_groups": 8}
    over.update(objective="ddpm", prediction_type="v_prediction")
    cmd += ["--set", "method_overrides=" + json.dumps({"seg_guided_diffusion": over})]
    env = {**os.environ, "MONAI_SIAMESE_BUNDLES": str(BUNDLES), "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    study = load_script("sampler_study")
    variants = {
        "monai_ddim": {"sampler": "ddim", "num_inference_steps": 3, "monai_ddim": True},
        "ddim": {"sampler": "ddim", "num_inference_steps": 3},
        "dpm": {"sampler": "dpmpp_2m", "num_inference_steps": 3},
    }
    res_path = tmp_path / "study.json"
    argv = ["--eval_dir", str(out), "--method", "seg_guided_diffusion", "--regime", "N004_d0"]
    argv += ["--variants", json.dumps(variants), "--out", str(res_path), "--bundles", str(BUNDLES)]
    res = study.main(argv)
    assert json.loads(res_path.read_text()) == json.loads(json.dumps(res))
    assert res["mask_set"] == "regime" and res["base_settings"]["use_quality_filter"] is False
    assert len(res["real"]["class_means"]) == 4 and res["real"]["background_std"] >= 0
    assert list(res["variants"]) == list(variants)
    for name, v in res["variants"].items():
        assert v["pairs"] == 4, name  # the regime's 4 masks, one sample each
        assert set(v["faithfulness"]) == {"CSF", "GM", "WM", "mean"} and v["background_std"] >= 0
    monai_scheduler = res["variants"]["monai_ddim"]["overrides"]["scheduler"]
    assert monai_scheduler["_target_"] == "monai.networks.schedulers.DDIMScheduler"
    assert "scheduler" not in res["variants"]["ddim"]["overrides"]
