"""Folding indices that fall outside an array back into it: the two mirror rules of this package.

They differ at the edge. `symmetric_indices` repeats the edge pixel (``... b a | a b c | c b ...``,
numpy.pad's ``"symmetric"``); `reflect_indices` does not (``... c b | a b c | b a ...``, numpy.pad's
``"reflect"``, scipy.ndimage's ``"mirror"``). Both are periodic functions of the index alone, so two
ranges fold alike wherever they overlap. This module imports only numpy: every layer may use it.
"""

from __future__ import annotations

import numpy as np


def _check_size(size: int) -> None:
    if size < 1:
        raise ValueError(f"size must be at least 1 (a fold needs an array to fold into), got {size}")


def symmetric_indices(index: np.ndarray, size: int) -> np.ndarray:
    """Fold integer indices into ``[0, size)`` by mirroring about the borders, edge pixel repeated.

    Tiling's rule: overlapping reads must agree, so the fold depends only on the absolute coordinate.

    Parameters
    ----------
    index : ndarray of int
        Indices, anywhere (far outside ``[0, size)`` too).
    size : int
        Length of the axis, >= 1.

    Returns
    -------
    ndarray of int
        The folded indices, of ``index``'s shape.

    Notes
    -----
    ``a[symmetric_indices(np.arange(-n, len(a) + n), len(a))]`` equals ``np.pad(a, n, mode="symmetric")``
    (scipy.ndimage's ``mode="reflect"``); the period is ``2 * size``.

    Examples
    --------
    The edge pixels 0 and 2 appear twice at each border, unlike in `reflect_indices`:

    >>> symmetric_indices(np.arange(-3, 6), 3).tolist()
    [2, 1, 0, 0, 1, 2, 2, 1, 0]
    >>> np.pad(np.arange(3), 3, mode="symmetric").tolist()
    [2, 1, 0, 0, 1, 2, 2, 1, 0]
    """
    _check_size(size)
    period = 2 * size
    folded = index % period
    return np.where(folded < size, folded, period - 1 - folded)


def reflect_indices(index: np.ndarray, size: int) -> np.ndarray:
    """Fold integer indices into ``[0, size)`` by mirroring about the edge pixels, which are not repeated.

    Augmentation's rule: it must match scipy.ndimage's ``mode="mirror"``, the boundary of the cubic zoom
    that builds the elastic displacement field.

    Parameters
    ----------
    index : ndarray of int
        Indices, anywhere (far outside ``[0, size)`` too).
    size : int
        Length of the axis, >= 1; with 1 every index folds to 0.

    Returns
    -------
    ndarray of int
        The folded indices, of ``index``'s shape.

    Notes
    -----
    ``a[reflect_indices(np.arange(-n, len(a) + n), len(a))]`` equals ``np.pad(a, n, mode="reflect")``
    (scipy.ndimage's ``mode="mirror"``); the period is ``2 * (size - 1)``.

    Examples
    --------
    The edge pixels 0 and 2 appear once each, unlike in `symmetric_indices`:

    >>> reflect_indices(np.arange(-3, 6), 3).tolist()
    [1, 2, 1, 0, 1, 2, 1, 0, 1]
    >>> np.pad(np.arange(3), 3, mode="reflect").tolist()
    [1, 2, 1, 0, 1, 2, 1, 0, 1]
    """
    _check_size(size)
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    folded = np.abs(index) % period
    return np.where(folded >= size, period - folded, folded)
