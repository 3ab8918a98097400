"""MONAI Label tasks serving our bundles from local folders (needs the ``monailabel`` package, see
``scripts/setup_monailabel_env.sh``).

- :class:`BundleTrainer`: :class:`monailabel.tasks.train.bundle.BundleTrainTask` for any of our bundles, trained on
  the datastore's labelled images.
- :class:`SegmentationInfer`: the segmentation bundle's prediction for an image, as a label in its geometry.
- :class:`SynthesisInfer`: a synthetic image for an image's label (or an edited label sent with the request).
- :class:`GeneratePairs`: a scoring method that writes N synthetic pairs (datalist + manifest) outside the datastore.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import monai.bundle
import torch
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.tasks.train.bundle import BundleConstants, BundleTrainTask

from monai_siamese.monailabel_app import core

__all__ = ["BundleSettings", "BundleTrainer", "SegmentationInfer", "SynthesisInfer", "GeneratePairs"]

logger = logging.getLogger(__name__)


def _first(value: Any) -> Any:
    """A config option shown as a list in MONAI Label's panel comes back as that list when not chosen."""
    return value[0] if isinstance(value, (list, tuple)) and value else value


def _json_param(value: Any) -> dict:
    if value in (None, "", {}):
        return {}
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"'overrides' must be a JSON object, got {value!r}")
    return dict(value)


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
        return [base, *self.configs]

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

    Request parameters besides MONAI Label's: ``overrides`` (a JSON object of bundle config overrides).
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

    def __call__(self, request, datastore: Datastore):
        request = dict(request)
        request.setdefault("device", "cuda" if torch.cuda.is_available() else "cpu")
        request["device"] = _first(request["device"])
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
        overrides.update(_json_param(self._request.get("overrides")))
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
            run_id=request.get("run_id", "run"),
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
        out = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
        over = {**self.settings.overrides, **_json_param(request.get("overrides"))}
        if request.get("device"):
            over["device"] = str(_first(request["device"]))
        result = core.segment(
            self.settings.path, request["image"], out, self.settings.config_files("inference.json"), over
        )
        return out, {**result, "model": self.settings.name}


class SynthesisInfer(InferTask):
    """A synthetic image for the selected image's label, in the image's geometry (NIfTI).

    The label is the one sent with the request (``label`` upload: an annotator's edit) or the image's final
    label in the datastore. 3D volumes are cut along the bundle's ``slice_axis``: every slice with enough
    foreground is synthesised (or only ``slice_index``) and the slices are put back into the source grid.

    Request parameters: ``method`` (generator bundle), ``samples`` (samples per label; > 1 stacks them on a
    trailing axis), ``seed``, ``slice_index`` (-1: all), ``fill`` (value outside synthesised slices: ``min``,
    ``zero``, ``source``), ``overrides`` (JSON object of bundle config overrides, e.g. ``num_inference_steps``).
    The result is never saved into the datastore.
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
        method = str(_first(request.get("method") or next(iter(self.generators))))
        if method not in self.generators:
            raise ValueError(f"unknown method {method!r}: one of {list(self.generators)}")
        settings = self.generators[method]
        label = request.get("label")
        if not label or not os.path.exists(label):
            raise ValueError(f"{request.get('image')}: no label (save a final label or send one with the request)")
        model = settings.path / "models" / "model.safetensors"
        if not model.is_file():
            raise FileNotFoundError(f"{model} missing: train '{method}' first (/train/{method})")
        over = {**settings.overrides, **_json_param(request.get("overrides"))}
        if request.get("device"):
            over["device"] = str(_first(request["device"]))
        sl = int(request.get("slice_index", -1))
        out = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
        result = core.synthesize(
            settings.path,
            request["image"],
            label,
            out,
            samples=int(request.get("samples", 1)),
            seed=int(request.get("seed", 0)),
            slice_index=None if sl < 0 else sl,
            configs=settings.config_files("inference.json"),
            overrides=over,
            fill=str(_first(request.get("fill", "min"))),
        )
        return out, result


class GeneratePairs(ScoringMethod):
    """Batch generation: N synthetic pairs from the masks of the datastore's labelled images, written with
    :class:`~monai_siamese.data.SyntheticPairWriter` into a folder outside the datastore (``images/``, ``labels/``,
    ``previews/``, ``datalist.json``, ``manifest.json``), ready for the segmentation bundle's
    ``--synthetic_datalist``.

    Triggered by ``POST /scoring/generate_pairs`` (``?run_sync=true`` to wait) with a JSON body of parameters:
    ``generator`` (the bundle; ``method`` is MONAI Label's name of the scoring method), ``num_pairs``, ``seed``,
    ``output_dir`` (default: the app's ``output_dir`` conf /
    ``<method>``), ``overrides``. The app turns MONAI Label's automatic re-scoring after label saves off, so it
    only runs when asked.
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
        # "method" names the scoring method in MONAI Label's request: the generator bundle is "generator"
        method = str(_first(request.get("generator") or next(iter(self.generators))))
        if method not in self.generators:
            raise ValueError(f"unknown generator {method!r}: one of {list(self.generators)}")
        settings = self.generators[method]
        entries = [{"image": d["image"], "label": d["label"]} for d in datastore.datalist() if d.get("label")]
        out = request.get("output_dir") or os.path.join(self.output_dir, method)
        over = {**settings.overrides, **_json_param(request.get("overrides"))}
        if request.get("device"):
            over["device"] = str(_first(request["device"]))
        result = core.generate_pairs(
            settings.path,
            entries,
            out,
            int(request.get("num_pairs", 8)),
            seed=int(request.get("seed", 0)),
            configs=settings.config_files("inference.json"),
            overrides=over,
            datastore_dir=self.datastore_dir(),
        )
        logger.info(f"generate_pairs: {result}")
        return result
