"""Run a per-slice function over the slices of a volume on a thread pool."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def map_slices(func: Callable[[int], T], n_slices: int, n_workers: int) -> list[T]:
    """Return ``[func(z) for z in range(n_slices)]``, computed by up to ``n_workers`` threads.

    Threads suffice because the heavy kernels are numba functions compiled with
    ``nogil=True``; results come back in slice order whatever the scheduling.
    """
    if n_workers == 1 or n_slices == 1:
        return [func(z) for z in range(n_slices)]
    with ThreadPoolExecutor(max_workers=min(n_workers, n_slices)) as pool:
        return list(pool.map(func, range(n_slices)))
