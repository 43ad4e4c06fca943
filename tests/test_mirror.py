"""Tests of unet_core.mirror: the two index folds equal numpy.pad's modes of the same name."""

import doctest

import numpy as np
import pytest

from unet_core import mirror
from unet_core.mirror import reflect_indices, symmetric_indices


def test_symmetric_indices_fold_at_both_borders():
    assert symmetric_indices(np.arange(-3, 6), 4).tolist() == [2, 1, 0, 0, 1, 2, 3, 3, 2]
    assert symmetric_indices(np.arange(-2, 3), 1).tolist() == [0, 0, 0, 0, 0]


def test_reflect_indices_fold_at_both_borders():
    assert reflect_indices(np.arange(-3, 6), 4).tolist() == [3, 2, 1, 0, 1, 2, 3, 2, 1]
    assert reflect_indices(np.arange(-2, 3), 1).tolist() == [0, 0, 0, 0, 0]


def _padded(size: int, start: int, stop: int, mode: str) -> np.ndarray:
    """``np.pad(np.arange(size), ..., mode)`` over the positions ``start..stop-1`` of the unpadded axis."""
    before, after = max(0, -start), max(0, stop - size)
    return np.pad(np.arange(size), (before, after), mode=mode)[start + before : stop + before]


@pytest.mark.parametrize(("fold", "mode"), [(symmetric_indices, "symmetric"), (reflect_indices, "reflect")])
def test_each_fold_equals_numpy_pad_with_its_mode(fold, mode):
    rng = np.random.default_rng(0)
    sizes = [1, 1, 2, 3, *rng.integers(1, 40, 60).tolist()]
    for size in sizes:
        start = int(rng.integers(-25 * size - 50, size))
        stop = int(rng.integers(start + 1, start + 30 * size + 60))
        expected = _padded(size, start, stop, mode)
        periods = 1000 * 2 * size * max(size - 1, 1)  # whole periods of both folds
        for shift in (0, periods, -periods):  # far right or left of the axis folds alike
            index = np.arange(start, stop) + shift
            assert np.array_equal(fold(index, size), expected), (size, start, stop, shift)


@pytest.mark.parametrize("fold", [symmetric_indices, reflect_indices])
@pytest.mark.parametrize("size", [0, -3])
def test_a_fold_needs_an_axis_of_at_least_one(fold, size):
    with pytest.raises(ValueError, match=f"size must be at least 1 .*, got {size}"):
        fold(np.arange(3), size)


def test_docstring_examples():
    failures, tried = doctest.testmod(mirror, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0
    assert failures == 0
