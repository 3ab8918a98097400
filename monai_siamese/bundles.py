"""The bundle registry: which bundles this package ships, what each one is (a generator or the segmentation bundle,
the generator it fine-tunes, the config ids of its networks), and how to run one in-process.

Adding a method = a bundle folder under ``bundles/`` and one :class:`BundleSpec` entry in :data:`REGISTRY` (see
DEVELOPERS.md). The override keys every generator bundle must accept are data, not prose:
``bundles/generator_properties.json`` (a MONAI bundle properties file, checked for every generator in the tests and
by :func:`check_bundle`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

__all__ = [
    "BundleKind",
    "BundleSpec",
    "REGISTRY",
    "GENERATORS",
    "SEGMENTATION",
    "COMMON_CONFIG",
    "bundles_dir",
    "bundle_path",
    "spec",
    "base_of",
    "config_files",
    "bundle_version",
    "folder_overrides",
    "read_config",
    "generator_properties_path",
    "discover_generators",
    "check_bundle",
    "missing_properties",
    "run_bundle",
    "generate_volumes",
]

#: the config every bundle's other configs are deltas over (model-zoo stacking)
COMMON_CONFIG = "common.json"


class BundleKind(str, Enum):
    """What a bundle does."""

    GENERATOR = "generator"  # trains a mask-conditioned generator and writes synthetic pairs
    SEGMENTATION = "segmentation"  # the downstream segmentation model (also the judge of generated pairs)


@dataclass(frozen=True)
class BundleSpec:
    """One bundle of this package.

    Args:
        name: bundle folder name under ``bundles/``.
        kind: :class:`BundleKind`.
        base: a generator this one fine-tunes: it is trained first on the same data and passed as
            ``pretrained_key`` (MedDiff-FT fine-tunes the segmentation-guided model).
        pretrained_key: the override that takes the weights file of a generator this one starts from (its ``base``,
            or a warm start chosen by the evaluation: ``EvaluationConfig.warm_starts``).
        network_keys: config ids of the network definitions (where size overrides go, e.g. ``network_def#channels``).
        description: one line for help texts.
    """

    name: str
    kind: BundleKind = BundleKind.GENERATOR
    base: str | None = None
    pretrained_key: str = "pretrained_path"
    network_keys: tuple[str, ...] = ("network_def",)
    description: str = ""


#: every bundle of this package, by name
REGISTRY: dict[str, BundleSpec] = {
    s.name: s
    for s in (
        BundleSpec("seg_guided_diffusion", description="segmentation-guided diffusion (Konz et al., 2402.05210)"),
        BundleSpec(
            "siamese_diffusion",
            pretrained_key="pretrained_unet",
            network_keys=("unet_def",),
            description="Siamese-Diffusion with noise consistency (Qiu et al., 2505.06068)",
        ),
        BundleSpec(
            "meddiff_ft",
            base="seg_guided_diffusion",
            description="MedDiff-FT fine-tuning, mask generation and quality filtering (Xie et al., 2025)",
        ),
        BundleSpec("segmentation", kind=BundleKind.SEGMENTATION, description="MONAI 2D UNet segmentation"),
    )
}
#: the generator bundles, in registry order
GENERATORS: tuple[str, ...] = tuple(n for n, s in REGISTRY.items() if s.kind == BundleKind.GENERATOR)
#: the segmentation bundle
SEGMENTATION = "segmentation"


def bundles_dir() -> Path:
    """The ``bundles/`` folder (``$MONAI_SIAMESE_BUNDLES`` or the one beside the package)."""
    env = os.environ.get("MONAI_SIAMESE_BUNDLES")
    if env:
        return Path(env)
    from monai_siamese.utils import repo_root

    return repo_root() / "bundles"


def bundle_path(name: str | os.PathLike) -> Path:
    """The folder of bundle ``name`` (a registry name, or a path to a bundle folder)."""
    p = Path(name)
    if p.is_dir():
        return p
    return bundles_dir() / str(name)


def spec(name: str | os.PathLike) -> BundleSpec:
    """The registry entry of a bundle (by name or folder); bundles outside the registry are generators with
    the default network key."""
    key = Path(name).name
    return REGISTRY.get(key, BundleSpec(key))


def base_of(name: str | os.PathLike) -> str | None:
    """The generator that ``name`` fine-tunes, or None."""
    return spec(name).base


def config_files(bundle: str | os.PathLike, configs: Sequence[str]) -> list[str]:
    """Paths of ``configs`` (names relative to the bundle's ``configs/`` folder, or paths), with the bundle's
    ``common.json`` first when it has one and ``configs`` do not list it."""
    folder = bundle_path(bundle) / "configs"
    names = [str(c) for c in configs]
    if (folder / COMMON_CONFIG).is_file() and COMMON_CONFIG not in [Path(c).name for c in names]:
        names = [COMMON_CONFIG, *names]
    return [c if os.path.isabs(c) else str(folder / c) for c in names]


def bundle_version(bundle: str | os.PathLike) -> str | None:
    """The ``version`` of a bundle's ``configs/metadata.json`` (None without one): what changes when the bundle's
    behaviour does (each version has its changelog entry)."""
    meta = bundle_path(bundle) / "configs" / "metadata.json"
    if not meta.is_file():
        return None
    return json.loads(meta.read_text()).get("version")


def read_config(bundle: str | os.PathLike, configs: Sequence[str], overrides: Mapping[str, Any] | None = None) -> Any:
    """The merged (unparsed) config of ``configs`` of a bundle, ``common.json`` first, with ``overrides``: a
    ``monai.bundle.ConfigParser`` to read settings from (``parser.get("spatial_size")``)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files(bundle, configs))
    parser.update(dict(overrides or {}))
    return parser


def folder_overrides(folder: str | os.PathLike, samples: bool = True) -> dict[str, str]:
    """Overrides that send a training run's outputs into ``folder``: ``models/``, ``logs/`` (and ``samples/``)."""
    folder = Path(folder)
    out = {"ckpt_dir": str(folder / "models"), "log_dir": str(folder / "logs")}
    if samples:
        out["sample_dir"] = str(folder / "samples")
    return out


def generator_properties_path() -> Path:
    """The MONAI properties file listing the ids every generator bundle must define (``train`` and ``infer``)."""
    return bundles_dir() / "generator_properties.json"


def discover_generators(root: str | os.PathLike | None = None) -> list[str]:
    """Generator bundles under ``root`` (default :func:`bundles_dir`): folders with ``configs/train.json`` and
    ``configs/inference.json`` that are not the segmentation bundle; registry order first, then by name."""
    root = Path(root) if root is not None else bundles_dir()
    found = []
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        if not p.is_dir() or spec(p.name).kind != BundleKind.GENERATOR:
            continue
        if (p / "configs" / "train.json").is_file() and (p / "configs" / "inference.json").is_file():
            found.append(p.name)
    order = {n: i for i, n in enumerate(GENERATORS)}
    return sorted(found, key=lambda n: (order.get(n, len(order)), n))


def check_bundle(bundle: str | os.PathLike, configs: Sequence[str] = ("train.json", "inference.json")) -> None:
    """Raise ``FileNotFoundError`` naming what is missing when ``bundle`` lacks a config."""
    missing = [c for c in configs if not (bundle_path(bundle) / "configs" / c).is_file()]
    if missing:
        raise FileNotFoundError(f"{bundle}: bundle lacks configs/{', configs/'.join(missing)}")


def missing_properties(
    bundle: str | os.PathLike,
    workflow_type: str = "train",
    configs: Sequence[str] | None = None,
    properties: str | os.PathLike | None = None,
) -> list[str]:
    """The properties of ``workflow_type`` (``train`` or ``infer``) in the properties file (default
    :func:`generator_properties_path`) whose config id the bundle's merged configs lack: ``[]`` when the bundle keeps
    the contract. Only the ids are looked up (nothing is instantiated), so this is cheap enough for every bundle."""
    import json

    props = json.loads(Path(properties or generator_properties_path()).read_text())
    wanted = {**props.get(workflow_type, {}), **props.get("meta", {})}
    if configs is None:
        configs = ["train.json"] if workflow_type == "train" else ["inference.json"]
    parser = read_config(bundle, configs)
    parser.read_meta(str(bundle_path(bundle) / "configs" / "metadata.json"))
    return [name for name, p in wanted.items() if p.get("required") and p["id"] not in parser]


def run_bundle(
    bundle: str | os.PathLike,
    configs: Sequence[str],
    run_id: str = "run",
    workflow_type: str = "train",
    overrides: Mapping[str, Any] | None = None,
) -> Any:
    """Run a bundle workflow in-process through ``monai.bundle.ConfigWorkflow`` (what ``python -m monai.bundle run``
    does), with ``configs`` named relative to the bundle's ``configs/`` folder (``common.json`` is prepended).

    Args:
        bundle: bundle folder or registry name.
        configs: config files, e.g. ``["train.json", "demo.json"]``.
        run_id: the expression list to run (``run``, ``training``, ``inference``...).
        workflow_type: ``train`` or ``infer``.
        overrides: config overrides (``{"num_iterations": 10, "network_def#channels": [8, 16]}``).
    """
    from monai.bundle import ConfigWorkflow

    bundle = bundle_path(bundle)
    wf = ConfigWorkflow(
        config_file=config_files(bundle, configs),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        run_id=run_id,
        bundle_root=str(bundle),
        **dict(overrides or {}),
    )
    wf.initialize()
    try:
        return wf.run()
    finally:
        wf.finalize()


def generate_volumes(
    bundle: str | os.PathLike,
    labels: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    configs: Sequence[str] = ("inference.json",),
    overrides: Mapping[str, Any] | None = None,
    images: Sequence[str | os.PathLike] | None = None,
) -> Any:
    """Whole synthetic volumes from 3D label maps with a trained generator bundle (its ``volume`` run, a
    :class:`~monai_siamese.inferers.VolumeGenerator`): each label's NIfTI volume is written to ``out`` with the
    label's affine and shape, plus the label copy and a 3D datalist (``out/datalist.json``).

    Args:
        bundle: bundle name or folder.
        labels: label volume files.
        out: output folder.
        configs: the bundle's sampling configs (add those the model was trained with, e.g. ``demo.json``,
            ``context.json``; a mismatch stops with one line naming the keys).
        overrides: further overrides (``ckpt_dir``, ``seed``, ``volume_mode``, ``volumes_per_label``...).
        images: one canvas image volume per label, on the label's grid (``meddiff_ft`` inpaints into it; for the
            other generators it only sets the output's intensity range, as in training).
    """
    from monai_siamese.data.datalist import write_datalist
    from monai_siamese.errors import InputError

    out = Path(out).resolve()
    images = list(images or [])
    missing = [str(p) for p in [*labels, *images] if not Path(p).is_file()]
    if missing:
        raise InputError(f"{', '.join(missing)}: file not found")
    if images and len(images) != len(labels):
        raise InputError(f"{len(images)} images for {len(labels)} labels: give one canvas image per label")
    entries = [
        {"label": str(Path(p).resolve()), **({"image": str(Path(images[i]).resolve())} if images else {})}
        for i, p in enumerate(labels)
    ]
    datalist = write_datalist(out / "labels_to_generate.json", {"masks": entries}, relative=False)
    over = {"volume_datalist": datalist, "volume_split": "masks", "output_dir": str(out), **dict(overrides or {})}
    return run_bundle(bundle, configs, "volume", "infer", over)
