"""V_rand and V_info after border thinning: the ISBI 2012 leaderboard scores since 2015."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ._jit import njit, warn_if_slow
from ._parallel import map_slices
from ._rand import PairStats, TruthSlice, pair_stats, proposal_labels
from ._validate import (
    DEFAULT_THRESHOLDS_WITH_1,
    as_inputs,
    as_n_workers,
    as_thresholds,
    require_cells,
)


@njit
def thin_borders(labels):
    """Grow 4-connected segments into their boundary, leaving 1-pixel dams where they meet.

    A watershed on the flat binary landscape: boundary pixels (label 0) are flooded in
    breadth-first order from the segments through 4-neighbours; a pixel whose labelled
    4-neighbours carry two different labels when it is reached stays 0 (a dam) and floods
    no further. Segments keep their pixels and labels, and no two different labels end up
    4-adjacent. Boundary unreachable from any segment stays 0.
    """
    height, width = labels.shape
    out = labels.copy()
    queued = np.zeros((height, width), np.uint8)
    queue = np.empty(height * width, np.int64)
    tail = 0
    for y in range(height):
        for x in range(width):
            if out[y, x] != 0:
                continue
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and out[ny, nx] != 0:
                    queued[y, x] = 1
                    queue[tail] = y * width + x
                    tail += 1
                    break
    head = 0
    while head < tail:
        y, x = divmod(queue[head], width)
        head += 1
        label = 0
        dam = False
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= ny < height and 0 <= nx < width:
                other = out[ny, nx]
                if other != 0:
                    if label == 0:
                        label = other
                    elif other != label:
                        dam = True
        if dam:
            continue
        out[y, x] = label
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= ny < height and 0 <= nx < width:
                if out[ny, nx] == 0 and queued[ny, nx] == 0:
                    queued[ny, nx] = 1
                    queue[tail] = ny * width + nx
                    tail += 1
    return out


def entropies(truth: TruthSlice, stats: PairStats) -> tuple[float, float, float]:
    """Return H(S), H(T) and I(S; T) in nats over the GT cell pixels of one slice.

    S is the GT cell partition and T the proposal partition with each boundary pixel a
    singleton; with counts c summing to n, H = log n - sum(c log c) / n (singletons add 0
    to the sum).
    """
    n = truth.n_cells
    log_n = math.log(n)
    h_truth = log_n - truth.sum_alog / n
    h_proposal = log_n - stats.sum_blogb / n
    h_joint = log_n - stats.sum_nlogn / n
    return h_truth, h_proposal, h_truth + h_proposal - h_joint


def vrand_vinfo_slice(truth: TruthSlice, stats: PairStats) -> tuple[float, float]:
    """V_rand and V_info of one slice; NaN when the slice has no GT cell pixel.

    V_info is 1 when both partitions are a single segment (H(S) + H(T) = 0).
    """
    if truth.n_cells == 0:
        return math.nan, math.nan
    z = stats.singletons
    vrand = 2 * (stats.sum_n2 + z) / (truth.sum_a2 + stats.sum_b2 + z)
    h_truth, h_proposal, mutual = entropies(truth, stats)
    total = h_truth + h_proposal
    vinfo = 2 * mutual / total if total > 0 else 1.0
    return vrand, vinfo


def slice_vrand_vinfo(prob: np.ndarray, foreground: np.ndarray, thresholds) -> np.ndarray:
    """``(T, 2)`` V_rand, V_info of one slice at each threshold, after border thinning."""
    truth = TruthSlice.from_mask(foreground)
    scores = np.empty((len(thresholds), 2), np.float64)
    for t, th in enumerate(thresholds):
        proposal, n_proposal = proposal_labels(prob, th)
        thinned = thin_borders(proposal)
        scores[t] = vrand_vinfo_slice(truth, pair_stats(truth, thinned, n_proposal))
    return scores


def best_over_thresholds(per_slice: np.ndarray, thresholds: Sequence[float]) -> dict[str, float]:
    """Average ``(Z, T, 2)`` slice scores over slices with cells and maximise each over T."""
    mean = np.nanmean(per_slice, axis=0)
    best_rand, best_info = int(np.argmax(mean[:, 0])), int(np.argmax(mean[:, 1]))
    return {
        "vrand": float(mean[best_rand, 0]),
        "vrand_threshold": thresholds[best_rand],
        "vinfo": float(mean[best_info, 1]),
        "vinfo_threshold": thresholds[best_info],
    }


def vrand_vinfo(
    prob: np.ndarray,
    labels: np.ndarray,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS_WITH_1,
    n_workers: int | None = None,
) -> dict[str, float]:
    """Maximal V_rand and V_info after thinning the proposal borders to one pixel.

    Parameters
    ----------
    prob : ndarray of float, shape (Z, Y, X) or (Y, X)
        Probability of cell (non-membrane) in [0, 1].
    labels : ndarray, same shape
        Ground truth: 0 = membrane, > 0 = cell; GT cells are the 4-connected components.
    thresholds : sequence of float, optional
        Strictly increasing thresholds in [0, 1]; default 0.0, 0.1, ..., 1.0.
    n_workers : int, optional
        Threads working on slices in parallel; default all usable cores.

    Returns
    -------
    dict
        ``vrand``, ``vrand_threshold``, ``vinfo``, ``vinfo_threshold``: each score is the
        slice average (over slices holding cells), maximised over thresholds. Higher is
        better; 1 is perfect.

    Notes
    -----
    At each threshold the proposal ``prob > th`` is split into 4-connected segments whose
    borders are thinned to 1 px by a 4-connected watershed (:func:`thin_borders`). Then, on
    GT cell pixels only, with proposal border pixels as singletons,
    V_rand = 2 sum p_ij^2 / (sum s_i^2 + sum t_j^2) and V_info = 2 I(S; T) / (H(S) + H(T)).

    References
    ----------
    .. [1] I. Arganda-Carreras et al., "Crowdsourcing the creation of image segmentation
       algorithms for connectomics", Front. Neuroanat. 9:142, 2015.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.ones((4, 5), np.uint8); labels[:, 2] = 0
    >>> prob = np.where(labels > 0, 0.9, 0.1)
    >>> vrand_vinfo(prob, labels)["vrand"]
    1.0
    """
    probability, foreground = as_inputs(prob, labels)
    require_cells(foreground)
    sweep = as_thresholds(thresholds)
    warn_if_slow(probability.size)
    per_slice = map_slices(
        lambda z: slice_vrand_vinfo(probability[z], foreground[z], sweep),
        probability.shape[0],
        as_n_workers(n_workers),
    )
    return best_over_thresholds(np.stack(per_slice), sweep)
