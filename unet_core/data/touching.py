"""Training targets of touching cells (Ronneberger et al. 2015, Sec. 3 and Fig. 3) and checks of
instance masks.

Light-microscopy references label each cell with its own id, and neighbouring cells touch: their
foreground is one blob. The paper separates them by "separation background labels": the pixels of a cell
that touch another cell become background in the binary target, and the weight map (`weights.weight_map`
of the cells left) gives that gap its large border weight, d1 + d2 being small across it::

    reference ids    target (cells)    weight map
    1 1 1 2 2 2      1 1 0 0 1 1       .  .  W  W  .  .     W = w0 exp(-(1 + 1)^2 / 2 sigma^2) + w_c
    1 1 1 2 2 2      1 1 0 0 1 1       .  .  W  W  .  .

A pixel touches another cell when one of its 8 neighbours carries another id, so the gap is two pixels
wide and no diagonal step crosses it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def separation_borders(instances: np.ndarray) -> np.ndarray:
    """The pixels of each cell that touch another cell.

    Parameters
    ----------
    instances : ndarray of int, shape (Y, X)
        Cell ids, 0 = background.

    Returns
    -------
    ndarray of bool, shape (Y, X)
        True on cell pixels with a pixel of another cell (not background) among their 8 neighbours.

    Examples
    --------
    >>> separation_borders(np.array([[1, 1, 2, 2, 0, 3]])).astype(int)
    array([[0, 1, 1, 0, 0, 0]])
    """
    ids = np.asarray(instances)
    highest = ndimage.maximum_filter(ids, size=3, mode="nearest")
    # background would be the lowest neighbour of every cell beside it: read it as the highest id instead
    lowest = ndimage.minimum_filter(np.where(ids > 0, ids, ids.max(initial=0)), size=3, mode="nearest")
    return (ids > 0) & ((highest != ids) | (lowest != ids))


def separated_cells(instances: np.ndarray) -> np.ndarray:
    """The binary training target: cells without their `separation_borders` (True = cell).

    >>> separated_cells(np.array([[1, 1, 2, 2, 0, 3]])).astype(int)
    array([[1, 0, 0, 1, 0, 1]])
    """
    return (np.asarray(instances) > 0) & ~separation_borders(instances)


def split_cells(instances: np.ndarray) -> dict[int, list[int]]:
    """Ids whose pixels form more than one 4-connected part, with the parts' sizes (largest first).

    Parameters
    ----------
    instances : ndarray of int, shape (Y, X)
        Cell ids, 0 = background.

    Returns
    -------
    dict
        ``{id: [size, ...]}`` of the ids in two or more parts; empty when every cell is in one piece.

    Examples
    --------
    >>> split_cells(np.array([[1, 1, 0, 1, 2]]))
    {1: [2, 1]}
    """
    values, ranks = np.unique(np.asarray(instances), return_inverse=True)  # ids of any size, ranked
    ranks = ranks.reshape(np.shape(instances)) + (values[0] != 0)  # rank 0: background only
    split = {}
    for rank, box in enumerate(ndimage.find_objects(ranks), start=1):
        if box is None:
            continue
        parts, count = ndimage.label(ranks[box] == rank, structure=_FOUR_CONNECTED)
        if count > 1:
            sizes = np.bincount(parts.ravel())[1:]
            split[int(values[rank - (values[0] != 0)])] = sorted(sizes.tolist(), reverse=True)
    return split
