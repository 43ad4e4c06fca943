"""ISBI 2012 pixel error: 1 - maximal F-score of the cell class over thresholds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._validate import DEFAULT_THRESHOLDS_WITH_1, as_inputs, as_threshold, as_thresholds


def pixel_counts(prob: np.ndarray, foreground: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Return ``(T, 4)`` int64 counts TP, FP, FN, TN of the cell class at each threshold.

    ``prob`` and ``foreground`` may have any matching shape; white means ``prob > th``.
    """
    p_cell, p_membrane = prob[foreground], prob[~foreground]
    counts = np.empty((len(thresholds), 4), np.int64)
    for t, th in enumerate(thresholds):
        tp = np.count_nonzero(p_cell > th)
        fp = np.count_nonzero(p_membrane > th)
        counts[t] = tp, fp, p_cell.size - tp, p_membrane.size - fp
    return counts


def f_score(counts: np.ndarray) -> np.ndarray:
    """F-score of the cell class from ``(..., 4)`` counts TP, FP, FN, TN.

    Precision is 1 when there is no false positive and recall 1 when there is no false
    negative, as in Fiji's ``ClassificationStatistics``; F is 0 when both are 0.
    """
    tp, fp, fn = (counts[..., k].astype(np.float64) for k in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(fp == 0, 1.0, tp / (tp + fp))
        recall = np.where(fn == 0, 1.0, tp / (tp + fn))
        total = precision + recall
        return np.where(total > 0, 2 * precision * recall / total, 0.0)


def pixel_error(
    prob: np.ndarray,
    labels: np.ndarray,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS_WITH_1,
) -> tuple[float, float]:
    """ISBI 2012 pixel error, 1 - max F over thresholds, with the threshold attaining it.

    Parameters
    ----------
    prob : ndarray of float, shape (Z, Y, X) or (Y, X)
        Probability of cell (non-membrane) in [0, 1].
    labels : ndarray, same shape
        Ground truth: 0 = membrane, > 0 = cell (binary 0/255 or instance ids).
    thresholds : sequence of float, optional
        Strictly increasing thresholds in [0, 1]; a pixel is cell where ``prob > th``.
        Default 0.0, 0.1, ..., 1.0 as in the challenge.

    Returns
    -------
    error : float
        ``1 - max_th F``, counts pooled over all slices.
    threshold : float
        The first threshold reaching the maximal F.

    Notes
    -----
    Positive class = cell. With TP = #(GT > 0, p > th), FP = #(GT = 0, p > th),
    FN = #(GT > 0, p <= th): P = TP / (TP + FP) (1 if FP = 0), R = TP / (TP + FN)
    (1 if FN = 0) and F = 2PR / (P + R).

    References
    ----------
    .. [1] I. Arganda-Carreras et al., "Crowdsourcing the creation of image segmentation
       algorithms for connectomics", Front. Neuroanat. 9:142, 2015.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.ones((4, 4), np.uint8); labels[:, 2] = 0
    >>> prob = (labels > 0).astype(float)
    >>> pixel_error(prob, labels)
    (0.0, 0.0)
    """
    probability, foreground = as_inputs(prob, labels)
    sweep = as_thresholds(thresholds)
    scores = f_score(pixel_counts(probability, foreground, sweep))
    best = int(np.argmax(scores))
    return float(1.0 - scores[best]), sweep[best]


def pixel_error_rate(prob: np.ndarray, labels: np.ndarray, *, threshold: float = 0.5) -> float:
    """Plain pixel error rate: the fraction of pixels whose class ``prob > threshold`` is wrong.

    Parameters
    ----------
    prob : ndarray of float, shape (Z, Y, X) or (Y, X)
        Probability of cell (non-membrane) in [0, 1].
    labels : ndarray, same shape
        Ground truth: 0 = membrane, > 0 = cell.
    threshold : float, optional
        A pixel is cell where ``prob > threshold``; default 0.5.

    Returns
    -------
    float
        ``(FP + FN) / N``.

    Examples
    --------
    >>> import numpy as np
    >>> pixel_error_rate(np.array([[0.9, 0.2]]), np.array([[1, 1]]))
    0.5
    """
    probability, foreground = as_inputs(prob, labels)
    tp, fp, fn, tn = pixel_counts(probability, foreground, (as_threshold(threshold),))[0]
    return float((fp + fn) / (tp + fp + fn + tn))
