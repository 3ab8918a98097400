"""Explicit geometric transforms: identity, exact flips and shifts, the same grid for mask and image, 2D and 3D."""

from __future__ import annotations

import numpy as np
import pytest

from monai_siamese.masks import GeometricParams, random_geometric_params, warp_image, warp_label


@pytest.mark.parametrize("dims", [2, 3])
def test_identity_flip_and_shift_are_exact(make_nested, dims):
    size = 20 if dims == 3 else 32
    lab = make_nested(size, (size / 2 - 2,) * dims, (7, 5, 3))
    ident = GeometricParams()
    np.testing.assert_array_equal(warp_label(lab, ident, 4), lab)
    np.testing.assert_array_equal(warp_label(lab, GeometricParams(flip=[0]), 4), np.flip(lab, 0))
    shifted = warp_label(lab, GeometricParams(translate=[3 / size] + [0.0] * (dims - 1)), 4)
    np.testing.assert_array_equal(shifted[3:], lab[:-3])
    img = np.random.default_rng(0).random((2, *lab.shape)).astype(np.float32)
    np.testing.assert_allclose(warp_image(img, ident), img, atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_random_transform_moves_mask_and_image_together(make_nested, dims):
    size = 20 if dims == 3 else 40
    lab = make_nested(size, (size / 2,) * dims, (size * 0.3, size * 0.2, size * 0.1))
    params = random_geometric_params(np.random.default_rng(3), dims)
    assert len(params.rotate_degrees) == (1 if dims == 2 else 3)
    assert len(params.shear_degrees) == (2 if dims == 2 else 6)
    out = warp_label(lab, params, 4)
    assert not np.array_equal(out, lab)
    # an image that is the label itself, warped with the same grid, still agrees with the warped label
    img = warp_image(lab[None].astype(np.float32) * 10.0, params)[0]
    agree = np.mean(np.abs(img / 10.0 - out) < 0.5)
    assert agree > 0.97, agree
    # outside the field is the image minimum
    assert img.min() >= -1e-4


def test_scale_and_crop_pad_have_the_documented_direction(make_nested):
    lab = make_nested(48, (24, 24), (10, 6, 3))
    area = (lab > 0).sum()
    bigger = warp_label(lab, GeometricParams(scale=1.2), 4)
    assert 1.3 < (bigger > 0).sum() / area < 1.6  # 1.2 ** 2 = 1.44
    cropped = warp_label(lab, GeometricParams(crop_pad=[[-0.1, -0.1], [-0.1, -0.1]]), 4)  # crop 10 % each side
    assert (cropped > 0).sum() > area * 1.4  # resized back: 1 / 0.8 ** 2 = 1.56
    padded = warp_label(lab, GeometricParams(crop_pad=[[0.1, 0.1], [0.0, 0.0]]), 4)
    assert (padded > 0).sum() < area
