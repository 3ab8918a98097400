"""Label handling: 0/255 masks, remaps, thresholds, and errors that name the file and the values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import write_nifti, write_png
from monai.transforms import LoadImaged

from monai_siamese.data import LabelMapd, LabelValueError, map_label_values


def test_binary_255_mask_maps_to_01():
    out = map_label_values(np.array([[0, 255], [255, 0]]), num_classes=2)
    np.testing.assert_array_equal(out, [[0, 1], [1, 0]])


def test_valid_classes_pass_and_explicit_mapping():
    np.testing.assert_array_equal(map_label_values(np.array([0, 1, 3]), 4), [0, 1, 3])
    np.testing.assert_array_equal(map_label_values(np.array([0, 10, 20]), 3, mapping={10: 1, 20: 2}), [0, 1, 2])


def test_threshold_for_lossy_masks():
    np.testing.assert_array_equal(map_label_values(np.array([0, 3, 130, 250]), 2, threshold=127), [0, 0, 1, 1])


def test_unexpected_values_error_names_file_and_values(tmp_path):
    path = write_nifti(tmp_path / "case7_label.nii.gz", np.array([[0, 7], [0, 0]], dtype=np.uint8)[..., None])
    d = LoadImaged("label", image_only=True, ensure_channel_first=True)({"label": path})
    with pytest.raises(LabelValueError) as e:
        LabelMapd("label", num_classes=4)(d)
    msg = str(e.value)
    assert "case7_label.nii.gz" in msg and "{0, 7}" in msg and "0..3" in msg


def test_mapping_leaves_unknown_values_as_errors():
    with pytest.raises(LabelValueError, match=r"\{9\}"):
        map_label_values(np.array([0, 10, 9]), 3, mapping={10: 1})


def test_rgb_mask_png_reduced_to_one_channel(tmp_path):
    m = np.zeros((8, 6, 3), np.uint8)
    m[2:4, 1:3] = 255
    d = LoadImaged("label", image_only=True, ensure_channel_first=True)({"label": write_png(tmp_path / "m.png", m)})
    out = LabelMapd("label", num_classes=2)(d)["label"]
    assert out.shape == (1, 8, 6) and out.dtype == torch.int64 and int(out.sum()) == 4
