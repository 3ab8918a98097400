"""Each reference layout imports into a MONAI datalist whose entries load."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import write_png

from monai_siamese.data import load_datalist
from monai_siamese.data.importers import ImportError_, import_layout


def _img(seed):
    return (np.random.default_rng(seed).random((12, 10, 3)) * 255).astype(np.uint8)


def _mask():
    m = np.zeros((12, 10), np.uint8)
    m[3:7, 2:6] = 255
    return m


def test_pranet_layout(tmp_path):
    root = tmp_path / "Kvasir"
    for i in range(5):
        write_png(root / "images" / f"cju{i}.png", _img(i))
        write_png(root / "masks" / f"cju{i}.png", _mask())
    out = tmp_path / "dl.json"
    splits = import_layout("pranet", root, out=out, val_fraction=0.2)
    assert len(splits["training"]) == 4 and len(splits["validation"]) == 1
    entries = load_datalist(out, "training")
    assert all(e["image"].endswith(".png") and "images" in e["image"] and "masks" in e["label"] for e in entries)
    for e in entries:
        assert e["image"].split("/")[-1] == e["label"].split("/")[-1]


def test_pranet_layout_isic_suffix_and_unmatched(tmp_path):
    root = tmp_path / "isic"
    write_png(root / "images" / "ISIC_0001.png", _img(0))
    write_png(root / "masks" / "ISIC_0001_segmentation.png", _mask())
    splits = import_layout("pranet", root, val_fraction=0.0)
    assert splits["training"][0]["label"].endswith("ISIC_0001_segmentation.png")
    write_png(root / "images" / "ISIC_0002.png", _img(1))
    with pytest.raises(ImportError_, match="ISIC_0002.png: no mask"):
        import_layout("pranet", root)


def test_siamese_prompt_json(tmp_path):
    data = tmp_path / "data"
    rows = []
    for i in range(4):
        write_png(data / "images" / f"{i}.png", _img(i))
        write_png(data / "masks" / f"{i}.png", _mask())
        rows.append({"source": f"./data/masks/{i}.png", "target": f"./data/images/{i}.png", "prompt": "a polyp"})
    (data / "prompt.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    splits = import_layout("siamese", data / "prompt.json", out=tmp_path / "dl.json", val_fraction=0.25)
    assert len(splits["training"]) == 3 and len(splits["validation"]) == 1
    e = load_datalist(tmp_path / "dl.json", "training")[0]
    assert "/masks/" in e["label"] and "/images/" in e["image"] and e["prompt"] == "a polyp"


def test_segguided_layout(tmp_path):
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for i in range(n):
            write_png(tmp_path / "DATA" / split / f"{split}_{i}.png", _img(i)[..., 0])
            write_png(tmp_path / "MASKS" / "all" / split / f"{split}_{i}.png", (_mask() > 0).astype(np.uint8) * 2)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai_siamese",
            "import",
            "segguided",
            str(tmp_path / "DATA"),
            "--masks",
            str(tmp_path / "MASKS"),
            "--out",
            str(tmp_path / "dl.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    content = json.loads((tmp_path / "dl.json").read_text())
    assert [len(content[k]) for k in ("training", "validation", "test")] == [3, 1, 2]
    test = load_datalist(tmp_path / "dl.json", "test")
    assert test[0]["label"].endswith("MASKS/all/test/test_0.png")


def test_meddiff_data_json(tmp_path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    # the reference stores paths relative to its main/ folder: ../data/train/...
    img = tmp_path / "data" / "train" / "images" / "ISIC_0000012.png"
    write_png(img, _img(0))
    write_png(tmp_path / "data" / "train" / "masks" / "ISIC_0000012_segmentation.png", _mask())
    content = {
        "image": ["../data/train/images/ISIC_0000012.png"],
        "mask_1": ["../data/train/masks/ISIC_0000012_segmentation.png"],
        "prompt": ["a photo of hta"],
    }
    (tmp_path / "data" / "train" / "data.json").write_text(json.dumps(content))
    (tmp_path / "main").mkdir()
    splits = import_layout("meddiff", tmp_path / "data" / "train" / "data.json", root=tmp_path / "main")
    e = splits["training"][0]
    assert e["image"] == str(img.resolve()) and e["prompt"] == "a photo of hta"
    # pandas-style column dictionary
    content2 = {k: {"0": v[0]} for k, v in content.items()}
    (tmp_path / "data" / "train" / "data2.json").write_text(json.dumps(content2))
    splits2 = import_layout("meddiff", tmp_path / "data" / "train" / "data2.json", root=tmp_path / "main")
    assert splits2["training"][0]["label"].endswith("ISIC_0000012_segmentation.png")
    content3 = {"image": ["../data/train/images/missing.png"], "mask_1": content["mask_1"]}
    (tmp_path / "data" / "train" / "bad.json").write_text(json.dumps(content3))
    with pytest.raises(ImportError_, match="missing.png not found"):
        import_layout("meddiff", tmp_path / "data" / "train" / "bad.json", root=tmp_path / "main")
