"""Foreground-restricted Rand: hand counts, a dense contingency table and scikit-image."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.metrics import adapted_rand_error

from unet_core.metrics import rand_error
from unet_core.metrics._rand import TruthSlice, pair_stats, proposal_labels, rand_counts


def _counts(prob: np.ndarray, foreground: np.ndarray, threshold: float) -> np.ndarray:
    truth = TruthSlice.from_mask(foreground)
    proposal, n_proposal = proposal_labels(prob, threshold)
    return rand_counts(truth, pair_stats(truth, proposal, n_proposal))


def _random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    foreground = ndi.gaussian_filter(rng.random((24, 24)), 1.0) > 0.48
    prob = np.clip(ndi.gaussian_filter(rng.random((24, 24)), 1.0) * 2 - 0.5, 0, 1)
    return prob, foreground


def _with_unique_boundary(labels: np.ndarray) -> np.ndarray:
    """Give every proposal boundary pixel (label 0) an id of its own."""
    out = labels.astype(np.int64).copy()
    boundary = out == 0
    out[boundary] = out.max() + 1 + np.arange(np.count_nonzero(boundary))
    return out


def test_hand_counts_of_a_split_cell():
    """One 2 x 3 GT cell cut by one proposal boundary pixel into 2 + 3 pixels."""
    foreground = np.ones((2, 3), bool)
    prob = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    tp, fp, fn, n = _counts(prob, foreground, 0.5)
    # n_11 = 5 (proposal is one 4-connected segment of 5 px), z = 1, a_1 = 6
    assert (tp, fp, fn, n) == (25 + 1, 25 + 1 - 26, 36 - 26, 6)


@pytest.mark.parametrize("seed", range(8))
def test_pair_counting_form_matches_skimage(seed):
    """skimage's adapted Rand (pair counts) = our N^2 sums minus the n self-pairs."""
    prob, foreground = _random_case(seed)
    threshold = 0.5
    tp, fp, fn, n = _counts(prob, foreground, threshold)
    truth_labels = ndi.label(foreground)[0]
    proposal = _with_unique_boundary(ndi.label(prob > threshold)[0])
    error, precision, recall = adapted_rand_error(truth_labels, proposal, ignore_labels=(0,))
    pair_f = 2 * (tp - n) / (2 * tp + fp + fn - 2 * n)
    assert 1 - error == pytest.approx(pair_f, rel=1e-12)
    # skimage 0.26 divides its "precision" by the GT pairs, its "recall" by the proposal's
    assert precision == pytest.approx((tp - n) / (tp + fn - n), rel=1e-12)
    assert recall == pytest.approx((tp - n) / (tp + fp - n), rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_rand_error_matches_a_dense_contingency_table(seed):
    prob, foreground = _random_case(seed)
    truth_labels = ndi.label(foreground)[0]
    proposal = _with_unique_boundary(ndi.label(prob > 0.3)[0])
    cells = truth_labels > 0
    table = np.zeros((truth_labels.max() + 1, proposal.max() + 1))
    np.add.at(table, (truth_labels[cells], proposal[cells]), 1)
    sum_n2 = (table**2).sum()
    f = 2 * sum_n2 / ((table.sum(1) ** 2).sum() + (table.sum(0) ** 2).sum())
    error, threshold = rand_error(prob, foreground.astype(np.uint8), thresholds=[0.3])
    assert (error, threshold) == (pytest.approx(1 - f, rel=1e-12), 0.3)


def test_counts_are_pooled_over_slices_not_averaged():
    prob = np.stack([_random_case(1)[0], _random_case(2)[0]])
    labels = np.stack([_random_case(1)[1], _random_case(2)[1]]).astype(np.uint8)
    pooled = _counts(prob[0], labels[0] > 0, 0.5) + _counts(prob[1], labels[1] > 0, 0.5)
    tp, fp, fn, _ = pooled
    error, _ = rand_error(prob, labels, thresholds=[0.5])
    assert error == pytest.approx(1 - 2 * tp / (2 * tp + fp + fn), rel=1e-12)


def test_gt_cells_are_components_of_the_cell_mask_not_ids():
    """Touching instances without membrane between them form one GT cell."""
    labels = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])
    error, _ = rand_error(np.ones((2, 4)), labels)
    assert error == 0.0


def test_threshold_is_the_first_best_one():
    labels = np.ones((3, 5), np.uint8)
    labels[:, 2] = 0
    prob = np.where(labels > 0, 0.8, 0.3)
    assert rand_error(prob, labels) == (0.0, 0.3)
