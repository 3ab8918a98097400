"""Settings of the downstream evaluation: presets (``demo``, ``full``, ``micro``) and the arms they compare (each
generator with each mask source and each selection of its pairs)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from monai_siamese.errors import InputError

__all__ = [
    "REAL_ARM",
    "CLI_OPTIONS",
    "Preset",
    "Selection",
    "Arm",
    "EvaluationConfig",
    "source_tag",
    "synthetic_arms",
    "preset_config",
]

#: name of the real-only arm
REAL_ARM = "real"

#: settings that ``python -m monai_siamese evaluate`` takes as options: (name, type, help); ``ints``/``names`` are
#: comma-separated lists
CLI_OPTIONS = (
    ("datalist", str, "real datalist with the pool and test splits (default: the demo data)"),
    ("dataset_dir", str, "base folder of relative paths"),
    ("num_classes", int, "classes including background"),
    ("regimes", "ints", "numbers of real training slices, e.g. 4,8"),
    ("seeds", "ints", "segmentation seeds, e.g. 0,1,2"),
    ("draws", "ints", "slice-draw seeds, e.g. 0,1"),
    ("methods", "names", "generator bundles (default: every one under bundles/)"),
    ("seg_iterations", int, "segmentation iterations (every arm)"),
    ("seg_batch_size", int, "segmentation batch size"),
    ("seg_spatial_size", int, "segmentation input size"),
    ("gen_iterations", int, "generator training iterations"),
    ("synthetic_ratio", float, "synthetic fraction of every batch"),
    ("synthetic_until", float, "synthetic items only in this first fraction of the segmentation run (1: all of it)"),
    ("samples_per_mask", int, "synthetic samples per conditioning mask"),
    (
        "mask_sources",
        "sources",
        "';'-separated mask sources: regime, augmented, generated, interpolated, mixtures "
        "'augmented:0.5,interpolated:0.5', or datalist (the masks of --mask_datalist)",
    ),
    ("selections", "names", "pair selections per synthetic set: none, filter, select"),
    ("mask_datalist", str, "datalist of the 'datalist' mask source"),
    ("mask_split", str, "its split"),
    ("test_split", str, "held-out real split"),
    ("inception_weights", str, "local TorchScript Inception file for an Inception FID"),
    ("device", str, "device (default: cuda when available)"),
    ("workers", int, "processes for independent steps (default: the CPU cores, at most 4)"),
)


class Preset(str, Enum):
    """Named settings of ``python -m monai_siamese evaluate``."""

    DEMO = "demo"  # the whole protocol on the demo data, 2 CPU cores (1 h 54 min: docs/results/eval_demo_fresh)
    FULL = "full"  # GPU: 5 seeds, 1800-iteration segmentation, the generators' full train.json
    MICRO = "micro"  # plumbing check for tests: a few iterations, one seed, one regime


class Selection(str, Enum):
    """Which synthetic pairs of a set a segmentation arm trains on (scored by the regime's real-only segmenter, so
    no more real data is used than the regime's N pairs)."""

    NONE = "none"  # every pair
    FILTER = "filter"  # pairs whose faithfulness Dice >= selection_dice
    SELECT = "select"  # of those, the selection_fraction with the highest segmenter loss (faithful but informative)


#: the mask source that reads a user datalist of masks (``mask_datalist``, split ``mask_split``)
DATALIST_SOURCE = "datalist"


def source_tag(source: str) -> str:
    """A file-name-safe tag of a mask source or mixture (``augmented:0.5,interpolated:0.5`` ->
    ``augmented50+interpolated50``)."""
    parts = []
    for item in str(source).replace(" ", "").split(","):
        name, _, weight = item.partition(":")
        parts.append(f"{name}{round(float(weight) * 100)}" if weight else name)
    return re.sub(r"[^A-Za-z0-9_+]", "_", "+".join(parts))


@dataclass(frozen=True)
class Arm:
    """One arm of the comparison: real only, or real + the pairs of ``method`` on ``mask_source`` masks after
    ``selection``."""

    method: str | None = None
    mask_source: str = "regime"
    selection: str = Selection.NONE.value

    @property
    def name(self) -> str:
        if self.method is None:
            return REAL_ARM
        name = f"{self.method}@{source_tag(self.mask_source)}"
        return name if self.selection == Selection.NONE.value else f"{name}+{self.selection}"

    @property
    def label(self) -> str:
        """How reports name the arm."""
        if self.method is None:
            return "real"
        sel = "" if self.selection == Selection.NONE.value else f", {self.selection}"
        return f"real + {self.method} ({self.mask_source}{sel})"

    @property
    def set_name(self) -> str:
        """The synthetic set the arm draws from (method and mask source)."""
        return f"{self.method}@{source_tag(self.mask_source)}"


class ConfigError(InputError, ValueError):
    """An evaluation setting that does not exist or cannot be used."""


@dataclass
class EvaluationConfig:
    """All settings of one evaluation (see ``docs`` in ``monai_siamese/evaluation/__init__.py``).

    Args:
        preset: the preset these settings started from.
        datalist: the real datalist (None: the demo data).
        dataset_dir: base folder of relative paths.
        num_classes: classes including background.
        class_names: names of the classes (default: the datalist's ``labels``).
        pool_split: split the N real slices are drawn from (and the judge segmenter trains on).
        val_split: validation split of the judge segmenter.
        test_split: held-out real split that no generator sees.
        regimes: numbers of real training slices N.
        seeds: seeds of the segmentation runs (weights, augmentation, batch draws), shared by every arm.
        draws: seeds of the slice draws. None: one draw per seed (draw seed = training seed), each with its own
            generator. A list: every training seed runs on every draw; a generator is trained once per regime and
            draw (cheaper: the demo preset uses one draw and three training seeds).
        methods: generator bundle names (None: every generator bundle under ``bundles_dir``).
        bundles_dir: folder of the bundles (None: the repository's ``bundles/``).
        segmentation_bundle: name of the segmentation bundle.
        seg_configs: segmentation bundle config files.
        seg_iterations: segmentation iterations, the same for every arm.
        seg_batch_size: segmentation batch size.
        seg_spatial_size: segmentation input size.
        seg_overrides: further segmentation overrides.
        synthetic_ratio: fraction of every batch that is synthetic in the real + synthetic arms.
        synthetic_until: the synthetic items are in the batches of this first fraction of the segmentation run only
            (a synthetic phase, then real only; 1: the whole run): :class:`~monai_siamese.data.MixedBatchSampler`.
        judge_iterations: iterations of the judge segmenter (trained on the whole pool; default seg_iterations).
        gen_train_configs: generator training config files.
        gen_infer_configs: generator sampling config files.
        gen_iterations: generator training iterations per regime and seed (None: the config's).
        finetune_iterations: iterations of generators that fine-tune a base generator (MedDiff-FT, and the
            ``warm_starts``; None: the config's). The base generator is trained first on the same N pairs, with
            ``gen_iterations``.
        warm_starts: generators that start from another generator of the same regime and draw instead of from
            scratch, ``{method: base method}`` (both in ``methods``): e.g. ``{"siamese_diffusion":
            "seg_guided_diffusion"}``, Siamese-Diffusion's recipe (a ControlNet and the decoder trained on a
            pretrained UNet) with a UNet trained on the same N pairs. The base's weights go to the method's
            ``BundleSpec.pretrained_key``; MedDiff-FT's base is its bundle's own.
        gen_overrides: further generator training overrides.
        gen_infer_overrides: further generator sampling overrides (``num_inference_steps``...).
        method_overrides: per generator bundle, overrides of its training and sampling on top of the above (the
            bundles name their network settings differently, e.g. ``network_def#channels`` / ``unet_def#channels``).
        samples_per_mask: synthetic pairs per real mask of the regime: samples per mask for the ``regime`` source,
            new masks per real mask (one sample each) for the others, so every set has the same number of pairs.
        mask_sources: the mask sources of every generator (:mod:`monai_siamese.masks`: ``regime``, ``augmented``,
            ``generated``, ``interpolated``, mixtures; ``datalist``: the masks of ``mask_datalist``); each source sees
            only the regime's N masks.
        mask_options: per source, constructor arguments (``{"augmented": {"rotate_degrees": 10}}``).
        selections: selections of the pairs of every non-``regime`` set (:class:`Selection`); ``regime`` sets are used
            as they are.
        selection_methods: the methods whose sets get the selections (None: every method).
        selection_dice: faithfulness threshold of ``filter`` / ``select``.
        selection_fraction: fraction kept by ``select``.
        mask_datalist: datalist of the ``datalist`` mask source.
        mask_split: its split.
        inception_weights: optional local TorchScript Inception file for an Inception FID.
        kid_subsets: KID subsets.
        grid_masks: masks shown per sample grid.
        device: device (None: cuda when available).
        workers: processes for independent steps (trainings of different arms, draws and generators run side by
            side; None: the CPU cores, at most 4).
    """

    preset: str = Preset.DEMO.value
    datalist: str | None = None
    dataset_dir: str | None = None
    num_classes: int = 4
    class_names: list[str] | None = None
    pool_split: str = "training"
    val_split: str = "validation"
    test_split: str = "test"
    regimes: list[int] = field(default_factory=lambda: [4, 8])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    draws: list[int] | None = None
    methods: list[str] | None = None
    bundles_dir: str | None = None
    segmentation_bundle: str = "segmentation"
    seg_configs: list[str] = field(default_factory=lambda: ["train.json", "demo.json"])
    seg_iterations: int = 600
    seg_batch_size: int = 8
    seg_spatial_size: int = 128
    seg_overrides: dict[str, Any] = field(default_factory=dict)
    synthetic_ratio: float = 0.25
    synthetic_until: float = 1.0
    judge_iterations: int | None = None
    gen_train_configs: list[str] = field(default_factory=lambda: ["train.json", "demo.json"])
    gen_infer_configs: list[str] = field(default_factory=lambda: ["inference.json", "demo.json"])
    gen_iterations: int | None = 300
    finetune_iterations: int | None = None
    warm_starts: dict[str, str] = field(default_factory=dict)
    gen_overrides: dict[str, Any] = field(default_factory=dict)
    gen_infer_overrides: dict[str, Any] = field(default_factory=dict)
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples_per_mask: int = 4
    mask_sources: list[str] = field(default_factory=lambda: ["regime"])
    mask_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    selections: list[str] = field(default_factory=lambda: [Selection.NONE.value])
    selection_methods: list[str] | None = None
    selection_dice: float = 0.7
    selection_fraction: float = 0.5
    mask_datalist: str | None = None
    mask_split: str = "training"
    inception_weights: str | None = None
    kid_subsets: int = 100
    grid_masks: int = 4
    device: str | None = None
    workers: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def update(self, values: Mapping[str, Any]) -> EvaluationConfig:
        """A copy with ``values`` replaced (unknown names are an error)."""
        names = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(values) - names)
        if bad:
            raise ConfigError(f"unknown evaluation setting(s) {bad}; known: {sorted(names)}")
        return dataclasses.replace(self, **dict(values))


def synthetic_arms(cfg: EvaluationConfig) -> list[Arm]:
    """Every real + synthetic arm of ``cfg``: each method with each mask source (as sampled), and for the
    non-``regime`` sources of the selection methods each further selection."""
    arms = []
    for method in cfg.methods or []:
        for source in cfg.mask_sources:
            arms.append(Arm(method, source))
            if source in ("regime", DATALIST_SOURCE):
                continue
            if cfg.selection_methods is not None and method not in cfg.selection_methods:
                continue
            arms += [Arm(method, source, Selection(s).value) for s in cfg.selections if Selection(s) != Selection.NONE]
    return arms


def draw_seeds(cfg: EvaluationConfig) -> list[int]:
    """Seeds of the slice draws (one generator per regime and draw)."""
    return list(cfg.draws) if cfg.draws is not None else list(cfg.seeds)


def training_seeds(cfg: EvaluationConfig, draw: int) -> list[int]:
    """Segmentation seeds run on ``draw``: all seeds, or only the draw's own seed when draws follow the seeds."""
    return list(cfg.seeds) if cfg.draws is not None else [draw]


def draw_tag(num_real: int, draw: int) -> str:
    """Folder name of a regime and draw."""
    return f"N{num_real:03d}_d{draw}"


def run_tag(num_real: int, draw: int, seed: int) -> str:
    """Folder name of a segmentation run."""
    return f"N{num_real:03d}_d{draw}_s{seed}"


#: generators whose demo preset setting is pinned to DDPM v-prediction (Siamese-Diffusion keeps its demo.json's
#: rectified flow, sampled with Euler)
_DDPM_V_METHODS = ("seg_guided_diffusion", "meddiff_ft")
#: segmentation settings of the presets: DESIGN.md's baseline augmentation (flips + affine), the one the calibration
#: measured; the segmentation bundle's photometric augmentation (0.2.0, a default for other scanners) is off here:
#: within 600 iterations it costs the real-only arm 0.01 (N = 4) and 0.03 (N = 8, 6/6 runs) on the demo data
#: (docs/results/eval_demo_preset), and the protocol's baseline stays the measured one
PROTOCOL_SEG_OVERRIDES = {"intensity_prob": 0.0}
#: classifier-free guidance of the demo preset's concat-conditioned generators (trained with 10 % condition dropout):
#: at N = 4 it raised the judge's faithfulness from 0.644-0.701 to 0.697-0.764 on all four generator x draw pairs
#: (docs/results/eval_demo_n4_cfg); Siamese-Diffusion's ControlNet gained nothing from it (0.684 -> 0.673, 0.690 ->
#: 0.681) and samples unguided
DEMO_GUIDANCE_SCALE = 2.0
#: the demo preset's new-mask source. It was half augmented, half interpolated (chosen a priori); `augmented` alone
#: gave pairs at least as useful on the axial test slab (augmented - mixture +0.013 to +0.048 in 5 of 6 method x
#: regime cells: docs/results/mask_source_usefulness) and the same direction on coronal slices of the template, which
#: took no part in that choice (+0.007 and +0.003, 5 of 6 runs each: docs/results/coronal_confirmation); it is also
#: GenSeg's source (Zhang et al. 2025), and interpolated masks' pairs, although more faithful, were the less useful
DEMO_NEW_MASKS = "augmented"


def preset_config(preset: Preset | str) -> EvaluationConfig:
    """The settings of a preset.

    - ``demo``: regimes N = 4 and 8, two slice draws per regime x 3 segmentation seeds (6 paired runs); the
      segmentation bundle at the demo data's native 128 x 128 with its residual units, 600 iterations at batch 8
      (DESIGN.md's calibration, with its flips + affine augmentation: :data:`PROTOCOL_SEG_OVERRIDES`; the judge 900
      iterations on the whole pool), a quarter of every batch synthetic in
      the mixed arms; one generator per regime and draw (its ``demo.json``: 64 x 64, 600 iterations on the draw's N
      pairs, DDPM with v-prediction; Siamese-Diffusion a rectified flow; MedDiff-FT fine-tunes the seg-guided one),
      8 pairs per real mask sampled in 10 steps (DPM-Solver++ (2M); Euler for the flow; classifier-free guidance 2
      for the two concat-conditioned generators: :data:`DEMO_GUIDANCE_SCALE`) and written back on their mask's
      128 x 128 grid (``output_grid`` source: sharp labels); every method on the regime's masks and on new masks
      of the ``augmented`` source (GenSeg's geometric + elastic transforms of the regime's masks:
      :data:`DEMO_NEW_MASKS`). CPU, 2 workers.
    - ``full``: 5 seeds, each with its own draw and generators (the generators' full ``train.json`` and default
      iterations), 8 samples per mask with 50 DDIM steps, segmentation at 128 x 128 for 1800 iterations at batch 8
      (the calibration's setting, residual units). GPU.
    - ``micro``: N = 4, one seed, a few iterations at 32 x 32: checks the plumbing in well under a minute.
    """
    preset = Preset(preset)
    if preset == Preset.DEMO:
        return EvaluationConfig(
            preset=preset.value,
            draws=[0, 1],
            seg_spatial_size=128,
            seg_iterations=600,
            judge_iterations=900,
            gen_iterations=600,
            samples_per_mask=8,
            seg_overrides=dict(PROTOCOL_SEG_OVERRIDES),
            gen_infer_overrides={"sampler": "dpmpp_2m", "num_inference_steps": 10, "output_grid": "source"},
            # the setting measured in docs/results/eval_demo (DDPM with v-prediction); the demo's rectified flow was
            # chosen afterwards from the quality-per-compute study and has not been evaluated downstream yet
            method_overrides={
                **{
                    m: {"objective": "ddpm", "prediction_type": "v_prediction", "guidance_scale": DEMO_GUIDANCE_SCALE}
                    for m in _DDPM_V_METHODS
                },
                # its demo.json trains a rectified flow (x0 prediction gave blurred samples with a dark frame)
                "siamese_diffusion": {"sampler": "euler"},
            },
            mask_sources=["regime", DEMO_NEW_MASKS],
        )
    if preset == Preset.FULL:
        return EvaluationConfig(
            preset=preset.value,
            seeds=[0, 1, 2, 3, 4],
            seg_configs=["train.json", "demo.json"],
            seg_iterations=1800,
            seg_spatial_size=128,
            gen_train_configs=["train.json"],
            gen_infer_configs=["inference.json"],
            gen_iterations=None,
            gen_infer_overrides={"num_inference_steps": 50},
            samples_per_mask=8,
            seg_overrides=dict(PROTOCOL_SEG_OVERRIDES),
        )
    tiny_net = {
        "channels": [8, 16],
        "attention_levels": [False, False],
        "num_res_blocks": 1,
        "num_head_channels": 8,
        "norm_num_groups": 8,
    }
    tiny_concat = {f"network_def#{k}": v for k, v in tiny_net.items()}
    tiny_siamese = {**{f"unet_def#{k}": v for k, v in tiny_net.items()}, "hint_channels": [8]}
    return EvaluationConfig(
        preset=preset.value,
        regimes=[4],
        seeds=[0],
        seg_iterations=4,
        seg_batch_size=4,
        seg_spatial_size=32,
        seg_overrides={"network_def#channels": [8, 16], "network_def#strides": [2], "network_def#num_res_units": 0},
        synthetic_ratio=0.5,
        gen_iterations=2,
        finetune_iterations=2,
        gen_overrides={
            "spatial_size": [32, 32],
            "batch_size": 4,
            "epoch_length": 2,
            "checkpoint_interval": 2,
            "sample_interval": 0,
            "sample_steps": 2,
            "warmup_steps": 1,
            "ema_warmup_iters": 2,
        },
        # the micro run's segmenters are untrained: MedDiff-FT's quality filter would reject every sample
        gen_infer_overrides={"spatial_size": [32, 32], "num_inference_steps": 2, "use_quality_filter": False},
        method_overrides={
            "seg_guided_diffusion": tiny_concat,
            "meddiff_ft": tiny_concat,
            "siamese_diffusion": tiny_siamese,
        },
        samples_per_mask=2,
        mask_sources=["regime", "augmented"],
        selections=["none", "select"],
        selection_dice=0.0,  # untrained segmenters: keep every pair in the filter, select by loss
        kid_subsets=10,
        grid_masks=2,
    )
