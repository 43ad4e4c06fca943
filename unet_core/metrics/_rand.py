"""ISBI 2012 Rand error: foreground-restricted Rand F-score with N^2 normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._jit import njit, warn_if_slow
from ._parallel import map_slices
from ._topology import label4
from ._validate import (
    DEFAULT_THRESHOLDS_WITH_1,
    as_inputs,
    as_n_workers,
    as_thresholds,
    require_cells,
)


@dataclass(frozen=True)
class TruthSlice:
    """Ground-truth cells of one slice, grouped once and reused at every threshold.

    ``order`` lists the flat indices of cell pixels grouped by 4-connected cell label,
    ``starts`` the group boundaries; ``sum_a2`` and ``sum_alog`` are sum(a_i^2) and
    sum(a_i log a_i) over the cell sizes a_i.
    """

    order: np.ndarray
    starts: np.ndarray
    n_cells: int
    sum_a2: float
    sum_alog: float

    @classmethod
    def from_mask(cls, foreground: np.ndarray) -> TruthSlice:
        """Group the 4-connected components of a 2-D bool cell mask."""
        labels, n_labels = label4(foreground.view(np.uint8))
        flat = labels.reshape(-1)
        pixels = np.flatnonzero(flat)
        order = pixels[np.argsort(flat[pixels], kind="stable")]
        sizes = np.bincount(flat[pixels], minlength=n_labels + 1)[1:].astype(np.float64)
        starts = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        return cls(
            order=order,
            starts=starts,
            n_cells=int(pixels.size),
            sum_a2=float(sizes @ sizes),
            sum_alog=float(np.sum(sizes * np.log(sizes))),
        )


class PairStats(NamedTuple):
    """Sums over the contingency table n_ij (GT cell i >= 1, proposal segment j >= 1).

    ``singletons`` counts GT cell pixels on proposal boundary (label 0): each is its own
    one-pixel segment.
    """

    sum_n2: float
    sum_nlogn: float
    sum_b2: float
    sum_blogb: float
    singletons: int


@njit
def _pair_sums(order, starts, proposal, n_proposal):
    flat = proposal.reshape(-1)
    counts = np.zeros(n_proposal + 1, np.int64)
    column = np.zeros(n_proposal + 1, np.int64)
    touched = np.empty(n_proposal + 1, np.int64)
    sum_n2 = 0.0
    sum_nlogn = 0.0
    singletons = 0
    for group in range(starts.shape[0] - 1):
        n_touched = 0
        for k in range(starts[group], starts[group + 1]):
            j = flat[order[k]]
            if j == 0:
                singletons += 1
                continue
            if counts[j] == 0:
                touched[n_touched] = j
                n_touched += 1
            counts[j] += 1
        for t in range(n_touched):
            j = touched[t]
            c = counts[j]
            sum_n2 += c * c
            sum_nlogn += c * np.log(c)
            column[j] += c
            counts[j] = 0
    sum_b2 = 0.0
    sum_blogb = 0.0
    for j in range(1, n_proposal + 1):
        c = column[j]
        if c > 0:
            sum_b2 += c * c
            sum_blogb += c * np.log(c)
    return sum_n2, sum_nlogn, sum_b2, sum_blogb, singletons


def pair_stats(truth: TruthSlice, proposal: np.ndarray, n_proposal: int) -> PairStats:
    """Contingency sums of a proposal label image (0 = boundary) against ``truth``.

    Visits each GT cell's pixels once with a scratch counter instead of building the
    (cells x segments) table, so the cost is linear in the number of pixels.
    """
    return PairStats(*_pair_sums(truth.order, truth.starts, proposal, n_proposal))


def rand_counts(truth: TruthSlice, stats: PairStats) -> np.ndarray:
    """Return float64 ``[TP, FP, FN, n]`` of the foreground-restricted N^2 Rand index.

    TP = sum n_ij^2 + z, FP = sum b_j^2 + z - TP, FN = sum a_i^2 - TP, with z the
    singletons and n the GT cell pixels.
    """
    tp = stats.sum_n2 + stats.singletons
    fp = stats.sum_b2 + stats.singletons - tp
    fn = truth.sum_a2 - tp
    return np.array([tp, fp, fn, truth.n_cells], np.float64)


def rand_f(counts: np.ndarray) -> np.ndarray:
    """F = 2TP / (2TP + FP + FN) from ``(..., 4)`` Rand counts; NaN where there is no cell."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denominator = 2 * tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, np.nan)


def proposal_labels(prob: np.ndarray, threshold: float) -> tuple[np.ndarray, int]:
    """4-connected components of ``prob > threshold`` in one slice (0 = proposal boundary)."""
    return label4((prob > threshold).view(np.uint8))


def _slice_rand_counts(prob: np.ndarray, foreground: np.ndarray, thresholds) -> np.ndarray:
    truth = TruthSlice.from_mask(foreground)
    counts = np.empty((len(thresholds), 4), np.float64)
    for t, th in enumerate(thresholds):
        proposal, n_proposal = proposal_labels(prob, th)
        counts[t] = rand_counts(truth, pair_stats(truth, proposal, n_proposal))
    return counts


def rand_error(
    prob: np.ndarray,
    labels: np.ndarray,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS_WITH_1,
    n_workers: int | None = None,
) -> tuple[float, float]:
    """ISBI 2012 foreground-restricted Rand error, 1 - max F, with the threshold attaining it.

    Parameters
    ----------
    prob : ndarray of float, shape (Z, Y, X) or (Y, X)
        Probability of cell (non-membrane) in [0, 1].
    labels : ndarray, same shape
        Ground truth: 0 = membrane, > 0 = cell. GT cells are the 4-connected components
        of ``labels > 0`` in each slice (instance ids are not used).
    thresholds : sequence of float, optional
        Strictly increasing thresholds in [0, 1]; default 0.0, 0.1, ..., 1.0.
    n_workers : int, optional
        Threads working on slices in parallel; default all usable cores.

    Returns
    -------
    error : float
        ``1 - max_th F`` with TP, FP, FN pooled over slices.
    threshold : float
        The first threshold reaching the maximal F.

    Notes
    -----
    Proposal segments are the 4-connected components of ``prob > th``. Only GT cell pixels
    count; a GT cell pixel on proposal boundary is its own singleton. With n_ij the pixels
    in GT cell i and segment j >= 1, z the singletons, a_i = sum_j n_ij + n_i0 and
    b_j = sum_i n_ij: TP = sum n_ij^2 + z, FP = sum b_j^2 + z - TP, FN = sum a_i^2 - TP
    and F = 2 TP / (2 TP + FP + FN), which equals V_rand.

    References
    ----------
    .. [1] I. Arganda-Carreras et al., "Crowdsourcing the creation of image segmentation
       algorithms for connectomics", Front. Neuroanat. 9:142, 2015.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.ones((4, 5), np.uint8); labels[:, 2] = 0
    >>> prob = np.ones((4, 5)); prob[:2, 2] = 0.0  # gap: the two cells merge
    >>> error, threshold = rand_error(prob, labels)
    >>> round(error, 4), threshold
    (0.3333, 0.0)
    """
    probability, foreground = as_inputs(prob, labels)
    require_cells(foreground)
    sweep = as_thresholds(thresholds)
    warn_if_slow(probability.size)
    per_slice = map_slices(
        lambda z: _slice_rand_counts(probability[z], foreground[z], sweep),
        probability.shape[0],
        as_n_workers(n_workers),
    )
    scores = rand_f(np.sum(per_slice, axis=0))
    best = int(np.argmax(scores))
    return float(1.0 - scores[best]), sweep[best]
