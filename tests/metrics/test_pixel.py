"""Pixel error: F-score conventions, pooling and the plain error rate."""

import numpy as np
import pytest

from unet_core.metrics import pixel_error, pixel_error_rate
from unet_core.metrics._pixel import f_score, pixel_counts


def test_counts_use_strictly_greater_than_threshold():
    prob = np.array([0.5, 0.6, 0.5, 0.4])
    foreground = np.array([True, True, False, False])
    assert pixel_counts(prob, foreground, [0.5]).tolist() == [[1, 0, 1, 2]]


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ([3, 0, 1, 5], 2 * 1.0 * 0.75 / 1.75),  # no FP: precision 1
        ([3, 1, 0, 5], 2 * 0.75 * 1.0 / 1.75),  # no FN: recall 1
        ([0, 0, 4, 5], 0.0),  # nothing predicted as cell: P = 1, R = 0
        ([0, 2, 0, 5], 0.0),  # no cell in GT, two false cells: P = 0, R = 1
        ([0, 2, 3, 5], 0.0),  # P = R = 0
    ],
)
def test_f_score_conventions(counts, expected):
    assert f_score(np.array(counts)) == pytest.approx(expected)


def test_pixel_error_pools_counts_over_slices():
    labels = np.array([[[1, 1, 0, 0]], [[1, 0, 0, 0]]])
    prob = np.array([[[0.9, 0.9, 0.9, 0.1]], [[0.1, 0.1, 0.1, 0.1]]])
    error, threshold = pixel_error(prob, labels, thresholds=[0.5])
    tp, fp, fn = 2, 1, 1  # pooled; the mean of per-slice errors would differ
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert error == pytest.approx(1 - 2 * precision * recall / (precision + recall))
    assert threshold == 0.5


def test_pixel_error_picks_the_best_threshold():
    labels = np.array([[1, 1, 0, 0]])
    prob = np.array([[0.75, 0.65, 0.6, 0.2]])
    assert pixel_error(prob, labels) == (0.0, 0.6)


def test_pixel_error_rate_counts_both_kinds_of_error():
    labels = np.array([[255, 255, 0, 0]], np.uint8)
    prob = np.array([[0.9, 0.4, 0.7, 0.1]])
    assert pixel_error_rate(prob, labels) == 0.5
    assert pixel_error_rate(prob, labels, threshold=0.8) == 0.25
