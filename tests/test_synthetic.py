"""Tests of the synthetic EM volume generator (unet_core.data.synthetic)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.feature import hessian_matrix, hessian_matrix_eigvals
from skimage.measure import label
from skimage.morphology import skeletonize

from unet_core.data.synthetic import _cell_ids, generate_volume

SHAPE = (24, 256, 256)


@pytest.fixture(scope="module")
def volume() -> tuple[np.ndarray, np.ndarray, float]:
    start = time.process_time()
    raw, labels = generate_volume(SHAPE, seed=0)
    return raw, labels, time.process_time() - start


@pytest.fixture(scope="module")
def best_threshold(volume) -> tuple[int, float]:
    raw, labels, _ = volume
    return _best_threshold(raw, labels == 255)


def _best_threshold(raw: np.ndarray, cell: np.ndarray) -> tuple[int, float]:
    """Best global threshold t (cell = raw > t) and its pixel accuracy, from histograms."""
    cell_hist = np.bincount(raw[cell], minlength=256)
    membrane_hist = np.bincount(raw[~cell], minlength=256)
    # correct(t) = #cell pixels above t + #membrane pixels at or below t
    correct = cell_hist.sum() - np.cumsum(cell_hist) + np.cumsum(membrane_hist)
    t = int(np.argmax(correct))
    return t, correct[t] / raw.size


def _features(raw: np.ndarray) -> np.ndarray:
    """Per-pixel local features: smoothed intensity and two ridge (Hessian) responses."""
    out = []
    for img in raw.astype(np.float32):
        hessians = [hessian_matrix(img, s, order="rc", use_gaussian_derivatives=True) for s in (1.5, 3.0)]
        feats = [ndi.gaussian_filter(img, 1.0)] + [hessian_matrix_eigvals(h)[0] for h in hessians]
        out.append(np.stack(feats, axis=-1).reshape(-1, len(feats)))
    return np.concatenate(out)


class _HistogramClassifier:
    """A local pixel classifier: P(cell) looked up in a 3D histogram of local features."""

    bins = 16

    def fit(self, raw: np.ndarray, cell: np.ndarray) -> _HistogramClassifier:
        feats = _features(raw)
        quantiles = np.linspace(0, 1, self.bins + 1)[1:-1]
        self.edges = [np.quantile(f, quantiles) for f in feats.T]
        index = self._index(feats)
        n = self.bins ** feats.shape[1]
        cells = np.bincount(index, weights=cell.ravel(), minlength=n)
        self.table = cells > 0.5 * np.bincount(index, minlength=n)
        return self

    def predict(self, raw: np.ndarray) -> np.ndarray:
        return self.table[self._index(_features(raw))].reshape(raw.shape)

    def _index(self, feats: np.ndarray) -> np.ndarray:
        digits = tuple(np.searchsorted(e, f) for e, f in zip(self.edges, feats.T, strict=True))
        return np.ravel_multi_index(digits, (self.bins,) * feats.shape[1])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def _band_widths(mask: np.ndarray) -> np.ndarray:
    """Widths of a 2D band mask: twice the distance to the outside, along its medial axis."""
    return 2 * ndi.distance_transform_edt(mask)[skeletonize(mask)]


def _merged_fraction(truth: np.ndarray, found: np.ndarray) -> float:
    """Fraction of true cells whose main found component is also another true cell's main one.

    Both are label images with 0 = background; a true cell's main component is the found
    component (>= 1) it overlaps most.
    """
    n_found = found.max() + 1
    pairs = truth.ravel().astype(np.int64) * n_found + found.ravel()
    table = np.bincount(pairs, minlength=(truth.max() + 1) * n_found).reshape(-1, n_found)
    table = table[1:, 1:]
    main = table.argmax(axis=1)[table.max(axis=1) > 0]
    return np.isin(main, np.flatnonzero(np.bincount(main) >= 2)).mean()


# --- the test helpers --------------------------------------------------------------------------


def test_best_threshold_on_hand_checkable_array():
    raw = np.array([[10, 20, 30, 40]], dtype=np.uint8)
    cell = np.array([[False, True, False, True]])
    # t = 0..9: all cell, 2 of 4 right; t = 10..19: only 30 wrong; t = 30..39: only 20 wrong.
    # The first best threshold wins.
    assert _best_threshold(raw, cell) == (10, 0.75)


def test_merged_fraction_on_hand_checkable_labels():
    truth = np.array([[1, 1, 0, 2, 2, 0, 3, 3]])
    found = np.array([[1, 1, 1, 1, 0, 0, 2, 0]])  # cells 1 and 2 merged, 3 alone
    assert _merged_fraction(truth, found) == pytest.approx(2 / 3)


def test_band_widths_on_hand_checkable_bands():
    mask = np.zeros((12, 20), dtype=bool)
    mask[2:4, 1:19] = True  # 2 px thick
    mask[6:10, 1:19] = True  # 4 px thick
    widths = _band_widths(mask)
    assert set(widths.tolist()) == {2.0, 4.0}


# --- output contract ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 16, 16), (3, 40, 70), (2, 64, 17)])
def test_dtype_shape_and_label_values(shape):
    raw, labels = generate_volume(shape, seed=0)
    assert raw.shape == labels.shape == shape
    assert raw.dtype == labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) <= {0, 255}


def test_accepts_numpy_integers_and_lists():
    raw, labels = generate_volume([np.int64(2), 32, 32], seed=np.uint8(3), cell_diameter=20)
    assert raw.shape == labels.shape == (2, 32, 32)


def test_same_seed_gives_identical_bytes_and_other_seeds_differ():
    first = generate_volume((3, 64, 64), seed=11)
    again = generate_volume((3, 64, 64), seed=11)
    other = generate_volume((3, 64, 64), seed=12)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(first, again, strict=True))
    assert all(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_speed_of_a_24x256x256_volume(volume):
    # CPU seconds of this process, so a busy shared machine does not make it flaky
    assert volume[2] < 5.0


# --- content --------------------------------------------------------------------------------


def test_membrane_fraction_is_isbi_like(volume):
    _, labels, _ = volume
    assert 0.15 <= (labels == 0).mean() <= 0.30


def test_membranes_and_organelles_are_dark_on_brighter_cytoplasm(volume):
    raw, labels, _ = volume
    cell = labels == 255
    assert raw[cell].mean() >= raw[~cell].mean() + 30
    # organelles and noise: some cytoplasm is as dark as a typical membrane
    assert (raw[cell] < np.median(raw[~cell])).mean() >= 0.03
    # slight per-slice brightness changes
    slice_means = raw.mean(axis=(1, 2))
    assert 0.01 <= slice_means.std() / slice_means.mean() <= 0.12


@pytest.mark.parametrize("diameter", [20.0, 40.0])
def test_cells_per_slice_match_the_diameter(diameter):
    _, labels = generate_volume((3, 256, 256), seed=5, cell_diameter=diameter)
    expected = 256 * 256 / (math.pi / 4 * diameter**2)
    counts = [label(s == 255, connectivity=1).max() for s in labels]
    assert 0.6 * expected <= np.mean(counts) <= 1.8 * expected


def test_membranes_are_2_to_6_px_thick_and_vary(volume):
    _, labels, _ = volume
    membranes = labels == 0
    widths = np.concatenate([_band_widths(m) for m in membranes])
    assert (widths <= 3.0).mean() >= 0.05  # thin membranes...
    assert (widths >= 5.5).mean() >= 0.05  # ...and thick ones (diagonal bands read up to 6.3)
    assert np.percentile(widths, 95) <= 7.0
    # no 1-px membranes: almost every membrane pixel lies in some 2x2 membrane square
    square = np.ones((1, 2, 2), dtype=bool)
    assert ndi.binary_opening(membranes, structure=square).sum() >= 0.98 * membranes.sum()


def test_slices_are_continuous_in_z(volume):
    _, labels, _ = volume
    cell = labels == 255
    other = generate_volume((6, *SHAPE[1:]), seed=2)[1] == 255
    adjacent = np.mean([_iou(cell[z], cell[z + 1]) for z in range(len(cell) - 1)])
    unrelated = np.mean([_iou(cell[z], other[z]) for z in range(len(other))])
    assert adjacent >= unrelated + 0.08
    membrane_adjacent = np.mean([_iou(~cell[z], ~cell[z + 1]) for z in range(len(cell) - 1)])
    membrane_unrelated = np.mean([_iou(~cell[z], ~other[z]) for z in range(len(other))])
    assert membrane_adjacent >= 2.5 * membrane_unrelated
    # ...yet membranes move between sections, as in ssTEM
    assert membrane_adjacent < 0.6


def test_cells_persist_and_some_appear_or_vanish_over_z():
    cells = _cell_ids((24, 128, 128), 40.0, np.random.default_rng(0))
    present = [set(np.unique(s).tolist()) for s in cells]
    pairs = list(zip(present, present[1:], strict=False))
    assert np.mean([len(a & b) / len(a) for a, b in pairs]) >= 0.85
    assert sum(len(b - a) for a, b in pairs) >= 5  # appear
    assert sum(len(a - b) for a, b in pairs) >= 5  # vanish


def test_best_threshold_is_far_worse_than_a_local_classifier(volume, best_threshold):
    raw, labels, _ = volume
    train_raw, train_labels = generate_volume((4, 256, 256), seed=1)
    model = _HistogramClassifier().fit(train_raw, train_labels == 255)
    local_accuracy = (model.predict(raw) == (labels == 255)).mean()
    assert best_threshold[1] <= local_accuracy - 0.03
    assert best_threshold[1] < 0.9


def test_best_threshold_splits_and_merges_many_cells(volume, best_threshold):
    raw, labels, _ = volume
    t, _ = best_threshold
    true_counts, thresholded_counts, merged = [], [], []
    for r, s in zip(raw[:6], labels[:6], strict=True):
        truth = label(s == 255, connectivity=1)
        found = label(r > t, connectivity=1)
        true_counts.append(truth.max())
        thresholded_counts.append(found.max())
        merged.append(_merged_fraction(truth, found))
    ratio = np.mean(thresholded_counts) / np.mean(true_counts)
    assert ratio >= 1.5 or ratio <= 1 / 1.5
    assert np.mean(merged) >= 0.25


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [64, "abc", (3, 64), (3, 64, 64.0), (True, 64, 64)])
def test_shape_of_wrong_type_is_rejected(shape):
    with pytest.raises(TypeError, match="shape must be a sequence of 3 ints"):
        generate_volume(shape, seed=0)


@pytest.mark.parametrize("shape", [(0, 64, 64), (2, 15, 64), (2, 64, 15)])
def test_too_small_shape_is_rejected(shape):
    with pytest.raises(ValueError, match=r"Z >= 1 and Y, X >= 16, got \(Z, Y, X\)"):
        generate_volume(shape, seed=0)


@pytest.mark.parametrize("seed", [1.0, True, None])
def test_seed_of_wrong_type_is_rejected(seed):
    with pytest.raises(TypeError, match="seed must be an int"):
        generate_volume((1, 16, 16), seed=seed)


def test_negative_seed_is_rejected():
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        generate_volume((1, 16, 16), seed=-1)


@pytest.mark.parametrize("diameter", ["40", True, None])
def test_diameter_of_wrong_type_is_rejected(diameter):
    with pytest.raises(TypeError, match="cell_diameter must be a real number"):
        generate_volume((1, 16, 16), seed=0, cell_diameter=diameter)


@pytest.mark.parametrize("diameter", [7.9, 0, -40.0, math.nan, math.inf])
def test_diameter_out_of_range_is_rejected(diameter):
    with pytest.raises(ValueError, match="cell_diameter must be a finite number >= 8 px"):
        generate_volume((1, 16, 16), seed=0, cell_diameter=diameter)
