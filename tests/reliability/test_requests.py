"""MONAI Label request parameters are data, never config code; server-side paths stay inside the server's roots.

No server and no bundle run: the validators must refuse before anything is parsed or run, so the bundle runner is
replaced by one that fails the test when called.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from monai_siamese.monailabel_app import core, params
from monai_siamese.monailabel_app.params import REQUEST_OVERRIDES, RequestError, request_overrides

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "seg_guided_diffusion"


@pytest.fixture()
def no_run(monkeypatch):
    """Replace the bundle runner: a refused request must never reach it."""
    calls = []

    def fake_run(bundle, configs, workflow_type, overrides):
        calls.append(overrides)
        raise AssertionError(f"the bundle ran with {overrides}")

    monkeypatch.setattr(core, "_run", fake_run)
    return calls


def _probe(path: Path) -> str:
    return f"$float(open({str(path)!r}, 'w').write('x'))*0"


def test_probe_is_code_for_monai_config_parser(tmp_path):
    """Control: the probe string really runs when it reaches MONAI's config parser (what a request must not do)."""
    from monai.bundle import ConfigParser

    probe = tmp_path / "pwned_control"
    parser = ConfigParser({"eta": 0.0})
    parser.update({"eta": _probe(probe)})
    assert parser.get_parsed_content("eta") == 0.0 and probe.exists()


def test_rce_probe_through_synthesize_leaves_no_file(tmp_path, no_run):
    probe = tmp_path / "pwned"
    with pytest.raises(RequestError, match="eta"):
        core.synthesize(
            BUNDLE,
            str(tmp_path / "image.nii.gz"),
            str(tmp_path / "label.nii.gz"),
            tmp_path / "out.nii.gz",
            request_overrides={"eta": _probe(probe)},
            work_dir=tmp_path,
        )
    assert not probe.exists() and not no_run
    assert not list(tmp_path.iterdir()), "validation must come before any work folder or output"


def test_rce_probe_through_the_task_request(tmp_path):
    """What ``SynthesisInfer`` checks first: the form's ``overrides`` text, as MONAI Label passes it."""
    probe = tmp_path / "pwned"
    request = {"image": "case", "method": "seg_guided_diffusion", "overrides": json.dumps({"eta": _probe(probe)})}
    with pytest.raises(RequestError, match="eta") as e:
        core.check_synthesis_request(request, core.GENERATOR_BUNDLES)
    assert "config code" in str(e.value) and not probe.exists()


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"eta": "$__import__('os').system('id')"}, "eta"),
        ({"eta": "  $1"}, "eta"),
        ({"num_inference_steps": "@num_train_timesteps"}, "num_inference_steps"),
        ({"sampler": "%/etc/passwd"}, "sampler"),
        ({"sampler": "ddim#x"}, "sampler"),
        ({"foreground_classes": [1, "$2"]}, "foreground_classes"),
        ({"foreground_classes": [[1], [2, {"a": 1}]]}, "foreground_classes"),
        ({"guidance_scale": {"_target_": "os.system", "command": "id"}}, "guidance_scale"),
        ({"_target_": "os.system"}, "_target_"),
        ({"network_def#_target_": "torch.nn.Identity"}, "network_def#_target_"),
        ({"network_def": {"_target_": "torch.nn.Identity"}}, "network_def"),
        ({"ckpt_dir": "/tmp"}, "ckpt_dir"),
        ({"output_dir": "/tmp/x"}, "output_dir"),
        ({"model_path": "x.safetensors"}, "model_path"),
        ({"eta": True}, "eta"),
        ({"eta": 3.0}, "eta"),
        ({"eta": float("nan")}, "eta"),
        ({"num_inference_steps": 2.5}, "num_inference_steps"),
        ({"num_inference_steps": None}, "num_inference_steps"),
        ({"sampler": "heun"}, "sampler"),
    ],
)
def test_synthesis_overrides_refused_naming_the_key(overrides, key):
    with pytest.raises(RequestError) as e:
        request_overrides(overrides, "synthesis")
    assert key in str(e.value)


@pytest.mark.parametrize("kind", sorted(REQUEST_OVERRIDES))
def test_every_kind_refuses_code_objects_and_unknown_keys(kind):
    key = next(iter(REQUEST_OVERRIDES[kind]))
    for bad in ("$1", "@lr", "%train.json#lr", {"_target_": "os.system"}):
        with pytest.raises(RequestError, match=key):
            request_overrides({key: bad}, kind)
    with pytest.raises(RequestError, match="bundle_root"):
        request_overrides({"bundle_root": "/tmp"}, kind)


def test_plain_values_accepted_and_normalised():
    assert request_overrides(None, "synthesis") == {} and request_overrides("", "training") == {}
    sent = {
        "num_inference_steps": "2",
        "eta": 0,
        "sampler": "dpmpp_2m",
        "interpolation_lambda": None,
        "foreground_classes": [1, 2],
        "erosion_radius": [0, 1, 1],
        "use_quality_filter": False,
    }
    got = request_overrides(json.dumps(sent), "synthesis")
    assert got == {**sent, "num_inference_steps": 2, "eta": 0.0}
    assert request_overrides({"lr": 1e-4, "epoch_length": 3, "ablation_mode": "batch"}, "training") == {
        "lr": 1e-4,
        "epoch_length": 3,
        "ablation_mode": "batch",
    }
    with pytest.raises(RequestError, match="JSON object"):
        request_overrides("[1, 2]", "synthesis")
    with pytest.raises(RequestError, match="not valid JSON"):
        request_overrides("{eta: 1}", "synthesis")


def _config_keys(bundle: str, config: str) -> set[str]:
    keys = set()
    for f in (REPO / "bundles").glob(f"{bundle}/configs/{config}"):
        keys |= set(json.loads(f.read_text())) | set(json.loads((f.parent / "common.json").read_text()))
    return keys


def test_allow_lists_name_real_bundle_keys():
    """The lists are documentation too: every key is a top-level key of a bundle config of that kind, the samplers
    are the ones make_scheduler knows, and nothing that names a path, a network or code is on them."""
    from monai_siamese.diffusion import SamplerType

    generators = "|".join(core.GENERATOR_BUNDLES)
    sampling = set().union(*(_config_keys(b, "inference.json") for b in core.GENERATOR_BUNDLES))
    training = _config_keys("*", "train.json")
    segmentation = _config_keys("segmentation", "inference.json")
    assert set(params.SAMPLING_OVERRIDES) <= sampling, set(params.SAMPLING_OVERRIDES) - sampling
    assert set(params.TRAINING_OVERRIDES) <= training, set(params.TRAINING_OVERRIDES) - training
    assert set(params.SEGMENTATION_OVERRIDES) <= segmentation
    assert set(params.SAMPLERS) == {s.value for s in SamplerType}
    forbidden = ("dir", "path", "datalist", "network", "device", "bundle_root", "_target_", "#")
    for kind, allowed in REQUEST_OVERRIDES.items():
        assert not [k for k in allowed if any(f in k for f in forbidden)], (kind, generators)
        assert all(p.kind != params.ParamKind.CHOICE or p.choices for p in allowed.values())


@pytest.mark.parametrize(
    "request_, name",
    [
        ({"method": "no_such_bundle"}, "method"),
        ({"method": "$os"}, "method"),
        ({"samples": "$1"}, "samples"),
        ({"samples": 0}, "samples"),
        ({"samples": 10_000}, "samples"),
        ({"seed": -1}, "seed"),
        ({"seed": "1; rm"}, "seed"),
        ({"slice_index": "x"}, "slice_index"),
        ({"slice_index": [1]}, "slice_index"),
        ({"fill": "mean"}, "fill"),
        ({"fill": {"_target_": "x"}}, "fill"),
        ({"device": "$torch.device('cpu')"}, "device"),
        ({"device": "cuda; rm"}, "device"),
    ],
)
def test_synthesis_request_parameters(request_, name):
    with pytest.raises(RequestError, match=name):
        core.check_synthesis_request({"image": "case", **request_}, ["seg_guided_diffusion"])


def test_synthesis_request_defaults_and_panel_lists():
    got = core.check_synthesis_request(
        {"method": ["seg_guided_diffusion", "meddiff_ft"], "fill": ["min", "zero"], "samples": "2", "slice_index": -1},
        ["seg_guided_diffusion", "meddiff_ft"],
    )
    assert got == {
        "method": "seg_guided_diffusion",
        "samples": 2,
        "seed": 0,
        "slice_index": None,
        "fill": "min",
        "request_overrides": {},
    }


def test_pairs_request_parameters():
    with pytest.raises(RequestError, match="generator"):
        core.check_pairs_request({"generator": "../../x"}, ["seg_guided_diffusion"])
    with pytest.raises(RequestError, match="num_pairs"):
        core.check_pairs_request({"num_pairs": "$10"}, ["seg_guided_diffusion"])
    with pytest.raises(RequestError, match="eta"):
        core.check_pairs_request({"overrides": {"eta": "@x"}}, ["seg_guided_diffusion"])
    got = core.check_pairs_request({"num_pairs": 3, "device": "cpu"}, ["seg_guided_diffusion"])
    assert got["generator"] == "seg_guided_diffusion" and got["num_pairs"] == 3 and got["device"] == "cpu"


# --- output_dir inside the server's root ---


@pytest.fixture()
def roots(tmp_path):
    root, store, elsewhere = tmp_path / "root", tmp_path / "studies", tmp_path / "elsewhere"
    for d in (root, store, elsewhere):
        d.mkdir()
    (root / "link_out").symlink_to(elsewhere, target_is_directory=True)
    return root, store, elsewhere


def _entries(tmp_path: Path) -> list[dict]:
    return [{"image": str(tmp_path / "i.nii.gz"), "label": str(tmp_path / "l.nii.gz")}]


@pytest.mark.parametrize("requested", ["../elsewhere", "{elsewhere}", "link_out", "link_out/sub", "a/../../elsewhere"])
def test_output_dir_outside_the_root_refused(tmp_path, roots, no_run, requested):
    root, store, elsewhere = roots
    requested = requested.format(elsewhere=elsewhere)
    with pytest.raises(RequestError, match="output_dir") as e:
        core.generate_pairs(BUNDLE, _entries(tmp_path), requested, 2, datastore_dir=store, output_root=root)
    assert requested in str(e.value) and "outside" in str(e.value)
    assert not no_run and not list(elsewhere.iterdir())


def test_output_dir_inside_the_root(tmp_path, roots, monkeypatch):
    root, store, _ = roots
    assert params.resolve_output_dir("", root, "seg_guided_diffusion") == root.resolve() / "seg_guided_diffusion"
    assert params.resolve_output_dir("run1/pairs", root, "x") == root.resolve() / "run1" / "pairs"
    assert params.resolve_output_dir(str(root / "abs"), root, "x") == root.resolve() / "abs"
    seen = {}

    def fake_run(bundle, configs, workflow_type, overrides):
        seen.update(overrides)
        Path(overrides["output_dir"], "datalist.json").write_text(json.dumps({"training": [{"image": "a"}]}))

    monkeypatch.setattr(core, "_run", fake_run)
    res = core.generate_pairs(BUNDLE, _entries(tmp_path), "run1", 1, datastore_dir=store, output_root=root)
    assert res["output_dir"] == str(root.resolve() / "run1") and seen["output_dir"] == res["output_dir"]
    # the request's datalist lived in a temporary folder, removed: nothing written outside the output folder
    assert not Path(seen["dataset_dir"]).exists() and sorted(p.name for p in root.iterdir()) == ["link_out", "run1"]
    res = core.generate_pairs(BUNDLE, _entries(tmp_path), None, 1, datastore_dir=store, output_root=root)
    assert res["output_dir"] == str(root.resolve() / "seg_guided_diffusion")


def test_output_root_holding_the_datastore_still_refuses_it(tmp_path, no_run):
    root = tmp_path / "root"
    store = root / "studies"
    store.mkdir(parents=True)
    with pytest.raises(RequestError, match="inside the datastore"):
        core.generate_pairs(BUNDLE, _entries(tmp_path), "studies/gen", 2, datastore_dir=store, output_root=root)
    assert not (store / "gen").exists()


def test_request_paths_stay_in_the_datastore_or_uploads(tmp_path):
    store = tmp_path / "studies"
    store.mkdir()
    (store / "lab.nii.gz").write_bytes(b"x")
    outside = tmp_path / "secret.nii.gz"  # under the temporary folder, but not an upload
    outside.write_bytes(b"x")
    with tempfile.NamedTemporaryFile(suffix=".nii.gz") as upload:  # how MONAI Label saves an uploaded label
        core.check_request_paths({"image": "case_01", "label": upload.name}, [store])
        core.check_request_paths({"image": upload.name}, [store])
    core.check_request_paths({"image": str(store / "lab.nii.gz"), "label": str(store / "lab.nii.gz")}, [store])
    core.check_request_paths({"image": "case_01"}, [None])
    for label in [str(outside), "/etc/passwd", f"{store}/{'../' * 12}etc/passwd", str(store / ".." / "secret.nii.gz")]:
        with pytest.raises(RequestError, match="label"):
            core.check_request_paths({"image": "case_01", "label": label}, [store])
    (store / "link").symlink_to(outside)
    with pytest.raises(RequestError, match="label"):
        core.check_request_paths({"image": "case_01", "label": str(store / "link")}, [store])
    for image in [str(outside), "/etc/passwd"]:
        with pytest.raises(RequestError, match="image"):
            core.check_request_paths({"image": image}, [store])
    with pytest.raises(RequestError, match="label"):
        core.check_request_paths({"image": "case_01", "label": {"_target_": "x"}}, [store])
