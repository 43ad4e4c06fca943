"""Reading a folder of 2D slices (PNG or TIFF, one file per slice) as a stack, and a single PNG image.

The files are stacked in the natural order of their names (``s2.png`` before ``s10.png``) and read one
by one on demand; every slice must match the first in shape and dtype, which is checked as it is read.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .stack import LazyStack, Volume, VolumeError
from .tiff import TIFF_SUFFIXES

log = logging.getLogger(__name__)

SLICE_SUFFIXES = (".png", *TIFF_SUFFIXES)


def open_png(path: Path) -> Volume:
    """Read one 2D PNG image as a volume of one slice.

    Parameters
    ----------
    path : pathlib.Path
        A grayscale PNG (1-bit, 8 or 16 bit, or a palette of grays).

    Returns
    -------
    Volume
        The image as a (1, Y, X) numpy array.

    Raises
    ------
    VolumeError
        If the file is not a readable PNG or not grayscale.
    """
    return Volume(_read_slice_file(path)[None], str(path))


def open_slice_folder(folder: Path) -> Volume:
    """Open a folder of 2D PNG or TIFF slices as a stack, without reading more than its first slice.

    Parameters
    ----------
    folder : pathlib.Path
        The folder; hidden files and files of other types are ignored.

    Returns
    -------
    Volume
        A `LazyStack` of the slices in natural order of their file names.

    Raises
    ------
    VolumeError
        If the folder holds no slices or its first slice is not a readable 2D grayscale image; a later
        slice that differs from the first is reported when it is read.
    """
    files = sorted(
        (f for f in folder.iterdir() if f.suffix.lower() in SLICE_SUFFIXES and not f.name.startswith(".")),
        key=_natural_key,
    )
    if not files:
        raise VolumeError(
            f"{folder}: a folder that is neither a Zarr store nor holds PNG or TIFF slices; "
            "point to a stack, a Zarr/OME-Zarr store or a folder of 2D slices"
        )
    log.info("%s: %d slices, %s to %s", folder, len(files), files[0].name, files[-1].name)
    return open_slice_files(files, folder)


def open_slice_files(
    files: Sequence[Path], folder: Path, *, read_file: Callable[[Path], np.ndarray] | None = None
) -> Volume:
    """A stack of the 2D slice files ``files``, in that order, read one by one on demand.

    Parameters
    ----------
    files : sequence of pathlib.Path
        PNG or TIFF files, one slice each; at least one.
    folder : pathlib.Path
        Where they are, the volume's path in messages.
    read_file : callable, optional
        Reads one file as a 2D array (default: PNG or TIFF, grayscale only).

    Returns
    -------
    Volume
        A `LazyStack`; only its first slice has been read.

    Raises
    ------
    VolumeError
        If the first file is not a readable 2D grayscale image; a later one that differs from it in shape
        or dtype is reported when it is read.
    """
    read_file = read_file or _read_slice_file
    first = read_file(files[0])

    def read(z0: int, z1: int) -> np.ndarray:
        out = np.empty((z1 - z0, *first.shape), first.dtype)
        for i, name in enumerate(files[z0:z1]):
            image = read_file(name)
            if image.shape != first.shape or image.dtype != first.dtype:
                raise VolumeError(
                    f"{name}: slice {z0 + i} is {image.shape} {image.dtype} but {files[0].name} is "
                    f"{first.shape} {first.dtype}; every slice of the folder must match"
                )
            out[i] = image
        return out

    return Volume(LazyStack(read, (len(files), *first.shape), first.dtype, path=str(folder)), str(folder))


def _natural_key(path: Path) -> list:
    """Sort key of file names that orders embedded numbers by value (``s2`` before ``s10``)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _read_slice_file(path: Path) -> np.ndarray:
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        try:
            image = tifffile.imread(path)
        except Exception as err:
            raise VolumeError(f"{path}: not a readable TIFF ({err}); re-export the slice") from err
    else:
        from PIL import Image

        try:
            with Image.open(path) as handle:
                image = np.asarray(handle.convert("L") if handle.mode == "1" else _depalette(handle))
        except Exception as err:
            raise VolumeError(f"{path}: not a readable PNG ({err}); re-export the slice") from err
    if image.size == 0:
        raise VolumeError(f"{path}: not a readable TIFF (no image data); re-export the slice")
    if image.ndim != 2:
        raise VolumeError(
            f"{path}: a slice of a folder must be one 2D grayscale image, got shape {image.shape}; "
            "save single-channel 2D slices"
        )
    return image


def _depalette(image: Any) -> Any:
    """A palette image as the values its palette maps to: gray when every entry is gray, else RGB (refused
    as not 2D). Other modes unchanged."""
    if image.mode not in ("P", "PA"):
        return image
    rgb = np.asarray(image.convert("RGB"))
    return rgb[..., 0] if (rgb[..., :1] == rgb[..., 1:]).all() else rgb
