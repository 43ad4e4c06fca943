"""The front door for reading volumes: `open_volume` picks the reader by the path.

A TIFF, a PNG, a folder of slices, ``file.h5:/dataset`` and a Zarr or OME-Zarr store each go to their
reader module. `read_slices` turns any reader's failure on damaged data into one `VolumeError` that
names the file; `check_real` checks what was read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .hdf5 import HDF5_PATH, HDF5_SUFFIXES, open_hdf5
from .slices import open_png, open_slice_folder
from .stack import Volume, VolumeError
from .tiff import TIFF_SUFFIXES, open_tiff
from .zarr_store import ZARR_MARKERS, open_zarr


def open_volume(path: str | os.PathLike, *, key: str | None = None) -> Volume:
    """Open a volume for reading without loading it.

    Parameters
    ----------
    path : str or path-like
        A TIFF (one page per slice), a PNG, a folder of 2D PNG or TIFF slices (stacked in natural order
        of file names: ``s2.png`` before ``s10.png``), ``file.h5:/dataset`` for HDF5, a Zarr (v2 or v3)
        array, or an OME-Zarr image (level 0 of its first multiscale is read).
    key : str, optional
        For OME-Zarr stores holding several images, the sub-group to read (``"labels/cells"``).

    Returns
    -------
    Volume
        The array as (Z, Y, X), with voxel size and unit where the file records them. A 2D image is one
        slice; leading axes of length 1 (OME-Zarr's t and c) are dropped.

    Raises
    ------
    VolumeError
        If the path does not exist, is not a readable volume, or holds RGB / multi-channel data.
    """
    text = os.fspath(path)
    hdf5 = HDF5_PATH.match(text)
    if hdf5:
        return open_hdf5(hdf5["file"], hdf5["key"])
    p = Path(text)
    if not p.exists():
        raise VolumeError(f"{text}: no such file or directory; check the path in your config or volumes.tsv")
    if p.suffix.lower() in TIFF_SUFFIXES and p.is_file():
        return open_tiff(p)
    if p.suffix.lower() == ".png" and p.is_file():
        return open_png(p)
    if p.suffix.lower() in HDF5_SUFFIXES:
        raise VolumeError(f"{text}: HDF5 needs the dataset path, written as '{text}:/path/to/dataset'")
    if p.is_dir() and not any((p / marker).exists() for marker in ZARR_MARKERS):
        return open_slice_folder(p)
    return open_zarr(p, key)


def read_volume(path: str | os.PathLike, *, key: str | None = None) -> np.ndarray:
    """Read a whole volume into memory as a (Z, Y, X) numpy array (see `open_volume`)."""
    return np.asarray(open_volume(path, key=key).array[...])


def read_slices(volume: Volume, z0: int, z1: int) -> np.ndarray:
    """Slices ``z0:z1`` of ``volume`` as numpy; a damaged file becomes one `VolumeError` that names it.

    Codecs and file readers fail with many exception types (a corrupt Zarr chunk raises a RuntimeError
    from Blosc); they all mean the same to a user: the stored data cannot be read back.
    """
    try:
        return np.asarray(volume.array[z0:z1])
    except VolumeError:
        raise
    except Exception as err:
        raise VolumeError(
            f"{volume.path}: cannot read slices {z0}:{z1} ({type(err).__name__}: {err}); the file is "
            "damaged (a corrupt or truncated chunk?): copy or export it again"
        ) from err


def check_real(volume: Volume, what: str) -> None:
    """Refuse data that is not real numbers (complex, strings, objects): casting would drop information."""
    if volume.dtype.kind not in "biuf":
        raise VolumeError(
            f"{volume.path}: unsupported dtype {volume.dtype} for {what}; convert to integer or float numbers"
        )
