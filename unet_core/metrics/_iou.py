"""Cell Tracking Challenge SEG score and foreground overlap (U-Net paper, Table 2)."""

from __future__ import annotations

import math

import numpy as np

from ._validate import as_instances


def _slice_seg(pred: np.ndarray, truth: np.ndarray) -> tuple[float, int, int]:
    """Sum of matched Jaccard indices, number of GT objects and of matches in one slice."""
    truth_ids, truth_sizes = np.unique(truth[truth > 0], return_counts=True)
    pred_ids, pred_sizes = np.unique(pred[pred > 0], return_counts=True)
    both = (truth > 0) & (pred > 0)
    pairs, overlaps = np.unique(np.stack([truth[both], pred[both]]), axis=1, return_counts=True)
    r_size = truth_sizes[np.searchsorted(truth_ids, pairs[0])]
    s_size = pred_sizes[np.searchsorted(pred_ids, pairs[1])]
    matched = overlaps > 0.5 * r_size
    jaccard = overlaps[matched] / (r_size[matched] + s_size[matched] - overlaps[matched])
    return float(jaccard.sum()), int(truth_ids.size), int(np.count_nonzero(matched))


def _overlap(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Foreground IoU and Dice of one slice; 1 when both are empty."""
    a, b = pred > 0, truth > 0
    intersection = np.count_nonzero(a & b)
    union = np.count_nonzero(a | b)
    total = np.count_nonzero(a) + np.count_nonzero(b)
    if union == 0:
        return 1.0, 1.0
    return intersection / union, 2 * intersection / total


def iou_seg(pred_instances: np.ndarray, gt_instances: np.ndarray) -> dict[str, float]:
    """Cell Tracking Challenge SEG score with mean foreground IoU and Dice.

    Parameters
    ----------
    pred_instances : ndarray of int, shape (Z, Y, X) or (Y, X)
        Predicted instance labels, 0 = background. Slices are scored as separate 2-D
        frames, so ids may repeat across slices.
    gt_instances : ndarray of int, same shape
        Ground-truth instance labels, 0 = background.

    Returns
    -------
    dict
        ``seg`` (mean over all GT objects of all slices; NaN without GT objects),
        ``n_objects``, ``n_matched``, and ``foreground_iou`` and ``dice`` of the masks
        ``> 0``, each averaged over slices (1 for a slice where both masks are empty).

    Notes
    -----
    A GT object R matches the predicted object S with |R n S| > 0.5 |R| (at most one
    can); its score is the Jaccard index |R n S| / |R u S|, or 0 without a match.

    References
    ----------
    .. [1] V. Ulman et al., "An objective comparison of cell-tracking algorithms",
       Nature Methods 14:1141-1152, 2017.

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.array([[1, 1, 0, 2, 2]])
    >>> pred = np.array([[5, 5, 5, 0, 7]])
    >>> iou_seg(pred, gt)["seg"]  # object 1: 2/3; object 2: 1 px of 2 is no match
    0.3333333333333333
    """
    pred = as_instances(pred_instances, "pred_instances")
    truth = as_instances(gt_instances, "gt_instances")
    if pred.shape != truth.shape:
        raise ValueError(
            f"pred_instances and gt_instances must have the same shape; "
            f"got {np.shape(pred_instances)} and {np.shape(gt_instances)}"
        )
    seg = [_slice_seg(p.ravel(), t.ravel()) for p, t in zip(pred, truth, strict=True)]
    overlap = np.array([_overlap(p, t) for p, t in zip(pred, truth, strict=True)])
    total, n_objects, n_matched = (sum(column) for column in zip(*seg, strict=True))
    return {
        "seg": total / n_objects if n_objects else math.nan,
        "n_objects": n_objects,
        "n_matched": n_matched,
        "foreground_iou": float(overlap[:, 0].mean()),
        "dice": float(overlap[:, 1].mean()),
    }
