"""Cross-validation folds over the labelled slices of a prepared store.

A run trains and validates on the slices its ``fold`` names (`TrainConfig.fold`):

    ""       the store's split: its ``train`` range trains, its ``val`` range validates
    "all"    every labelled slice (the ``train`` and ``val`` ranges) trains, nothing validates: the
             final model, once cross-validation has chosen the recipe and its length
    "k/K"    fold k of K: the labelled slices in z order, cut into K contiguous runs of (nearly) equal
             length; run k validates, the others train

    labelled  0 1 2 3 | 4 5 6 7 | 8 9 10 11 | ...     "1/5": 4-7 validate, the rest trains

Contiguous runs keep the slices a fold validates on away from those it trains on, except at the runs'
two ends (neighbouring sections of a stack look alike).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

FOLD = re.compile(r"(?P<index>\d+)/(?P<count>\d+)")


def parse_fold(fold: str) -> tuple[int, int] | None:
    """``"k/K"`` -> ``(k, K)``; ``""`` and ``"all"`` -> None. Anything else is a ValueError.

    >>> parse_fold("2/5")
    (2, 5)
    """
    if fold in ("", "all"):
        return None
    match = FOLD.fullmatch(fold)
    if not match or not 0 <= int(match["index"]) < int(match["count"]) or int(match["count"]) < 2:
        raise ValueError(
            f"fold must be '' (the store's split), 'all' (every labelled slice, no validation) or "
            f"'k/K' with 0 <= k < K and K >= 2, got {fold!r}"
        )
    return int(match["index"]), int(match["count"])


def fold_slices(train: tuple[int, int], val: tuple[int, int], fold: str) -> tuple[np.ndarray, np.ndarray]:
    """The slices (z, ascending) that a run of ``fold`` trains and validates on, given the store's
    ``train`` and ``val`` ranges (half-open).

    >>> [z.tolist() for z in fold_slices((0, 8), (8, 10), "1/5")]
    [[0, 1, 4, 5, 6, 7, 8, 9], [2, 3]]

    Raises
    ------
    ValueError
        A malformed ``fold``, or more folds than labelled slices.
    """
    ranges = {"train": np.arange(*train), "val": np.arange(*val)}
    chosen = parse_fold(fold)
    if fold == "":
        return ranges["train"], ranges["val"]
    labelled = np.union1d(ranges["train"], ranges["val"])
    if chosen is None:
        return labelled, labelled[:0]
    index, count = chosen
    if count > len(labelled):
        raise ValueError(
            f"fold {fold}: {count} folds need at least {count} labelled slices, there are {len(labelled)}"
        )
    runs = np.array_split(labelled, count)
    return np.concatenate([run for k, run in enumerate(runs) if k != index]), runs[index]


def read_at(array, zs: Sequence[int]) -> np.ndarray:
    """Slices ``zs`` (ascending) of a (Z, Y, X) array (numpy, zarr), read as few contiguous runs."""
    zs = np.asarray(zs, dtype=int)
    if len(zs) == 0:
        return np.asarray(array[0:0])
    breaks = np.flatnonzero(np.diff(zs) != 1) + 1
    runs = np.split(zs, breaks)
    return np.concatenate([np.asarray(array[run[0] : run[-1] + 1]) for run in runs])
