"""The monai-siamese MONAI Label app: ``monailabel start_server --app <this folder> --studies <datastore>``.

Serves our bundles from local folders (nothing is downloaded from the model zoo):

- ``/train/<bundle>``: train a generator bundle or the segmentation bundle on the datastore's labelled images;
- ``/infer/segmentation``: the segmentation bundle's label for an image;
- ``/infer/synthesis``: a synthetic image for the image's label (or an edited label sent with the request);
- ``/scoring/generate_pairs``: N synthetic pairs + datalist + manifest, written outside the datastore.

``--conf`` keys: ``models`` (comma-separated bundle names, default ``all``), ``bundles`` (folder holding the
bundles, default the repository's ``bundles/``), ``configs`` (extra config files on top of ``train.json`` /
``inference.json``, e.g. ``demo.json``), ``overrides`` (a JSON file ``{"<bundle>" or "*": {key: value}}`` of
config overrides, e.g. a tiny network: the operator's own, not checked), ``output_dir`` (the root of generated pairs,
outside the datastore: a request's ``output_dir`` must resolve inside it).

Request parameters are data, never config code: :mod:`monai_siamese.monailabel_app.params` lists the config keys a
request's ``overrides`` may set and checks every parameter before anything runs (HTTP 400 naming it otherwise).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import DefaultLabelTag

from monai_siamese.monailabel_app.core import GENERATOR_BUNDLES, check_outside, check_request_paths
from monai_siamese.monailabel_app.tasks import (
    BundleSettings,
    BundleTrainer,
    GeneratePairs,
    SegmentationInfer,
    SynthesisInfer,
    bad_request,
)

logger = logging.getLogger(__name__)

SEGMENTATION = "segmentation"


class MonaiSiameseApp(MONAILabelApp):
    """MONAI Label app serving the monai-siamese bundles (see the module docstring)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        from monai_siamese.bundles import bundles_dir

        root = Path(conf.get("bundles") or bundles_dir()).expanduser().resolve()
        names = [n.strip() for n in conf.get("models", "all").split(",") if n.strip()]
        available = sorted(p.name for p in root.iterdir() if (p / "configs" / "train.json").is_file())
        if not names or names == ["all"]:
            names = available
        missing = [n for n in names if n not in available]
        if missing:
            raise ValueError(f"bundles {missing} not found in {root} (available: {available})")
        configs = [c.strip() for c in conf.get("configs", "").split(",") if c.strip()]
        overrides: dict = {}
        if conf.get("overrides"):
            overrides = json.loads(Path(conf["overrides"]).expanduser().read_text())
        self.bundles = {
            n: BundleSettings(root / n, configs, {**overrides.get("*", {}), **overrides.get(n, {})}) for n in names
        }
        studies_dir = studies.rstrip("/")
        default_out = os.path.join(os.path.dirname(os.path.abspath(studies_dir)), "synthetic_pairs")
        # the root of every folder a batch-generation request writes (requests cannot leave it)
        self.output_dir = str(Path(conf.get("output_dir") or default_out).expanduser().resolve())
        if os.path.isdir(studies_dir):
            check_outside(self.output_dir, studies_dir)
        logger.info(f"monai-siamese app: bundles {names} from {root}; generated pairs go to {self.output_dir}")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="monai-siamese",
            description="Mask-conditioned diffusion: train generators, synthesise image/label pairs",
            version="0.1.0",
        )
        # re-scoring after every saved label would start a batch generation: run it only when asked
        self._auto_update_scoring = False

    def _generators(self) -> dict[str, BundleSettings]:
        return {n: s for n, s in self.bundles.items() if n in GENERATOR_BUNDLES}

    def init_infers(self):
        infers = {}
        if SEGMENTATION in self.bundles:
            infers[SEGMENTATION] = SegmentationInfer(self.bundles[SEGMENTATION])
        if self._generators():
            infers["synthesis"] = SynthesisInfer(self._generators())
        return infers

    def init_trainers(self):
        return {n: BundleTrainer(s, self.conf) for n, s in self.bundles.items()}

    def init_scoring_methods(self):
        if not self._generators():
            return {}
        return {"generate_pairs": GeneratePairs(self._generators(), self.output_dir, self._datastore_dir)}

    def _datastore_dir(self) -> str | None:
        return self.studies if os.path.isdir(self.studies) else None

    def infer(self, request, datastore=None):
        """Synthesis requests: the image's final label from the datastore when none is sent, and the result (an
        image, not a label) is never saved into the datastore. Server paths a request names (``label``, ``image``
        as a path) must lie inside the datastore or the sessions folder, or be this request's upload (HTTP 400
        otherwise)."""
        with bad_request():
            sessions = self.sessions()
            check_request_paths(request, [self._datastore_dir(), sessions.store_path if sessions else None])
        if request.get("model") == "synthesis":
            request = dict(request)
            request["save_label"] = False
            image_id = request.get("image")
            if not request.get("label") and isinstance(image_id, str) and not os.path.exists(image_id):
                ds = datastore or self.datastore()
                label_id = ds.get_label_by_image_id(image_id, DefaultLabelTag.FINAL)
                if label_id:
                    request["label"] = ds.get_label_uri(label_id, DefaultLabelTag.FINAL)
        return super().infer(request, datastore)
