"""Volumes as (Z, Y, X): the `Volume` every reader returns, `VolumeError`, and the lazy stack adapter.

`LazyStack` wraps anything that can read a range of slices (pages of a TIFF, files of a folder, a 2D or
5D array seen through a view) as a read-only (Z, Y, X) array that reads only the slices asked for.
`_as_zyx` and `_check_shape` turn what a file holds into (Z, Y, X) or refuse it with one message.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_VOXEL_SIZE = (1.0, 1.0, 1.0)
#: The OME-NGFF (UDUNITS-2) names of length units that files and people write short.
UNIT_NAMES = {
    "å": "angstrom",
    "nm": "nanometer",
    "um": "micrometer",
    "µm": "micrometer",  # micro sign
    "μm": "micrometer",  # Greek mu
    "\\u00b5m": "micrometer",  # ImageJ's escape of the micro sign
    "micron": "micrometer",
    "microns": "micrometer",
    "mm": "millimeter",
}

#: Nanometres per length unit, by OME-NGFF name.
NANOMETERS = {"angstrom": 0.1, "nanometer": 1.0, "micrometer": 1e3, "millimeter": 1e6}


def ngff_unit(unit: str | None) -> str | None:
    """A length unit by its OME-NGFF name (``nm`` -> ``nanometer``); other text as it is, stripped.

    Examples
    --------
    >>> ngff_unit("µm"), ngff_unit("nanometer"), ngff_unit(None)
    ('micrometer', 'nanometer', None)
    """
    if unit is None or not unit.strip():
        return None
    return UNIT_NAMES.get(unit.strip().lower(), unit.strip())


class VolumeError(ValueError):
    """A user-supplied volume cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class Volume:
    """A (Z, Y, X) array-like (numpy or zarr, indexable without loading everything) and its metadata."""

    array: Any
    path: str
    voxel_size: tuple[float, float, float] = DEFAULT_VOXEL_SIZE
    unit: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)


class LazyStack:
    """A read-only (Z, Y, X) array whose slices are read on demand.

    Supports numpy basic indexing (integers, slices, ``...``) and ``np.asarray``; only the slices in the
    index are read. Used for TIFF stacks, folders of slices and arrays that need a view to become
    (Z, Y, X).

    Parameters
    ----------
    read : callable
        ``read(z0, z1)`` returns slices ``z0:z1`` as a numpy array of shape ``(z1 - z0, Y, X)``.
    shape : tuple of 3 int
        ``(Z, Y, X)``.
    dtype : numpy dtype
        Dtype of what ``read`` returns.
    path : str
        The source, for messages.
    """

    def __init__(
        self, read: Callable[[int, int], np.ndarray], shape: Sequence[int], dtype: Any, *, path: str
    ) -> None:
        self._read = read
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.path = path
        self.chunks = (1, *self.shape[1:])

    ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyStack({self.path!r}, shape={self.shape}, dtype={self.dtype})"

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        zkey, rest = _split_key(key, self.shape[0])
        if isinstance(zkey, int):
            return self._read(zkey, zkey + 1)[(0, *rest)]
        start, stop, step = zkey.indices(self.shape[0])
        if step == 1:
            data = self._read(start, max(start, stop))
        else:
            picks = range(start, stop, step)
            data = np.empty((len(picks), *self.shape[1:]), self.dtype)
            for i, z in enumerate(picks):
                data[i] = self._read(z, z + 1)[0]
        return data[(slice(None), *rest)]


def _split_key(key: Any, n_slices: int) -> tuple[int | slice, tuple]:
    """Basic index -> (z index or slice, index of the remaining (Y, X) axes)."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:at] + (slice(None),) * (4 - len(key)) + key[at + 1 :]
    if len(key) > 3 or not all(isinstance(k, slice) or _is_int(k) for k in key):
        raise TypeError(f"index must be integers, slices or ... over (Z, Y, X), got {key!r}")
    key = key + (slice(None),) * (3 - len(key))
    zkey = key[0]
    if _is_int(zkey):
        z = operator.index(zkey)
        z = z + n_slices if z < 0 else z
        if not 0 <= z < n_slices:
            raise IndexError(f"slice index {operator.index(zkey)} out of range for {n_slices} slices")
        zkey = z
    return zkey, key[1:]


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check_shape(shape: tuple[int, ...], path: str, axes: str = "") -> None:
    """Refuse what is not (Z, Y, X) after dropping leading 1s; ``axes`` (one letter per axis: C or S =
    channel, T = time) catches a single RGB image, which is 3D as well."""
    extra = [size for size, ax in zip(shape, axes, strict=False) if ax in "CST" and size > 1]
    if extra or len(shape) < 2 or any(s != 1 for s in shape[:-3]):
        raise VolumeError(
            f"{path}: expected a 2D image or a 3D (Z, Y, X) stack, got shape {shape}; RGB and "
            "multi-channel data are not supported: save one grayscale channel of one time point"
        )
    if 0 in shape:
        raise VolumeError(f"{path}: empty stack of shape {shape}: no slices or no pixels; check the export")


def _as_zyx(array: Any, path: str) -> Any:
    """``array`` itself when 3D, else a (Z, Y, X) view: a 2D image is one slice, leading 1s are dropped."""
    shape = tuple(int(s) for s in array.shape)
    _check_shape(shape, path)
    if len(shape) == 3:
        return array
    lead = (0,) * max(len(shape) - 3, 0)
    if isinstance(array, np.ndarray):
        return array[lead] if lead else array[None]
    if lead:
        return LazyStack(
            lambda z0, z1: np.asarray(array[(*lead, slice(z0, z1))]), shape[-3:], array.dtype, path=path
        )
    return LazyStack(lambda z0, z1: np.asarray(array[...])[None][z0:z1], (1, *shape), array.dtype, path=path)
