"""Every input error names the parameter, what was expected and what came."""

import numpy as np
import pytest

from unet_core.metrics import (
    evaluation_tables,
    iou_seg,
    isbi_scores,
    pixel_error,
    pixel_error_rate,
    rand_error,
    vrand_vinfo,
    warped_ground_truth,
    warping_error,
)

PROB = np.full((4, 5), 0.5)
LABELS = np.ones((4, 5), np.uint8)
ALL = [
    pixel_error,
    pixel_error_rate,
    rand_error,
    warping_error,
    vrand_vinfo,
    isbi_scores,
    evaluation_tables,
    warped_ground_truth,
]
SWEEPS = [pixel_error, rand_error, warping_error, vrand_vinfo, isbi_scores, evaluation_tables]
THREADED = [rand_error, warping_error, vrand_vinfo, isbi_scores, evaluation_tables]


@pytest.mark.parametrize("metric", ALL)
@pytest.mark.parametrize(
    ("prob", "labels", "error", "match"),
    [
        ([[0.1, 0.2], [0.3]], LABELS, TypeError, "prob must be an array; could not convert"),
        (np.full((4, 5), "a"), LABELS, TypeError, "prob must be a numeric array; got dtype <U1"),
        (np.ones((4, 5), np.uint8), LABELS, TypeError, "prob must be a floating-point.*uint8"),
        (np.ones(5), LABELS, ValueError, r"prob must have shape \(Z, Y, X\).*got shape \(5,\)"),
        (np.ones((0, 5)), LABELS, ValueError, r"prob must not be empty; got shape \(0, 5\)"),
        (np.full((4, 5), np.nan), LABELS, ValueError, "prob must be finite; got 20 NaN"),
        (np.full((4, 5), 2.0), LABELS, ValueError, r"prob must lie in \[0, 1\].*\[2, 2\]"),
        (PROB, np.ones((5, 4)), ValueError, r"labels must have the shape of prob \(4, 5\)"),
        (PROB, np.full((4, 5), np.inf), ValueError, "labels must be finite; got 20"),
        (PROB, -LABELS.astype(int), ValueError, "labels must be >= 0.*got minimum -1"),
        (PROB, np.full((4, 5), "x"), TypeError, "labels must be a numeric array"),
    ],
)
def test_bad_prob_or_labels(metric, prob, labels, error, match):
    with pytest.raises(error, match=match):
        metric(prob, labels)


@pytest.mark.parametrize("metric", [rand_error, vrand_vinfo, isbi_scores, evaluation_tables])
def test_labels_without_cells(metric):
    with pytest.raises(ValueError, match=r"labels has no cell pixel \(> 0\)"):
        metric(PROB, np.zeros((4, 5), np.uint8))


@pytest.mark.parametrize("metric", SWEEPS)
@pytest.mark.parametrize(
    ("thresholds", "error", "match"),
    [
        (["a"], TypeError, "thresholds must be a sequence of numbers"),
        ([], ValueError, "thresholds must be a non-empty 1-D sequence"),
        ([[0.1, 0.2]], ValueError, "thresholds must be a non-empty 1-D sequence"),
        ([0.5, 1.5], ValueError, r"thresholds must lie in \[0, 1\]; got \[0.5, 1.5\]"),
        ([0.5, 0.5], ValueError, "thresholds must be strictly increasing"),
    ],
)
def test_bad_thresholds(metric, thresholds, error, match):
    with pytest.raises(error, match=match):
        metric(PROB, LABELS, thresholds=thresholds)


def test_non_iterable_thresholds():
    with pytest.raises(TypeError, match="thresholds must be a sequence of numbers; got 0.5"):
        pixel_error(PROB, LABELS, thresholds=0.5)


@pytest.mark.parametrize("metric", [pixel_error_rate, warped_ground_truth])
def test_bad_single_threshold(metric):
    with pytest.raises(ValueError, match=r"threshold must lie in \[0, 1\]; got \[-0.1\]"):
        metric(PROB, LABELS, threshold=-0.1)


@pytest.mark.parametrize("metric", THREADED)
@pytest.mark.parametrize(
    ("n_workers", "error", "match"),
    [
        (1.5, TypeError, "n_workers must be a positive int or None; got 1.5"),
        (True, TypeError, "n_workers must be a positive int or None; got True"),
        (0, ValueError, "n_workers must be >= 1; got 0"),
    ],
)
def test_bad_n_workers(metric, n_workers, error, match):
    with pytest.raises(error, match=match):
        metric(PROB, LABELS, n_workers=n_workers)


@pytest.mark.parametrize(
    ("pred", "gt", "error", "match"),
    [
        (np.ones((3, 3)), np.ones((3, 3), int), TypeError, "pred_instances must be an integer"),
        (np.ones((3, 3), int), -np.ones((3, 3), int), ValueError, "gt_instances must be >= 0"),
        (np.ones((3, 3), int), np.ones((3, 4), int), ValueError, "must have the same shape"),
        (np.ones(3, int), np.ones(3, int), ValueError, r"pred_instances must have shape \(Z"),
    ],
)
def test_bad_instances(pred, gt, error, match):
    with pytest.raises(error, match=match):
        iou_seg(pred, gt)
