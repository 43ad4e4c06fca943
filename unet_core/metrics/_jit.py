"""Compile the metric kernels with numba when it is installed.

The kernels are written in the subset of Python that numba compiles, so without numba they
run unchanged as plain Python: correct, but about a hundred times slower on full slices.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable)

try:
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is absent
    numba = None

HAVE_NUMBA = numba is not None


def njit(func: F) -> F:
    """Compile ``func`` with numba (cached on disk, GIL released) or return it unchanged."""
    if numba is None:  # pragma: no cover
        return func
    return numba.njit(cache=True, nogil=True)(func)


def warn_if_slow(n_pixels: int) -> None:
    """Log once per call that large inputs run slowly without numba."""
    if not HAVE_NUMBA and n_pixels > 256 * 256:  # pragma: no cover
        logger.warning(
            "numba is not installed: metric kernels run as plain Python on %d pixels "
            "(about 100x slower); install it with `pip install numba`",
            n_pixels,
        )
