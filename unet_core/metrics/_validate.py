"""Validate metric inputs on entry so that errors name the parameter, not a numpy internal."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..parallel import usable_cpus

#: Thresholds of the ISBI 2012 warping sweep: 0.0, 0.1, ..., 0.9.
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(k / 10 for k in range(10))
#: Thresholds of the pixel, Rand and V_rand / V_info sweeps: 0.0, 0.1, ..., 1.0.
DEFAULT_THRESHOLDS_WITH_1: tuple[float, ...] = tuple(k / 10 for k in range(11))


def _as_array(value: object, name: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array; could not convert {type(value)!r}") from err
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array; got dtype {array.dtype}")
    return array


def _check_volume_shape(array: np.ndarray, name: str) -> None:
    if array.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (Z, Y, X) or (Y, X); got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {array.shape}")


def as_prob(prob: object) -> np.ndarray:
    """Return ``prob`` as a float64 (Z, Y, X) array after checking dtype, shape and range."""
    array = _as_array(prob, "prob")
    if array.dtype.kind != "f":
        raise TypeError(
            "prob must be a floating-point array of cell probabilities in [0, 1]; "
            f"got dtype {array.dtype} (divide an 8-bit map by 255 first)"
        )
    _check_volume_shape(array, "prob")
    n_bad = int(np.count_nonzero(~np.isfinite(array)))
    if n_bad:
        raise ValueError(f"prob must be finite; got {n_bad} NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"prob must lie in [0, 1] (probability of cell, not membrane); got values in [{low:g}, {high:g}]"
        )
    return np.ascontiguousarray(array, dtype=np.float64).reshape((-1, *array.shape[-2:]))


def as_foreground(labels: object, shape: tuple[int, ...]) -> np.ndarray:
    """Return the cell mask ``labels > 0`` as a bool (Z, Y, X) array; ``shape`` is prob's."""
    array = _as_array(labels, "labels")
    if array.shape != shape:
        raise ValueError(f"labels must have the shape of prob {shape}; got shape {array.shape}")
    if array.dtype.kind == "f":
        n_bad = int(np.count_nonzero(~np.isfinite(array)))
        if n_bad:
            raise ValueError(f"labels must be finite; got {n_bad} NaN or infinite values")
    if array.dtype.kind != "b" and array.min() < 0:
        raise ValueError(f"labels must be >= 0 (0 = membrane, > 0 = cell); got minimum {array.min()}")
    return np.ascontiguousarray(array > 0).reshape((-1, *array.shape[-2:]))


def as_inputs(prob: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``prob`` and ``labels``; return float64 prob and bool cell mask, both (Z, Y, X)."""
    probability = as_prob(prob)
    return probability, as_foreground(labels, np.shape(prob))


def require_cells(foreground: np.ndarray) -> None:
    """Raise if the ground truth has no cell pixel, as Rand and V_info need one."""
    if not foreground.any():
        raise ValueError("labels has no cell pixel (> 0); Rand, V_rand and V_info need at least one")


def as_thresholds(thresholds: Iterable[float], name: str = "thresholds") -> tuple[float, ...]:
    """Return ``thresholds`` as a tuple of floats, strictly increasing, inside [0, 1]."""
    try:
        values = np.asarray(tuple(thresholds), dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a sequence of numbers; got {thresholds!r}") from err
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence; got {thresholds!r}")
    if not np.all(np.isfinite(values)) or values.min() < 0.0 or values.max() > 1.0:
        raise ValueError(f"{name} must lie in [0, 1]; got {values.tolist()}")
    if np.any(np.diff(values) <= 0):
        raise ValueError(f"{name} must be strictly increasing; got {values.tolist()}")
    return tuple(float(v) for v in values)


def as_threshold(threshold: float, name: str = "threshold") -> float:
    """Return one threshold as a float inside [0, 1]."""
    return as_thresholds((threshold,), name)[0]


def as_n_workers(n_workers: int | None) -> int:
    """Return the number of worker threads: all usable cores when ``n_workers`` is None."""
    if n_workers is None:
        return usable_cpus()
    if isinstance(n_workers, bool) or not isinstance(n_workers, int | np.integer):
        raise TypeError(f"n_workers must be a positive int or None; got {n_workers!r}")
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1; got {n_workers}")
    return int(n_workers)


def as_instances(instances: object, name: str) -> np.ndarray:
    """Return an instance label image as an int64 (Z, Y, X) array (0 = background)."""
    array = _as_array(instances, name)
    if array.dtype.kind not in "biu":
        raise TypeError(f"{name} must be an integer label image; got dtype {array.dtype}")
    _check_volume_shape(array, name)
    if array.dtype.kind == "i" and array.min() < 0:
        raise ValueError(f"{name} must be >= 0 (0 = background); got minimum {array.min()}")
    return np.ascontiguousarray(array, dtype=np.int64).reshape((-1, *array.shape[-2:]))
