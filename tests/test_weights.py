"""Tests of unet_core.data.weights: the U-Net paper's loss weight map."""

import math

import numpy as np
import pytest
from scipy import ndimage

from unet_core.data.weights import (
    BORDER_TOLERANCE,
    border_band,
    class_weights,
    instances_from_binary,
    weight_map,
    weight_volume,
)


def _random_instances(seed: int, shape: tuple[int, int], level: float = 0.05) -> np.ndarray:
    """Blobs of smoothed noise: cells of varied size in membrane, sparser as level grows."""
    noise = np.random.default_rng(seed).standard_normal(shape)
    return instances_from_binary(ndimage.gaussian_filter(noise, 2.0) > level)


def _direct_border_term(instances: np.ndarray, *, w0: float, sigma: float) -> np.ndarray:
    """Full-image EDT for every cell, sort, keep terms where d1 + d2 <= band (no shortcuts)."""
    cells = [cell for cell in np.unique(instances) if cell != 0]
    distances = np.sort([ndimage.distance_transform_edt(instances != c) for c in cells], axis=0)
    total = distances[0] + distances[1]
    term = w0 * np.exp(-(total**2) / (2 * sigma**2))
    return term, total


# --- instances_from_binary -------------------------------------------------------------------


def test_instances_from_binary_uses_four_connectivity():
    labels = np.array([[255, 0, 255], [0, 255, 0], [0, 0, 255], [0, 0, 255]], dtype=np.uint8)
    expected = np.array([[1, 0, 2], [0, 3, 0], [0, 0, 4], [0, 0, 4]])
    out = instances_from_binary(labels)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, expected)


def test_instances_from_binary_labels_slices_independently_with_unique_ids():
    plane = np.array([[1, 1, 0, 1]], dtype=bool)
    volume = np.stack([plane, plane, ~plane])
    out = instances_from_binary(volume)
    np.testing.assert_array_equal(out, [[[1, 1, 0, 2]], [[3, 3, 0, 4]], [[0, 0, 5, 0]]])
    assert out.dtype == np.int32


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        (np.zeros(4, dtype=np.uint8), ValueError, r"labels must be 2D or 3D, got shape \(4,\)"),
        (np.zeros((2, 2), dtype=np.float32), TypeError, "integer or bool dtype, got float32"),
        (np.array([[0, -1]]), ValueError, "non-negative .* got minimum -1"),
        ([[0, 1]], TypeError, "labels must be a numpy array, got list"),
    ],
)
def test_instances_from_binary_rejects_bad_input(labels, error, match):
    with pytest.raises(error, match=match):
        instances_from_binary(labels)


# --- class_weights ---------------------------------------------------------------------------


def test_class_weights_balance_the_two_classes():
    labels = np.array([[0, 255, 255, 255]])
    w_membrane, w_cell = class_weights(labels)
    assert w_membrane == pytest.approx(4 / 2)
    assert w_cell == pytest.approx(4 / 6)
    assert w_membrane * 1 == pytest.approx(w_cell * 3)


def test_class_weights_count_instance_ids_as_cell_in_a_volume():
    volume = np.array([[[0, 0], [7, 0]], [[3, 3], [0, 0]]])
    assert class_weights(volume) == pytest.approx((8 / 10, 8 / 6))


def test_class_balance_raises_the_weights_to_its_power():
    labels = np.array([[0, 255, 255, 255]])
    assert class_weights(labels, balance=0.5) == pytest.approx((2**0.5, (2 / 3) ** 0.5))
    assert class_weights(labels, balance=0) == (1.0, 1.0)
    with pytest.raises(ValueError, match=r"class balance must lie in \[0, 1\]"):
        class_weights(labels, balance=-0.1)


@pytest.mark.parametrize("value", [0, 5])
def test_class_weights_are_one_when_a_class_is_absent(value):
    assert class_weights(np.full((3, 3), value)) == (1.0, 1.0)


def test_class_weights_reject_float_labels():
    with pytest.raises(TypeError, match="labels must have an integer or bool dtype"):
        class_weights(np.zeros(3))


# --- border_band -----------------------------------------------------------------------------


def test_border_band_is_where_the_term_reaches_the_tolerance():
    band = border_band(w0=10.0, sigma=5.0)
    assert band == pytest.approx(21.46, abs=0.01)
    assert 10.0 * math.exp(-(band**2) / (2 * 5.0**2)) == pytest.approx(BORDER_TOLERANCE)


def test_border_band_is_zero_when_w0_is_below_tolerance():
    assert border_band(w0=0.0, sigma=5.0) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sigma": 0.0}, "sigma must be a finite number > 0, got 0.0"),
        ({"w0": -1.0}, "w0 must be a finite number >= 0, got -1.0"),
        ({"tol": math.nan}, "tol must be a finite number > 0, got nan"),
    ],
)
def test_border_band_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        border_band(**kwargs)


# --- weight_map ------------------------------------------------------------------------------


def test_weight_map_by_hand_two_cells_three_pixels_apart():
    # Pixel 0: d1 = 0, d2 = 3; pixel 1: 1 and 2; pixel 2: 2 and 1; pixel 3: 3 and 0.
    out = weight_map(np.array([[1, 0, 0, 2]]), class_weight=(1.0, 1.0))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.full((1, 4), 1 + 10 * math.exp(-9 / 50)), rtol=1e-6)


def test_weight_map_single_cell_has_only_class_weights():
    instances = np.zeros((5, 6), dtype=np.int32)
    instances[1:3, 1:4] = 4
    out = weight_map(instances)
    w_membrane, w_cell = class_weights(instances)
    np.testing.assert_allclose(out, np.where(instances > 0, w_cell, w_membrane), rtol=1e-6)


def test_weight_map_without_cells_is_uniform():
    np.testing.assert_array_equal(weight_map(np.zeros((3, 4), dtype=np.uint8)), np.ones((3, 4)))


@pytest.mark.parametrize(("w0", "sigma"), [(10.0, 5.0), (5.0, 2.0)])
def test_weight_map_equals_direct_computation(w0, sigma):
    instances = _random_instances(0, (70, 90), level=0.2)
    assert instances.max() >= 20
    term, total = _direct_border_term(instances, w0=w0, sigma=sigma)
    band = border_band(w0=w0, sigma=sigma)
    balance = (1.5, 0.75)
    expected = np.where(instances > 0, balance[1], balance[0]) + np.where(total <= band, term, 0)
    out = weight_map(instances, w0=w0, sigma=sigma, class_weight=balance)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
    # the truncation drops only terms below the tolerance, and it does drop some here
    untruncated = np.where(instances > 0, balance[1], balance[0]) + term
    assert np.abs(out - untruncated).max() < BORDER_TOLERANCE
    assert np.any((total > band) & (total < np.inf))


def test_weight_map_ignores_id_values_and_a_missing_membrane():
    instances = _random_instances(1, (40, 50))
    reference = weight_map(instances, class_weight=(1.0, 1.0))
    np.testing.assert_array_equal(
        weight_map(instances.astype(np.int64) * 1000 + 7 * (instances > 0), class_weight=(1, 1)),
        reference,
    )
    # a bool mask is one cell (one id), as its uint8 copy
    mask = instances > 0
    np.testing.assert_array_equal(weight_map(mask), weight_map(mask.astype(np.uint8)))
    # two cells touching everywhere along a line: inside each, d2 = distance to the other cell
    halves = np.repeat([[1, 1, 2, 2]], 2, axis=0)
    expected = 1 + 10 * np.exp(-(np.array([[2.0, 1.0, 1.0, 2.0]] * 2) ** 2) / 50)
    np.testing.assert_allclose(weight_map(halves, class_weight=(1, 1)), expected, rtol=1e-6)


def test_weight_map_without_border_term_is_the_class_weights_in_float32():
    instances = _random_instances(3, (20, 30))
    out = weight_map(instances, w0=0.0, class_weight=(1.7, 0.3))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.where(instances > 0, 0.3, 1.7).astype(np.float32))


@pytest.mark.parametrize(
    ("instances", "kwargs", "error", "match"),
    [
        (np.zeros((2, 2, 2), dtype=int), {}, ValueError, "instances must be 2D, got shape"),
        (np.zeros((2, 2)), {}, TypeError, "instances must have an integer or bool dtype"),
        (np.zeros((2, 2), dtype=int), {"class_weight": (1.0,)}, ValueError, "w_membrane, w_cell"),
        (np.zeros((2, 2), dtype=int), {"class_weight": (1, -2)}, ValueError, r"class_weight\[1\]"),
        (np.zeros((2, 2), dtype=int), {"sigma": -1}, ValueError, "sigma must be a finite number"),
    ],
)
def test_weight_map_rejects_bad_input(instances, kwargs, error, match):
    with pytest.raises(error, match=match):
        weight_map(instances, **kwargs)


# --- weight_volume ---------------------------------------------------------------------------


def test_weight_volume_uses_volume_class_weights_and_slice_borders():
    volume = np.stack([_random_instances(2, (30, 40)), np.zeros((30, 40), dtype=np.int32)])
    balance = class_weights(volume)
    assert balance != class_weights(volume[0])
    out = weight_volume(volume, w0=8.0, sigma=3.0)
    assert out.dtype == np.float32
    for z in range(2):
        expected = weight_map(volume[z], w0=8.0, sigma=3.0, class_weight=balance)
        np.testing.assert_array_equal(out[z], expected)


def test_weight_volume_balances_classes_as_far_as_asked():
    volume = np.stack([_random_instances(3, (30, 40)), _random_instances(2, (30, 40))])
    unbalanced = weight_volume(volume, w0=0.0, class_balance=0.0)
    assert np.array_equal(unbalanced, np.ones(volume.shape, np.float32))
    half = weight_volume(volume, w0=0.0, class_balance=0.5)
    w_membrane, w_cell = class_weights(volume, 0.5)
    assert np.allclose(half, np.where(volume > 0, w_cell, w_membrane))


def test_weight_volume_rejects_a_single_slice():
    with pytest.raises(ValueError, match=r"instances must be 3D, got shape \(2, 2\)"):
        weight_volume(np.zeros((2, 2), dtype=int))
