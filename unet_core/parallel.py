"""Threads for the stages: how many CPUs a process may use, an ordered, bounded map over a pool, and a
hook on the tasks a dask scheduler finishes."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def usable_cpus() -> int:
    """The CPUs this process may run on (a batch job's allocation, not the whole node's)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def in_order(pool: ThreadPoolExecutor, func: Callable[[T], R], items: Iterable[T], ahead: int) -> Iterator[R]:
    """``func(item)`` for each item, in order, computed on ``pool`` with at most ``ahead`` in flight (so
    memory stays bounded however many items); when the consumer stops (an error), what is queued is
    cancelled and what runs is waited for."""
    pending: deque[Future] = deque()
    try:
        for item in items:
            pending.append(pool.submit(func, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        wait(pending)


def finished_tasks(on_finished: Callable[[Any], object]) -> Any:
    """A context in which every dask task finished by a local scheduler calls ``on_finished(key)`` (to
    drive a progress bar)."""
    from dask.callbacks import Callback

    return Callback(posttask=lambda key, *_: on_finished(key))
