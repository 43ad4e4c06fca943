"""Warping: greedy order, padding, the classification table and topology preservation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi

from unet_core.metrics import MISMATCH_CLASSES, warped_ground_truth, warping_error

CODE = {name: k + 1 for k, name in enumerate(MISMATCH_CLASSES)}


def _classes(labels: np.ndarray, prob: np.ndarray) -> np.ndarray:
    return warped_ground_truth(prob, labels, threshold=0.5)[1]


def _only(classes: np.ndarray, name: str, where: tuple[int, int]) -> None:
    expected = np.zeros_like(classes)
    expected[where] = CODE[name]
    assert np.array_equal(classes, expected)


def test_greedy_order_is_decreasing_distance_to_threshold_then_x_outer_scan():
    """Two anti-diagonal mismatches where flipping either blocks the other.

    Blackening A = (2, 5) or B = (3, 4) alone just grows a membrane blob; blackening both
    would join the two blobs. Fiji lists mismatches x outer, y inner and stable-sorts by
    |p - th|: on a tie B (x = 4) goes first and A is left.
    """
    labels = np.ones((10, 10), np.uint8)
    labels[0:2, 6:8] = 0
    labels[4:6, 2:4] = 0
    a, b = (2, 5), (3, 4)
    prob = (labels > 0).astype(float)
    prob[a] = prob[b] = 0.0
    _only(_classes(labels, prob), "hole_deletion", a)
    prob[a] = 0.3  # A closer to the threshold: B still first
    _only(_classes(labels, prob), "hole_deletion", a)
    prob[a], prob[b] = 0.0, 0.3  # A now strictly first: B is left
    _only(_classes(labels, prob), "hole_deletion", b)


def test_images_are_padded_with_membrane():
    """A corner cell pixel touching the padding may turn to membrane; a central one may not."""
    labels = np.ones((5, 5), np.uint8)
    prob = np.ones((5, 5))
    prob[0, 0] = 0.0
    assert not _classes(labels, prob).any()
    prob[0, 0], prob[2, 2] = 1.0, 0.0
    _only(_classes(labels, prob), "hole_addition", (2, 2))


def test_object_addition_and_deletion():
    membrane = np.zeros((5, 5), np.uint8)
    prob = np.zeros((5, 5))
    prob[2, 2] = 1.0
    _only(_classes(membrane, prob), "object_addition", (2, 2))
    dot = np.zeros((5, 5), np.uint8)
    dot[2, 2] = 1
    _only(_classes(dot, np.zeros((5, 5))), "object_deletion", (2, 2))


def test_hole_deletion_of_a_black_pixel_inside_one_object():
    labels = np.ones((5, 5), np.uint8)
    labels[2, 2] = 0
    _only(_classes(labels, np.ones((5, 5))), "hole_deletion", (2, 2))


def test_closing_a_ring_is_a_hole_addition():
    """A 'C' of cells whose opening the target closes: background + one object, black."""
    labels = np.zeros((7, 7), np.uint8)
    labels[1:6, 1:6] = 1
    labels[2:5, 2:5] = 0
    labels[3, 5] = 0  # the opening
    prob = np.zeros((7, 7))
    prob[1:6, 1:6] = 1.0
    prob[2:5, 2:5] = 0.0
    _only(_classes(labels, prob), "hole_addition", (3, 5))


def test_opening_a_ring_is_a_hole_deletion_not_a_split():
    """Blackening one pixel of a 1-px ring leaves its neighbours connected: no split."""
    labels = np.zeros((7, 7), np.uint8)
    labels[1:6, 1:6] = 1
    labels[2:5, 2:5] = 0
    prob = labels.astype(float)
    prob[3, 5] = 0.0
    _only(_classes(labels, prob), "hole_deletion", (3, 5))


def test_white_pixel_touching_two_objects_is_a_split():
    labels = np.zeros((7, 7), np.uint8)
    labels[1:3, 1:3] = labels[4:6, 4:6] = labels[3, 3] = 1  # dot between two diagonal blobs
    prob = labels.astype(float)
    prob[3, 3] = 0.0
    _only(_classes(labels, prob), "split", (3, 3))


def test_classic_error_counts_every_mismatch_left():
    labels = np.ones((5, 5), np.uint8)
    prob = np.ones((5, 5))
    prob[2, 2] = 0.0
    result = warping_error(prob, labels)
    assert result["hole_addition"] == 1
    assert result["warping_error"] == 0.0
    assert result["warping_error_classic"] == pytest.approx(1 / 25)


def test_minimum_over_thresholds_and_volume_normalisation():
    labels = np.ones((2, 6, 7), np.uint8)
    labels[:, :, 3] = 0
    prob = np.where(labels > 0, 0.95, 0.4)
    prob[0, 2:4, 3] = 0.45  # a gap that opens for thresholds below 0.45
    result = warping_error(prob, labels)
    assert result["threshold"] == 0.5
    assert result["warping_error"] == 0.0
    merged = warping_error(prob, labels, thresholds=[0.42])
    assert (merged["merge"], merged["warping_error"]) == (2, 2 / (2 * 6 * 7))


def _topology(mask: np.ndarray) -> tuple[int, int]:
    padded = np.pad(mask, 1)
    cells = ndi.label(padded, ndi.generate_binary_structure(2, 1))[1]
    membrane = ndi.label(~padded, ndi.generate_binary_structure(2, 2))[1]
    return cells, membrane


@settings(max_examples=60, deadline=None)
@given(
    labels=arrays(np.uint8, (9, 11), elements=st.integers(0, 1)),
    prob=arrays(np.float64, (9, 11), elements=st.floats(0, 1)),
    threshold=st.sampled_from([0.0, 0.3, 0.5, 0.9]),
)
def test_warping_never_changes_the_topology(labels, prob, threshold):
    warped, classes = warped_ground_truth(prob, labels, threshold=threshold)
    assert _topology(warped) == _topology(labels > 0)
    assert np.array_equal(classes != 0, warped != (prob > threshold))
