"""Data layer: datalists, readers, slicing with geometry, intensity presets, labels, importers, writers, demo."""

from __future__ import annotations

from monai_siamese.data.context import CONTEXT_KEYS, fit_context, slice_context
from monai_siamese.data.datalist import DatalistError, load_datalist, select_entries, write_datalist
from monai_siamese.data.demo import (
    build_demo_data,
    build_demo_volume,
    demo_datalist,
    demo_dir,
    demo_volume_datalist,
    demo_volume_dir,
    demo_volumes,
    ensure_demo_data,
    ensure_demo_volume,
)
from monai_siamese.data.intensity import IntensityPreset, ScaleIntensityPresetd, from_unit_range, to_unit_range
from monai_siamese.data.io import image_shape, save_nifti, save_png_array
from monai_siamese.data.labels import LabelMapd, LabelValueError, map_label_values
from monai_siamese.data.loader import PrefetchDataLoader
from monai_siamese.data.mixing import (
    SYNTHETIC_KEY,
    MixedBatchSampler,
    SyntheticOnlyd,
    load_synthetic_datalists,
    synthetic_per_batch,
    synthetic_phase_batches,
    tag_entries,
)
from monai_siamese.data.pipeline import (
    OrientVolumed,
    build_slice_dataset,
    fit_slice_transform,
    pair_load_transform,
    unfit_slices,
)
from monai_siamese.data.sampling import ResumableBatchSampler, SeededDataset, item_seed
from monai_siamese.data.slicing import SliceDataset, iter_slices, slice_affine
from monai_siamese.data.validate import DataValidationError, Problem, validate_datalist, validate_or_raise
from monai_siamese.data.volume import LabelVolume, SyntheticVolumeWriter, load_label_entries, read_label_volume
from monai_siamese.data.writer import SaveSliceLabeld, SyntheticPairWriter, pair_name, slice_name

__all__ = [
    "LabelVolume",
    "SyntheticVolumeWriter",
    "load_label_entries",
    "read_label_volume",
    "DatalistError",
    "DataValidationError",
    "IntensityPreset",
    "LabelMapd",
    "LabelValueError",
    "MixedBatchSampler",
    "OrientVolumed",
    "PrefetchDataLoader",
    "Problem",
    "SYNTHETIC_KEY",
    "SyntheticOnlyd",
    "ScaleIntensityPresetd",
    "ResumableBatchSampler",
    "SaveSliceLabeld",
    "SeededDataset",
    "SliceDataset",
    "SyntheticPairWriter",
    "CONTEXT_KEYS",
    "build_demo_data",
    "build_demo_volume",
    "demo_volume_datalist",
    "demo_volume_dir",
    "demo_volumes",
    "ensure_demo_volume",
    "fit_context",
    "slice_context",
    "build_slice_dataset",
    "demo_datalist",
    "demo_dir",
    "ensure_demo_data",
    "fit_slice_transform",
    "unfit_slices",
    "from_unit_range",
    "image_shape",
    "item_seed",
    "iter_slices",
    "load_datalist",
    "load_synthetic_datalists",
    "map_label_values",
    "pair_load_transform",
    "pair_name",
    "save_nifti",
    "save_png_array",
    "select_entries",
    "slice_affine",
    "slice_name",
    "synthetic_per_batch",
    "synthetic_phase_batches",
    "tag_entries",
    "to_unit_range",
    "validate_datalist",
    "validate_or_raise",
    "write_datalist",
]
