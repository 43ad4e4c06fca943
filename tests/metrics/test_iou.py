"""Cell Tracking Challenge SEG, foreground IoU and Dice."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from unet_core.metrics import iou_seg


def test_matching_needs_more_than_half_of_the_gt_object():
    gt = np.array([[1, 1, 1, 1, 0, 2, 2]])
    pred = np.array([[3, 3, 3, 0, 0, 4, 0]])
    result = iou_seg(pred, gt)
    # object 1: 3 of 4 px > 2, J = 3 / 4; object 2: 1 of 2 px is not > 1, J = 0
    assert result["seg"] == pytest.approx((3 / 4 + 0) / 2)
    assert (result["n_objects"], result["n_matched"]) == (2, 1)
    assert result["foreground_iou"] == pytest.approx(4 / 6)
    assert result["dice"] == pytest.approx(2 * 4 / (4 + 6))


def test_slices_are_separate_frames_and_ids_may_repeat():
    gt = np.array([[[1, 1, 0]], [[1, 0, 0]]])
    pred = np.array([[[1, 1, 0]], [[0, 0, 1]]])
    result = iou_seg(pred, gt)
    assert result["seg"] == pytest.approx(0.5)
    assert result["foreground_iou"] == pytest.approx((1.0 + 0.0) / 2)


def test_empty_ground_truth_gives_nan_seg_and_perfect_overlap():
    result = iou_seg(np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8))
    assert math.isnan(result["seg"])
    assert (result["foreground_iou"], result["dice"]) == (1.0, 1.0)


@settings(max_examples=40, deadline=None)
@given(
    gt=arrays(np.int64, (6, 7), elements=st.integers(0, 4)),
    pred=arrays(np.int64, (6, 7), elements=st.integers(0, 4)),
    permutation=st.permutations(range(1, 5)),
)
def test_relabelling_instances_changes_nothing(gt, pred, permutation):
    relabel = np.array([0, *permutation])
    assert iou_seg(relabel[pred], relabel[gt]) == pytest.approx(iou_seg(pred, gt), nan_ok=True)


def test_perfect_prediction_scores_one():
    gt = np.array([[1, 1, 0, 2], [1, 0, 0, 2]])
    assert iou_seg(gt * 7, gt) == {
        "seg": 1.0,
        "n_objects": 2,
        "n_matched": 2,
        "foreground_iou": 1.0,
        "dice": 1.0,
    }


def test_worked_case_of_the_challenge_definition_pooled_over_frames():
    """Frame 0: A (10 px) covered 6/10 by a cell of 8 px, J = 6 / (10 + 8 - 6) = 0.5; B (4 px) covered
    exactly half, 0; C (6 px) split 3 + 3, neither more than half, 0; D (4 px) unmatched, 0. Frame 1: one
    cell found exactly, 1. SEG pools the five reference cells: (0.5 + 0 + 0 + 0 + 1) / 5 = 0.3, not the
    mean of the frames' means, (0.125 + 1) / 2."""
    gt = np.zeros((2, 1, 26), np.uint16)
    pred = np.zeros((2, 1, 26), np.int32)
    gt[0, 0, :24] = [1] * 10 + [2] * 4 + [3] * 6 + [4] * 4
    pred[0, 0] = [7] * 6 + [0] * 4 + [8] * 2 + [0] * 2 + [9] * 3 + [10] * 3 + [0] * 4 + [7] * 2
    gt[1, 0, :4], pred[1, 0, :4] = 5, 1
    result = iou_seg(pred, gt)
    assert result["seg"] == pytest.approx(0.3)
    assert (result["n_objects"], result["n_matched"]) == (5, 2)
    frames = [iou_seg(pred[z], gt[z])["seg"] for z in range(2)]
    assert frames == pytest.approx([0.5 / 4, 1.0])
