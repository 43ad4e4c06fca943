"""ISBI 2012 warping error (Jain et al. 2010; Fiji's minimum splits-and-mergers form)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._jit import njit, warn_if_slow
from ._parallel import map_slices
from ._topology import SIMPLE_POINT_LUT, label4
from ._validate import DEFAULT_THRESHOLDS, as_inputs, as_n_workers, as_threshold, as_thresholds

#: Mismatch classes; a pixel of class ``MISMATCH_CLASSES[k]`` has code ``k + 1``.
MISMATCH_CLASSES: tuple[str, ...] = (
    "split",
    "merge",
    "hole_addition",
    "hole_deletion",
    "object_addition",
    "object_deletion",
)
_SPLIT, _MERGE, _HOLE_ADDITION, _HOLE_DELETION, _OBJECT_ADDITION, _OBJECT_DELETION = range(1, 7)
#: Half-width of the window in which a split is confirmed (Fiji's radius 20: 41 x 41 pixels).
SPLIT_WINDOW_RADIUS = 20


@njit
def _greedy_warp(source, order, lut):
    """Flip simple mismatches of the padded uint8 ``source`` in place, sweep after sweep.

    ``order`` holds the flat indices of the mismatches in visiting order. A sweep walks the
    remaining ones and flips each that is simple in the current source; the rest, still in
    order, form the next sweep. Returns the mismatches left when a sweep flips nothing.
    """
    width = source.shape[1]
    pixels = source.reshape(-1)
    remaining = order.copy()
    n_left = remaining.shape[0]
    while n_left > 0:
        kept = 0
        for t in range(n_left):
            i = remaining[t]
            code = (
                np.int64(pixels[i - width - 1])
                | np.int64(pixels[i - width]) << 1
                | np.int64(pixels[i - width + 1]) << 2
                | np.int64(pixels[i - 1]) << 3
                | np.int64(pixels[i]) << 4
                | np.int64(pixels[i + 1]) << 5
                | np.int64(pixels[i + width - 1]) << 6
                | np.int64(pixels[i + width]) << 7
                | np.int64(pixels[i + width + 1]) << 8
            )
            if lut[code]:
                pixels[i] = 1 - pixels[i]
            else:
                remaining[kept] = i
                kept += 1
        if kept == n_left:
            break
        n_left = kept
    return remaining[:n_left].copy()


@njit
def _splits_in_window(warped, y, x, radius, seen, stamp, stack):
    """Whether blackening white pixel (y, x) leaves its white 8-neighbours in >= 2 objects.

    Components are 4-connected and computed inside the (2 radius + 1)^2 window only, with
    pixels outside the image black, as Fiji does.
    """
    height, width = warped.shape
    n_white = 0
    start = -1
    for dy in range(-1, 2):
        for dx in range(-1, 2):
            ny, nx = y + dy, x + dx
            if (dy != 0 or dx != 0) and 0 <= ny < height and 0 <= nx < width:
                if warped[ny, nx] != 0:
                    n_white += 1
                    if start < 0:
                        start = ny * width + nx
    if n_white < 2:
        return False
    top, left = y - radius, x - radius
    sy, sx = divmod(start, width)
    seen[sy - top, sx - left] = stamp
    stack[0] = start
    depth = 1
    reached = 1
    while depth > 0:
        depth -= 1
        cy, cx = divmod(stack[depth], width)
        for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
            if ny == y and nx == x:
                continue
            if not (0 <= ny < height and 0 <= nx < width):
                continue
            if abs(ny - y) > radius or abs(nx - x) > radius:
                continue
            if warped[ny, nx] == 0 or seen[ny - top, nx - left] == stamp:
                continue
            seen[ny - top, nx - left] = stamp
            if abs(ny - y) <= 1 and abs(nx - x) <= 1:
                reached += 1
                if reached == n_white:
                    return False
            stack[depth] = ny * width + nx
            depth += 1
    return True


@njit
def _classify(warped, objects, ys, xs, radius):
    """Class code of each remaining mismatch from the warped GT objects around it.

    ``objects`` are the 4-connected labels of ``warped``; neighbours outside the image are
    left out, as in Fiji's ``getNeighborhood``.
    """
    height, width = warped.shape
    side = 2 * radius + 1
    seen = np.zeros((side, side), np.int64)
    stack = np.empty(side * side, np.int64)
    classes = np.empty(ys.shape[0], np.int8)
    for k in range(ys.shape[0]):
        y, x = ys[k], xs[k]
        first = 0
        n_objects = 0
        background = False
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                ny, nx = y + dy, x + dx
                if (dy == 0 and dx == 0) or not (0 <= ny < height and 0 <= nx < width):
                    continue
                label = objects[ny, nx]
                if label == 0:
                    background = True
                elif n_objects == 0:
                    first = label
                    n_objects = 1
                elif label != first:
                    n_objects = 2
        white = warped[y, x] != 0
        if n_objects == 0:
            classes[k] = _OBJECT_DELETION if white else _OBJECT_ADDITION
        elif n_objects == 1 and not background:
            classes[k] = _HOLE_ADDITION if white else _HOLE_DELETION
        elif n_objects == 1 and not white:
            classes[k] = _HOLE_ADDITION
        elif n_objects == 1:
            split = _splits_in_window(warped, y, x, radius, seen, k + 1, stack)
            classes[k] = _SPLIT if split else _HOLE_DELETION
        else:
            classes[k] = _SPLIT if white else _MERGE
    return classes


def warp_slice(
    prob: np.ndarray, foreground: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp one GT slice toward ``prob > threshold``; return the warped mask and mismatches.

    Mismatches are listed x outer, y inner (Fiji's scan), stable-sorted by |p - th| in
    descending order with the key rounded to float32 as Fiji stores it, then relaxed by
    :func:`_greedy_warp` on images padded with one pixel of membrane.

    Returns
    -------
    warped : ndarray of bool, shape (Y, X)
    ys, xs : ndarray of int64
        Rows and columns of the mismatches left, in visiting order.
    """
    height, width = foreground.shape
    source = np.zeros((height + 2, width + 2), np.uint8)
    source[1:-1, 1:-1] = foreground
    xs, ys = np.nonzero(((prob > threshold) != foreground).T)
    key = np.abs(prob[ys, xs] - threshold).astype(np.float32)
    order = np.argsort(-key, kind="stable")
    flat = (ys[order] + 1) * (width + 2) + xs[order] + 1
    remaining = _greedy_warp(source, flat.astype(np.int64), SIMPLE_POINT_LUT)
    rows, cols = np.divmod(remaining, width + 2)
    return source[1:-1, 1:-1].astype(bool), rows - 1, cols - 1


def classify_mismatches(warped: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Class codes (1-based indices into :data:`MISMATCH_CLASSES`) of warping mismatches.

    ``warped`` is the warped GT slice. A mismatch is classified by the 4-connected warped GT
    objects in its 8-neighbourhood and by its own value in the warped GT:

    ========================  ====================  =======================================
    neighbour ids             black (warped GT)     white (warped GT)
    ========================  ====================  =======================================
    all background            object addition       object deletion
    one object only           hole deletion         hole addition
    background + one object   hole addition         split if blackening it separates its
                                                    neighbours (41 x 41 window), else
                                                    hole deletion
    >= 2 objects              merge                 split
    ========================  ====================  =======================================
    """
    pixels = np.ascontiguousarray(warped, dtype=np.uint8)
    objects, _ = label4(pixels)
    return _classify(pixels, objects, ys, xs, SPLIT_WINDOW_RADIUS)


def slice_warp_counts(prob: np.ndarray, foreground: np.ndarray, thresholds) -> np.ndarray:
    """``(T, 7)`` int64 counts per threshold: the six classes, then all mismatches left."""
    counts = np.zeros((len(thresholds), len(MISMATCH_CLASSES) + 1), np.int64)
    for t, th in enumerate(thresholds):
        warped, ys, xs = warp_slice(prob, foreground, th)
        classes = classify_mismatches(warped, ys, xs)
        counts[t, :-1] = np.bincount(classes, minlength=len(MISMATCH_CLASSES) + 1)[1:]
        counts[t, -1] = ys.size
    return counts


def summarise_warping(counts: np.ndarray, n_pixels: int, thresholds: Sequence[float]) -> dict:
    """Pick the threshold minimising split + merge pixels from ``(T, 7)`` pooled counts."""
    errors = (counts[:, 0] + counts[:, 1]) / n_pixels
    best = int(np.argmin(errors))
    summary = {
        "warping_error": float(errors[best]),
        "threshold": thresholds[best],
        "warping_error_classic": float(counts[best, -1] / n_pixels),
    }
    summary.update({name: int(counts[best, k]) for k, name in enumerate(MISMATCH_CLASSES)})
    return summary


def warping_error(
    prob: np.ndarray,
    labels: np.ndarray,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    n_workers: int | None = None,
) -> dict:
    """ISBI 2012 warping error: split + merge pixels per pixel, minimised over thresholds.

    Parameters
    ----------
    prob : ndarray of float, shape (Z, Y, X) or (Y, X)
        Probability of cell (non-membrane) in [0, 1].
    labels : ndarray, same shape
        Ground truth: 0 = membrane, > 0 = cell.
    thresholds : sequence of float, optional
        Strictly increasing thresholds in [0, 1]; default 0.0, 0.1, ..., 0.9 as in the
        challenge.
    n_workers : int, optional
        Threads warping slices in parallel; default all usable cores.

    Returns
    -------
    dict
        ``warping_error`` ((#split + #merge) / (Z Y X), minimal over thresholds),
        ``threshold`` (the first attaining it), ``warping_error_classic`` (all mismatches
        left / (Z Y X) at that threshold) and pixel counts there for every class:
        ``split``, ``merge``, ``hole_addition``, ``hole_deletion``, ``object_addition``,
        ``object_deletion``.

    Notes
    -----
    The binary GT (source) is warped toward ``prob > th`` (target) by flipping simple
    points only (4-connected cells, 8-connected membrane, images padded with membrane),
    greedily in order of decreasing |p - th| until a sweep flips nothing. Each mismatch
    left is classified by the 4-connected warped GT objects in its 8-neighbourhood (table
    in :func:`classify_mismatches`): a pixel black in the warped GT (white in the target)
    touching >= 2 objects is a merge, a white one a split; a white pixel touching
    background and one object is a split if blackening it separates its neighbours inside
    a 41 x 41 window. Pixels are counted individually (no clustering).

    References
    ----------
    .. [1] V. Jain et al., "Boundary learning by optimization with topological
       constraints", CVPR 2010.
    .. [2] Fiji Trainable Weka Segmentation, ``trainableSegmentation.metrics.WarpingError``.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.ones((6, 7), np.uint8); labels[:, 3] = 0
    >>> prob = (labels > 0).astype(float); prob[2:4, 3] = 1.0  # 2-px gap: a merge
    >>> result = warping_error(prob, labels)
    >>> result["merge"], round(result["warping_error"], 4)
    (2, 0.0476)
    """
    probability, foreground = as_inputs(prob, labels)
    sweep = as_thresholds(thresholds)
    warn_if_slow(probability.size)
    per_slice = map_slices(
        lambda z: slice_warp_counts(probability[z], foreground[z], sweep),
        probability.shape[0],
        as_n_workers(n_workers),
    )
    return summarise_warping(np.sum(per_slice, axis=0), probability.size, sweep)


def warped_ground_truth(
    prob: np.ndarray, labels: np.ndarray, *, threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """The GT warped toward ``prob > threshold`` and a map of the mismatches left, by class.

    Parameters
    ----------
    prob : ndarray of float, shape (Z, Y, X) or (Y, X)
        Probability of cell (non-membrane) in [0, 1].
    labels : ndarray, same shape
        Ground truth: 0 = membrane, > 0 = cell.
    threshold : float, optional
        Binarisation threshold of the target; default 0.5.

    Returns
    -------
    warped : ndarray of bool, shape of ``prob``
        The warped cell mask; it has the topology of ``labels > 0``.
    classes : ndarray of int8, shape of ``prob``
        0 where warped GT and target agree, else ``k + 1`` for class
        ``MISMATCH_CLASSES[k]`` (1 = split, 2 = merge, ...), e.g. for figures.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.ones((6, 7), np.uint8); labels[:, 3] = 0
    >>> prob = (labels > 0).astype(float); prob[2:4, 3] = 1.0
    >>> warped, classes = warped_ground_truth(prob, labels)
    >>> int((classes == 2).sum())  # two merge pixels
    2
    """
    probability, foreground = as_inputs(prob, labels)
    th = as_threshold(threshold)
    warped = np.zeros(probability.shape, bool)
    classes = np.zeros(probability.shape, np.int8)
    for z in range(probability.shape[0]):
        warped[z], ys, xs = warp_slice(probability[z], foreground[z], th)
        classes[z, ys, xs] = classify_mismatches(warped[z], ys, xs)
    return warped.reshape(np.shape(prob)), classes.reshape(np.shape(prob))
