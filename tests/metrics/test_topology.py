"""Simple-point lookup table and 4-connected labelling against brute force and scipy."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from unet_core.metrics import SIMPLE_POINT_LUT
from unet_core.metrics._topology import is_simple, label4

CROSS = ndi.generate_binary_structure(2, 1)
SQUARE = ndi.generate_binary_structure(2, 2)


def _patch(code: int) -> np.ndarray:
    """3 x 3 patch whose row-major pixel k is bit k of ``code``."""
    return np.array([(code >> k) & 1 for k in range(9)], bool).reshape(3, 3)


def _topology(patch: np.ndarray) -> tuple[int, int]:
    """(# 4-connected white components, # 8-connected black components) of the patch."""
    return ndi.label(patch, CROSS)[1], ndi.label(~patch, SQUARE)[1]


@pytest.mark.parametrize("code", range(512))
def test_lut_matches_brute_force_flip(code):
    """Simple iff flipping the centre keeps both component counts of the 3 x 3 patch."""
    patch = _patch(code)
    flipped = patch.copy()
    flipped[1, 1] = ~flipped[1, 1]
    assert bool(SIMPLE_POINT_LUT[code]) == (_topology(patch) == _topology(flipped))


def test_lut_ignores_the_centre_value():
    assert np.array_equal(SIMPLE_POINT_LUT[:16], SIMPLE_POINT_LUT[16:32])
    codes = np.arange(512)
    assert np.array_equal(SIMPLE_POINT_LUT[codes], SIMPLE_POINT_LUT[codes ^ 16])


@pytest.mark.parametrize(
    ("rows", "simple"),
    [
        (["111", "111", "111"], False),  # interior: blackening punches a hole
        (["000", "000", "000"], False),  # isolated: whitening adds an object
        (["111", "010", "000"], True),  # end of a blob: erodes freely
        (["010", "010", "010"], False),  # 1-px line: cutting splits it
        (["100", "000", "001"], False),  # diagonal whites are separate 4-components
        (["110", "000", "000"], True),  # one white 4-neighbour, black ring connected
    ],
)
def test_hand_checked_configurations(rows, simple):
    code = sum(int(c) << k for k, c in enumerate("".join(rows)))
    assert is_simple(code) is simple
    assert bool(SIMPLE_POINT_LUT[code]) is simple


def test_lut_is_read_only():
    with pytest.raises(ValueError, match="read-only"):
        SIMPLE_POINT_LUT[0] = 1


@pytest.mark.parametrize("seed", range(5))
def test_label4_equals_scipy(seed):
    mask = np.random.default_rng(seed).random((23, 31)) > 0.45
    labels, n = label4(mask.astype(np.uint8))
    expected, n_expected = ndi.label(mask)
    assert n == n_expected
    assert np.array_equal(labels, expected)
