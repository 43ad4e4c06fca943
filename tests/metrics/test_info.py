"""Border thinning, V_rand and V_info against scikit-image's entropies."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.metrics import variation_of_information

from unet_core.metrics import vrand_vinfo
from unet_core.metrics._info import entropies, thin_borders
from unet_core.metrics._rand import TruthSlice, pair_stats


def _random_labels(seed: int, size: int = 20) -> np.ndarray:
    mask = ndi.gaussian_filter(np.random.default_rng(seed).random((size, size)), 1) > 0.5
    return ndi.label(mask)[0].astype(np.int32)


def _neighbour_labels(labels: np.ndarray, y: int, x: int) -> set[int]:
    height, width = labels.shape
    around = [(y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)]
    return {labels[a, b] for a, b in around if 0 <= a < height and 0 <= b < width} - {0}


@pytest.mark.parametrize("seed", range(6))
def test_thinning_keeps_segments_and_separates_them(seed):
    labels = _random_labels(seed)
    thinned = thin_borders(labels)
    assert np.array_equal(thinned[labels > 0], labels[labels > 0])
    horizontal = (thinned[:, 1:] != thinned[:, :-1]) & (thinned[:, 1:] > 0) & (thinned[:, :-1] > 0)
    vertical = (thinned[1:] != thinned[:-1]) & (thinned[1:] > 0) & (thinned[:-1] > 0)
    assert not horizontal.any() and not vertical.any()  # no two labels 4-adjacent
    for y, x in zip(*np.nonzero(thinned == 0), strict=True):
        assert len(_neighbour_labels(thinned, y, x)) != 1  # every border left is a dam


def test_thinning_leaves_a_one_pixel_border_between_two_segments():
    labels = np.zeros((3, 7), np.int32)
    labels[:, :2], labels[:, 5:] = 1, 2
    thinned = thin_borders(labels)
    assert np.array_equal(np.count_nonzero(thinned == 0, axis=1), [1, 1, 1])
    assert np.array_equal(thin_borders(np.zeros((3, 3), np.int32)), np.zeros((3, 3)))


@pytest.mark.parametrize("seed", range(6))
def test_entropies_match_skimage(seed):
    truth_labels = _random_labels(seed)
    proposal = _random_labels(seed + 100)
    stats = pair_stats(TruthSlice.from_mask(truth_labels > 0), proposal, int(proposal.max()))
    h_truth, h_proposal, mutual = entropies(TruthSlice.from_mask(truth_labels > 0), stats)
    unique = proposal.astype(np.int64)
    unique[unique == 0] = unique.max() + 1 + np.arange(np.count_nonzero(unique == 0))
    proposal_given_truth, truth_given_proposal = variation_of_information(
        truth_labels, unique, ignore_labels=(0,)
    )
    assert (h_proposal - mutual) / np.log(2) == pytest.approx(proposal_given_truth, abs=1e-10)
    assert (h_truth - mutual) / np.log(2) == pytest.approx(truth_given_proposal, abs=1e-10)
    sizes = np.bincount(truth_labels[truth_labels > 0])[1:] / np.count_nonzero(truth_labels)
    assert h_truth == pytest.approx(-np.sum(sizes * np.log(sizes)), abs=1e-12)


def test_vrand_vinfo_on_a_merge_thinned_proposal():
    """Two GT cells merged by the proposal: V_rand = (a1^2 + a2^2) * 2 / (sum a^2 + n^2)."""
    labels = np.ones((4, 9), np.uint8)
    labels[:, 4] = 0
    prob = np.full((4, 9), 0.9)
    prob[:, 4] = 0.2
    prob[0, 4] = 0.9  # a one-pixel gap merges the cells
    scores = vrand_vinfo(prob, labels, thresholds=[0.5])
    assert scores["vrand"] == pytest.approx(2 * 2 * 16**2 / (2 * 16**2 + 32**2))
    assert scores["vinfo"] == pytest.approx(0.0, abs=1e-12)  # proposal says nothing about S
    assert scores["vrand_threshold"] == scores["vinfo_threshold"] == 0.5


def test_thinning_changes_the_score_of_thick_proposal_borders():
    """A 3-px proposal border inside one GT cell costs singletons; thinned, only one column."""
    labels = np.ones((4, 9), np.uint8)
    prob = np.ones((4, 9))
    prob[:, 3:6] = 0.0
    scores = vrand_vinfo(prob, labels, thresholds=[0.5])
    # after thinning: segments of 16 + 16 px and 4 singletons in a 36-px cell
    assert scores["vrand"] == pytest.approx(2 * (2 * 16**2 + 4) / (36**2 + 2 * 16**2 + 4))


def test_slices_without_cells_are_left_out_of_the_average():
    labels = np.zeros((2, 4, 4), np.uint8)
    labels[0] = 1
    prob = np.ones((2, 4, 4))
    assert vrand_vinfo(prob, labels)["vrand"] == 1.0
