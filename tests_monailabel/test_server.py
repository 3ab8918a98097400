"""The MONAI Label app end to end against the real server: ``/info/``, ``/train/<bundle>``, ``/infer/synthesis``,
``/infer/segmentation`` and ``/scoring/generate_pairs`` over HTTP, on a datastore of demo NIfTI files (2D slices and a
reoriented 3D volume), with tiny networks so it runs on a CPU in a few minutes."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests

TIMEOUT = 600


def _nifti(content: bytes) -> nib.Nifti1Image:
    img = nib.Nifti1Image.from_bytes(_gunzip(content))
    return img


def _gunzip(content: bytes) -> bytes:
    import gzip

    return gzip.decompress(content) if content[:2] == b"\x1f\x8b" else content


def _post(url: str, **kwargs) -> requests.Response:
    r = requests.post(url, timeout=TIMEOUT, **kwargs)
    assert r.status_code == 200, f"{url}: {r.status_code} {r.text[:2000]}"
    return r


def _same_geometry(result: nib.Nifti1Image, source: Path, samples: int = 1) -> np.ndarray:
    src = nib.load(str(source))
    data = np.asarray(result.dataobj)
    expected = tuple(src.shape) if samples == 1 else (*src.shape, *([1] * (3 - len(src.shape))), samples)
    assert data.shape == expected
    np.testing.assert_allclose(result.affine, src.affine, atol=1e-4)
    return data


def test_info_lists_tasks(server):
    info = requests.get(f"{server['url']}/info/", timeout=30).json()
    assert set(info["trainers"]) == {"seg_guided_diffusion", "segmentation"}
    assert set(info["models"]) == {"segmentation", "synthesis"}
    assert info["models"]["synthesis"]["type"] == "others"
    assert info["models"]["segmentation"]["labels"] == {"CSF": 1, "GM": 2, "WM": 3}
    assert "generate_pairs" in info["scoring"]


def test_train_generator_writes_checkpoint(server):
    t0 = time.time()
    params = {"max_epochs": 1, "device": "cpu", "val_split": 0.2}
    _post(f"{server['url']}/train/seg_guided_diffusion?run_sync=true", json=params)
    models = server["bundles"] / "seg_guided_diffusion" / "models"
    assert (models / "model.safetensors").is_file(), server["log"].read_text()[-3000:]
    assert (models / "checkpoint_final.pt").is_file()
    print(f"train seg_guided_diffusion: {time.time() - t0:.1f}s")


def test_synthesis_2d_keeps_geometry(server):
    image = sorted(p for p in server["datastore"].glob("mni152_*.nii.gz"))[0]
    image_id = image.name[: -len(".nii.gz")]
    params = {"samples": 1, "seed": 3}
    r = _post(f"{server['url']}/infer/synthesis?image={image_id}&output=image", data={"params": json.dumps(params)})
    data = _same_geometry(_nifti(r.content), image)
    assert np.isfinite(data).all() and data.std() > 0
    # same seed, same image
    r2 = _post(f"{server['url']}/infer/synthesis?image={image_id}&output=image", data={"params": json.dumps(params)})
    np.testing.assert_array_equal(np.asarray(_nifti(r2.content).dataobj), data)
    # the synthetic image is never saved as a label
    assert not (server["datastore"] / "labels" / "original" / image.name).exists()


def test_synthesis_samples_and_json(server):
    image = sorted(p for p in server["datastore"].glob("mni152_*.nii.gz"))[1]
    image_id = image.name[: -len(".nii.gz")]
    params = {"samples": 2, "seed": 0, "method": "seg_guided_diffusion"}
    r = _post(f"{server['url']}/infer/synthesis?image={image_id}&output=image", data={"params": json.dumps(params)})
    data = _same_geometry(_nifti(r.content), image, samples=2)
    assert not np.array_equal(data[..., 0], data[..., 1])
    js = _post(f"{server['url']}/infer/synthesis?image={image_id}&output=json", data={"params": json.dumps(params)})
    result = js.json()
    assert result["samples"] == 2 and result["pairs"] == 2 and result["method"] == "seg_guided_diffusion"


def test_synthesis_3d_volume_and_selected_slice(server):
    image = server["datastore"] / "volume3d.nii.gz"
    src = nib.load(str(image))
    r = _post(f"{server['url']}/infer/synthesis?image=volume3d&output=image", data={"params": json.dumps({"seed": 1})})
    data = _same_geometry(_nifti(r.content), image)
    # every one of the 5 slices has foreground: all synthesised (the file's first axis is the slicing axis)
    assert all(data[k].std() > 0 for k in range(src.shape[0]))
    params = {"seed": 1, "slice_index": 2, "fill": "zero", "output": "json"}
    r = _post(f"{server['url']}/infer/synthesis?image=volume3d&output=image", data={"params": json.dumps(params)})
    one = _same_geometry(_nifti(r.content), image)
    # RAS slice 2 of 5 along z is the file's index 2 on its first axis (k -> z); only it is synthesised
    assert one[2].std() > 0
    assert np.count_nonzero(np.delete(one, 2, axis=0)) == 0


def test_synthesis_from_an_edited_label(server):
    image = sorted(p for p in server["datastore"].glob("mni152_*.nii.gz"))[2]
    image_id = image.name[: -len(".nii.gz")]
    lab = nib.load(str(server["datastore"] / "labels" / "final" / image.name))
    edited = np.asarray(lab.dataobj).copy()
    edited[edited == 1] = 2  # the annotator merged CSF into GM
    buf = io.BytesIO(nib.Nifti1Image(edited, lab.affine).to_bytes())
    files = {"label": ("edited.nii", buf, "application/octet-stream")}
    r = _post(
        f"{server['url']}/infer/synthesis?image={image_id}&output=image",
        data={"params": json.dumps({"seed": 3})},
        files=files,
    )
    data = _same_geometry(_nifti(r.content), image)
    r0 = _post(
        f"{server['url']}/infer/synthesis?image={image_id}&output=image", data={"params": json.dumps({"seed": 3})}
    )
    assert not np.array_equal(np.asarray(_nifti(r0.content).dataobj), data)


def test_train_and_infer_segmentation(server):
    t0 = time.time()
    _post(f"{server['url']}/train/segmentation?run_sync=true", json={"max_epochs": 1, "device": "cpu"})
    assert (server["bundles"] / "segmentation" / "models" / "model.pt").is_file(), server["log"].read_text()[-3000:]
    print(f"train segmentation: {time.time() - t0:.1f}s")
    for image in [sorted(server["datastore"].glob("mni152_*.nii.gz"))[0], server["datastore"] / "volume3d.nii.gz"]:
        image_id = image.name[: -len(".nii.gz")]
        r = _post(f"{server['url']}/infer/segmentation?image={image_id}&output=image", data={"params": "{}"})
        data = _same_geometry(_nifti(r.content), image)
        assert set(np.unique(data).tolist()) <= {0, 1, 2, 3}


def test_generate_pairs_outside_the_datastore(server):
    out = server["work"] / "synthetic_pairs" / "seg_guided_diffusion"
    params = {"generator": "seg_guided_diffusion", "num_pairs": 5, "seed": 0}
    _post(f"{server['url']}/scoring/generate_pairs?run_sync=true", json=params)
    datalist = json.loads((out / "datalist.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(datalist["training"]) == 5 and manifest["counts"]["pairs_total"] == 5
    for e in datalist["training"]:
        assert e["synthetic"] is True and e["method"] == "seg_guided_diffusion"
        assert (out / e["image"]).is_file() and (out / e["label"]).is_file()
    # nothing written into the annotators' datastore
    assert not list(server["datastore"].glob("**/*_000.nii.gz"))
    # refused inside the datastore (and outside the output root)
    bad = {"generator": "seg_guided_diffusion", "num_pairs": 1, "output_dir": str(server["datastore"] / "gen")}
    r = requests.post(f"{server['url']}/scoring/generate_pairs?run_sync=true", json=bad, timeout=TIMEOUT)
    assert r.status_code == 400 and "output_dir" in r.text, r.text
    assert not (server["datastore"] / "gen").exists()


def _refused(r: requests.Response, name: str) -> None:
    assert 400 <= r.status_code < 500 and name in r.json()["detail"], f"{r.status_code} {r.text[:1000]}"


def test_request_code_and_paths_refused(server):
    """A request's parameters are data: a '$' string in ``overrides`` (MONAI's config parser would run it) is a 400
    naming the key, on every endpoint, and nothing runs; an output folder outside the server's root is a 400."""
    url = server["url"]
    probe = server["work"] / "pwned"
    code = f"$float(open({str(probe)!r}, 'w').write('x'))*0"
    image_id = sorted(p for p in server["datastore"].glob("mni152_*.nii.gz"))[0].name[: -len(".nii.gz")]
    r = requests.post(
        f"{url}/infer/synthesis?image={image_id}&output=image",
        data={"params": json.dumps({"overrides": {"eta": code}})},
        timeout=TIMEOUT,
    )
    _refused(r, "eta")
    r = requests.post(
        f"{url}/infer/synthesis?image={image_id}&output=json",
        data={"params": json.dumps({"overrides": {"guidance_scale": {"_target_": "os.system", "command": "id"}}})},
        timeout=TIMEOUT,
    )
    _refused(r, "guidance_scale")
    r = requests.post(
        f"{url}/infer/synthesis?image={image_id}&output=json",
        data={"params": json.dumps({"label": "/etc/passwd"})},
        timeout=TIMEOUT,
    )
    _refused(r, "label")
    params = {"generator": "seg_guided_diffusion", "num_pairs": 1, "overrides": {"eta": code}}
    _refused(requests.post(f"{url}/scoring/generate_pairs?run_sync=true", json=params, timeout=TIMEOUT), "eta")
    params = {"generator": "seg_guided_diffusion", "num_pairs": 1, "output_dir": "../escaped"}
    _refused(requests.post(f"{url}/scoring/generate_pairs?run_sync=true", json=params, timeout=TIMEOUT), "output_dir")
    assert not (server["work"] / "escaped").exists()
    params = {"max_epochs": 1, "device": "cpu", "overrides": {"lr": code}}
    _refused(requests.post(f"{url}/train/seg_guided_diffusion?run_sync=true", json=params, timeout=TIMEOUT), "lr")
    params = {"max_epochs": "$1", "device": "cpu"}
    _refused(requests.post(f"{url}/train/segmentation?run_sync=true", json=params, timeout=TIMEOUT), "max_epochs")
    assert not probe.exists()
