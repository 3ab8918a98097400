"""MONAI Label tasks serving our bundles from local folders (needs the ``monailabel`` package, see
``scripts/setup_monailabel_env.sh``).

- :class:`BundleTrainer`: :class:`monailabel.tasks.train.bundle.BundleTrainTask` for any of our bundles, trained on
  the datastore's labelled images.
- :class:`SegmentationInfer`: the segmentation bundle's prediction for an image, as a label in its geometry.
- :class:`SynthesisInfer`: a synthetic image for an image's label (or an edited label sent with the request).
- :class:`GeneratePairs`: a scoring method that writes N synthetic pairs (datalist + manifest) outside the datastore.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import monai.bundle
import torch
from fastapi import HTTPException
from monailabel.config import settings as monailabel_settings
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.tasks.train.bundle import BundleConstants, BundleTrainTask
from monailabel.utils.others.generic import name_to_device

from monai_siamese.bundles import config_files
from monai_siamese.monailabel_app import core
from monai_siamese.monailabel_app.params import (
    TRAINING_PARAMS,
    RequestError,
    check_device,
    check_gpus,
    check_name,
    check_params,
    request_overrides,
)

__all__ = ["BundleSettings", "BundleTrainer", "SegmentationInfer", "SynthesisInfer", "GeneratePairs"]

logger = logging.getLogger(__name__)


def _first(value: Any) -> Any:
    """A config option shown as a list in MONAI Label's panel comes back as that list when not chosen."""
    return value[0] if isinstance(value, (list, tuple)) and value else value


@contextlib.contextmanager
def bad_request() -> Iterator[None]:
    """A refused request parameter (:class:`~monai_siamese.monailabel_app.params.RequestError`) becomes HTTP 400
    with the message as ``detail``: MONAI Label's endpoints let FastAPI's ``HTTPException`` through (any other
    exception is a bare 500). In a background task (no ``run_sync``) the task ends with status ERROR and the
    message in its log."""
    try:
        yield
    except RequestError as e:
        logger.warning(f"request refused: {e}")
        raise HTTPException(status_code=400, detail=str(e)) from e


def with_device(request: Mapping[str, Any], default: str | None = None) -> dict[str, Any]:
    """``request`` with its ``device`` (a name from MONAI Label's panel, e.g. a GPU model name, or a torch device)
    mapped to a torch device name and checked (``cpu``, ``cuda``, ``cuda:N``)."""
    request = dict(request)
    device = request.get("device") or default
    if device:
        first = _first(device)
        request["device"] = check_device(name_to_device(first) if isinstance(first, str) else first)
    return request


class BundleSettings:
    """Where a served bundle lives and what it runs with: its folder, extra config files applied on top of
    ``train.json`` / ``inference.json`` (e.g. ``demo.json``) and config overrides (e.g. a tiny network).

    Args:
        path: bundle folder.
        configs: extra config file names in ``configs/``.
        overrides: config overrides applied to training and inference.
    """

    def __init__(self, path: str | os.PathLike, configs: Sequence[str] = (), overrides: Mapping | None = None) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.configs = [c for c in configs if (self.path / "configs" / c).is_file()]
        self.overrides = dict(overrides or {})

    def config_files(self, base: str) -> list[str]:
        """Config names (in ``configs/``): the bundle's ``common.json``, ``base``, then the extra configs."""
        return [Path(p).name for p in config_files(self.path, [base, *self.configs])]

    def metadata(self) -> dict:
        return json.loads((self.path / "configs" / "metadata.json").read_text())


class BundleTrainer(BundleTrainTask):
    """MONAI Label's bundle trainer for our bundles, with the property names mapped.

    What :class:`~monailabel.tasks.train.bundle.BundleTrainTask` sets and where it goes in our bundles:

    - ``bundle_root``, ``device``, ``train#trainer#max_epochs``: used as they are; ``num_iterations`` is set to
      ``max_epochs * epoch_length`` so the LR schedule matches the epochs asked for;
    - ``train#dataset#data`` / ``validate#dataset#data`` (the datastore's labelled images, split by ``val_split``):
      written as a datalist file that the bundle's ``datalist`` points to, so data validation, slicing and the
      other datasets of the bundle (validation grids, the MedDiff-FT subset) see the same entries;
    - ``train#handlers`` and MONAI Label's ``CheckpointLoader`` for ``models/model.pt``: not used; our bundles
      resume from their own checkpoints (``ResumeHandler``) and write ``models/model.safetensors`` (generators)
      or ``models/model.pt`` (segmentation).

    Request parameters besides MONAI Label's: ``overrides`` (a JSON object of bundle config overrides, keys of
    :data:`~monai_siamese.monailabel_app.params.TRAINING_OVERRIDES` only). Every parameter that reaches the bundle
    config or the trainer is checked before anything runs (:meth:`check_request`): a refused one is HTTP 400.
    """

    def __init__(self, settings: BundleSettings, conf: Mapping[str, str]) -> None:
        self.settings = settings
        self._request: dict = {}
        self._work: str | None = None
        super().__init__(str(settings.path), dict(conf), const=BundleConstants())
        self.description = f"train the {settings.name} bundle on the datastore's labelled images"

    def config(self) -> dict[str, Any]:
        c = super().config()
        c["device"] = ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]
        c["multi_gpu"] = torch.cuda.device_count() > 1
        c.pop("model_filename", None)
        c.pop("pretrained", None)  # the bundles resume from their own checkpoints (see the class docstring)
        c["overrides"] = "{}"
        return c

    def _load_checkpoint(self, model_pytorch, pretrained, train_handlers) -> None:  # noqa: D401
        """Not used: the bundles resume from their own checkpoints."""

    def check_request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Validate the request (MONAI Label's training parameters and ``overrides``); return it normalised (the
        checked overrides replace ``overrides``).

        Raises:
            RequestError: naming the parameter refused.
        """
        request = with_device(request, "cuda" if torch.cuda.is_available() else "cpu")
        request.update(check_params(request, TRAINING_PARAMS))
        if request.get("gpus"):
            request["gpus"] = check_gpus(request["gpus"])
        uri = request.get("tracking_uri")
        if uri and uri != monailabel_settings.MONAI_LABEL_TRACKING_URI:
            raise RequestError("tracking_uri: where tracking writes is the server's setting, not a request's")
        for key in ("tracking_experiment_name", "tracking_run_name"):
            if request.get(key):
                check_name(key, request[key])
        request["model_filename"] = "model.pt"  # not used (see the class docstring): no request path reaches a loader
        request["run_id"] = request.get("run_id") or "run"
        request["overrides"] = request_overrides(request.get("overrides"), "training")
        return request

    def __call__(self, request, datastore: Datastore):
        with bad_request():
            request = self.check_request(request)
        self._request = request
        self._work = tempfile.mkdtemp(prefix=f"monailabel_{self.settings.name}_")
        try:
            return super().__call__(request, datastore)
        finally:
            shutil.rmtree(self._work, ignore_errors=True)

    def _update_overrides(self, overrides: dict) -> dict:
        train = overrides.pop(self.const.key_train_dataset_data(), [])
        val = overrides.pop(self.const.key_validate_dataset_data(), None) or train[:4]
        overrides.pop(self.const.key_train_handlers(), None)
        path = core.write_request_datalist(Path(self._work) / "datalist.json", train, val)
        overrides.update(self.settings.overrides)
        overrides.update(self._request["overrides"])  # checked in check_request
        overrides["datalist"] = path
        overrides["dataset_dir"] = self._work
        overrides["device"] = str(overrides["device"])
        # the bundles count iterations: max_epochs epochs of epoch_length iterations
        parser = monai.bundle.ConfigParser()
        parser.read_config([str(self.settings.path / "configs" / c) for c in self.settings.config_files("train.json")])
        parser.update({k: v for k, v in overrides.items() if k == "epoch_length"})
        epoch_length = int(parser.get_parsed_content("epoch_length"))
        max_epochs = int(overrides[self.const.key_train_trainer_max_epochs()])
        overrides["num_iterations"] = max_epochs * epoch_length
        logger.info(f"{self.settings.name}: {len(train)} training / {len(val)} validation images, {max_epochs} epochs")
        return overrides

    def run_single_gpu(self, request, overrides) -> None:
        cfg = self.settings.path / "configs"
        monai.bundle.run(
            run_id=request.get("run_id") or "run",
            init_id=None,
            final_id=None,
            meta_file=str(cfg / "metadata.json"),
            config_file=[str(cfg / c) for c in self.settings.config_files("train.json")],
            logging_file=str(cfg / "logging.conf"),
            **overrides,
        )


class SegmentationInfer(InferTask):
    """Segmentation of an image by the segmentation bundle (every slice, pasted back into the image's geometry).

    The bundle is a 2D slice model with its own slicing and inversion, so the task runs the bundle's inference
    workflow instead of :class:`~monailabel.tasks.infer.bundle.BundleInferTask`'s whole-volume transform chain;
    it is valid before the first training (``models/model.pt`` is looked for at each call).
    """

    def __init__(self, settings: BundleSettings) -> None:
        self.settings = settings
        meta = settings.metadata()
        channels = next(iter(meta["network_data_format"]["outputs"].values())).get("channel_def", {})
        labels = {v: int(k) for k, v in channels.items() if v.lower() != "background"}
        super().__init__(InferType.SEGMENTATION, labels, 3, meta.get("description", "segmentation"))

    def is_valid(self) -> bool:
        return True

    def model_path(self) -> Path:
        return self.settings.path / "models" / "model.pt"

    def __call__(self, request) -> tuple[str, dict]:
        if not self.model_path().is_file():
            raise FileNotFoundError(f"{self.model_path()} missing: train '{self.settings.name}' first (/train)")
        with bad_request():
            request = with_device(request)
            req = request_overrides(request.get("overrides"), "segmentation")
        over = dict(self.settings.overrides)
        if request.get("device"):
            over["device"] = request["device"]
        out = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
        result = core.segment(
            self.settings.path,
            request["image"],
            out,
            self.settings.config_files("inference.json"),
            over,
            request_overrides=req,
        )
        return out, {**result, "model": self.settings.name}


class SynthesisInfer(InferTask):
    """A synthetic image for the selected image's label, in the image's geometry (NIfTI).

    The label is the one sent with the request (``label`` upload: an annotator's edit) or the image's final
    label in the datastore. 3D volumes are cut along the bundle's ``slice_axis``: every slice with enough
    foreground is synthesised (or only ``slice_index``) and the slices are put back into the source grid.

    Request parameters: ``method`` (generator bundle), ``samples`` (samples per label; > 1 stacks them on a
    trailing axis), ``seed``, ``slice_index`` (-1: all), ``fill`` (value outside synthesised slices: ``min``,
    ``zero``, ``source``), ``overrides`` (JSON object of bundle config overrides, keys of
    :data:`~monai_siamese.monailabel_app.params.SAMPLING_OVERRIDES`, e.g. ``num_inference_steps``), all checked
    before anything runs (:func:`~monai_siamese.monailabel_app.core.check_synthesis_request`: HTTP 400 when
    refused). The result is never saved into the datastore.
    """

    def __init__(self, generators: Mapping[str, BundleSettings]) -> None:
        self.generators = dict(generators)
        super().__init__(
            InferType.OTHERS,
            None,
            3,
            "synthetic image for the label: " + ", ".join(self.generators),
            config={
                "method": list(self.generators),
                "samples": 1,
                "seed": 0,
                "slice_index": -1,
                "fill": ["min", "zero", "source"],
                "overrides": "{}",
            },
        )

    def is_valid(self) -> bool:
        return bool(self.generators)

    def __call__(self, request) -> tuple[str, dict]:
        with bad_request():
            args = core.check_synthesis_request(with_device(request), list(self.generators))
            label = request.get("label")
            if not label or not os.path.exists(label):
                raise RequestError(
                    f"{request.get('image')}: no label (save a final label or send one with the request)"
                )
        method = args.pop("method")
        settings = self.generators[method]
        model = settings.path / "models" / "model.safetensors"
        if not model.is_file():
            raise FileNotFoundError(f"{model} missing: train '{method}' first (/train/{method})")
        over = dict(settings.overrides)
        if "device" in args:
            over["device"] = args.pop("device")
        out = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
        result = core.synthesize(
            settings.path,
            request["image"],
            label,
            out,
            configs=settings.config_files("inference.json"),
            overrides=over,
            **args,
        )
        return out, result


class GeneratePairs(ScoringMethod):
    """Batch generation: N synthetic pairs from the masks of the datastore's labelled images, written with
    :class:`~monai_siamese.data.SyntheticPairWriter` into a folder outside the datastore (``images/``, ``labels/``,
    ``previews/``, ``datalist.json``, ``manifest.json``), ready for the segmentation bundle's
    ``--synthetic_datalist``.

    Triggered by ``POST /scoring/generate_pairs`` (``?run_sync=true`` to wait) with a JSON body of parameters:
    ``generator`` (the bundle; ``method`` is MONAI Label's name of the scoring method), ``num_pairs``, ``seed``,
    ``output_dir`` (inside the app's ``output_dir`` conf, relative paths relative to it; default
    ``<output_dir>/<generator>``; anything resolving outside it is refused), ``overrides`` (keys of
    :data:`~monai_siamese.monailabel_app.params.SAMPLING_OVERRIDES`). The app turns MONAI Label's automatic
    re-scoring after label saves off, so it only runs when asked.
    """

    def __init__(
        self, generators: Mapping[str, BundleSettings], output_dir: str, datastore_dir: Callable[[], str | None]
    ) -> None:
        super().__init__("write N synthetic pairs (datalist + manifest) outside the datastore")
        self.generators = dict(generators)
        self.output_dir = output_dir
        self.datastore_dir = datastore_dir

    def info(self) -> dict[str, Any]:
        i = super().info()
        i["config"] = {"generator": list(self.generators), "num_pairs": 8, "seed": 0, "output_dir": self.output_dir}
        return i

    def __call__(self, request, datastore: Datastore) -> dict[str, Any]:
        with bad_request():
            # "method" names the scoring method in MONAI Label's request: the generator bundle is "generator"
            args = core.check_pairs_request(with_device(request), list(self.generators))
            settings = self.generators[args["generator"]]
            entries = [{"image": d["image"], "label": d["label"]} for d in datastore.datalist() if d.get("label")]
            over = dict(settings.overrides)
            if "device" in args:
                over["device"] = args["device"]
            result = core.generate_pairs(
                settings.path,
                entries,
                request.get("output_dir") or None,  # inside self.output_dir; default <output_dir>/<generator>
                args["num_pairs"],
                seed=args["seed"],
                configs=settings.config_files("inference.json"),
                overrides=over,
                datastore_dir=self.datastore_dir(),
                output_root=self.output_dir,
                request_overrides=args["request_overrides"],
            )
        logger.info(f"generate_pairs: {result}")
        return result
