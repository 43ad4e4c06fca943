"""Reading multi-page TIFF stacks (one page per slice) with tifffile, without loading them.

An uncompressed stack stored as one block becomes a `LazyStack` that reads a slab with one seek and one
read; a compressed or tiled one is read page by page through tifffile's Zarr view. Truncated files and
stacks of mixed page shapes are refused at open, before any stage writes a thing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import zarr

from .stack import NANOMETERS, LazyStack, Volume, VolumeError, _as_zyx, _check_shape, ngff_unit

TIFF_SUFFIXES = (".tif", ".tiff")


def open_tiff(path: Path) -> Volume:
    """Open a TIFF stack (one page per slice) for reading without loading it.

    Parameters
    ----------
    path : pathlib.Path
        A TIFF file; ImageJ stacks saved as frames (T) are read as slices (Z).

    Returns
    -------
    Volume
        The stack as (Z, Y, X); a single page is one slice. With the voxel size and unit of an OME-TIFF's
        or an ImageJ TIFF's calibration, where it has one.

    Raises
    ------
    VolumeError
        If the file is damaged or truncated, holds pages of different shapes, or is not grayscale.
    """
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
        if len(tif.series) > 1 and tif.is_shaped:  # written page by page: tifffile makes each a series
            tif.close()
            tif = tifffile.TiffFile(path, is_shaped=False)  # pages of one shape form one series
        series = tif.series[0]
        shape, offset, axes = tuple(series.shape), series.dataoffset, series.axes
        calibration = _calibration(tif)
        # Pages decoded one by one must all be there; a contiguous block is checked by its size below.
        complete = offset is not None or _holds_every_page(tif, series, path.stat().st_size)
    except Exception as err:  # tifffile raises many types for damaged files
        raise VolumeError(f"{path}: not a readable TIFF ({err}); re-export the stack") from err
    if not shape or 0 in shape:
        raise VolumeError(f"{path}: not a readable TIFF (no image data); re-export the stack")
    if len(tif.series) > 1:
        shapes = [tuple(s.shape) for s in tif.series]
        raise VolumeError(
            f"{path}: pages of different shapes or types ({len(shapes)} image series, {shapes[:4]}); "
            "export a stack whose slices all have one shape and type"
        )
    if not complete:  # found at open, before anything is written
        raise VolumeError(
            f"{path}: the stack does not hold every page of the file, or its data runs past the end "
            "(truncated or damaged?); re-export the stack"
        )
    if "Z" not in axes:  # ImageJ often saves a z-stack as frames (T)
        axes = axes.replace("T", "Z")
    if axes.startswith("S") and shape[0] in (3, 4):  # what tifffile.imwrite makes of 3 or 4 slices
        raise VolumeError(
            f"{path}: its {shape[0]} planes are stored as the colour samples of one RGB image, not as "
            "slices; if they are slices, write them again one page each (tifffile.imwrite(..., "
            "photometric='minisblack')); RGB data are not supported"
        )
    if offset is None:  # compressed or tiled: tifffile's zarr view decodes page by page
        _check_shape(shape, str(path), axes)
        array = _as_zyx(zarr.open(tif.aszarr(series=0, level=0), mode="r"), str(path))
        return Volume(array, str(path), **calibration)
    stored = series.dtype.newbyteorder(tif.byteorder)
    tif.close()
    _check_shape(shape, str(path), axes)
    shape3 = shape if len(shape) == 3 else (1, *shape)
    plane_bytes = int(np.prod(shape3[1:])) * stored.itemsize
    complete = (path.stat().st_size - offset) // plane_bytes
    if complete < shape3[0]:  # found at open, before any stage writes a thing
        raise VolumeError(f"{path}: file ends inside slice {complete} (truncated?); re-export the stack")
    return Volume(_contiguous_stack(path, offset, shape3, stored), str(path), **calibration)


def _calibration(tif: Any) -> dict[str, Any]:
    """``voxel_size`` (z, y, x) and ``unit`` of an OME-TIFF's Pixels or an ImageJ TIFF's calibration;
    none for other TIFFs, and for an uncalibrated ImageJ stack (unit "pixel" or none): a resolution tag
    alone is a printer's dots per inch, not a pixel size."""
    if tif.is_ome:
        pixels = ElementTree.fromstring(tif.ome_metadata).find(".//{*}Pixels")
        pixels = {} if pixels is None else pixels.attrib
        sizes = [pixels.get(f"PhysicalSize{a}") for a in "ZYX"]
        units = [ngff_unit(pixels.get(f"PhysicalSize{a}Unit", "µm")) for a in "ZYX"]  # OME's default
        if None in sizes[1:] or units[1] != units[2]:
            return {}
        # z in y and x's unit; without a spacing, or in a unit we cannot convert, the default
        scale = NANOMETERS.get(units[0], math.nan) / NANOMETERS.get(units[1], math.nan)
        z = float(sizes[0]) * scale if sizes[0] and math.isfinite(scale) else 1.0
        return {"voxel_size": (z, float(sizes[1]), float(sizes[2])), "unit": units[1]}
    metadata = tif.imagej_metadata if tif.is_imagej else None
    unit = ngff_unit((metadata or {}).get("unit"))
    if unit is None or unit == "pixel":
        return {}
    tags = tif.pages.first.tags
    y, x = (tags[name].value if name in tags else (1, 1) for name in ("YResolution", "XResolution"))
    size = [float(metadata.get("spacing", 1.0))] + [den / num for num, den in (y, x)]  # pixels per unit
    return {"voxel_size": tuple(size), "unit": unit}


def _holds_every_page(tif: Any, series: Any, file_size: int) -> bool:
    """Whether ``series`` covers every page of ``tif`` and no page's data runs past ``file_size``: a
    truncated file loses pages (tifffile then falls back on a shorter series) or the end of the last."""
    pages = [page for page in series.pages if page]
    ends = (o + c for page in pages for o, c in zip(page.dataoffsets, page.databytecounts, strict=True))
    return len(pages) == len(tif.pages) and max(ends, default=0) <= file_size


def _contiguous_stack(path: Path, offset: int, shape: tuple[int, ...], stored: np.dtype) -> LazyStack:
    """Uncompressed TIFF data stored as one block: a slab is one seek and one read."""
    plane = int(np.prod(shape[1:]))
    native = stored.newbyteorder("=")

    def read(z0: int, z1: int) -> np.ndarray:
        with open(path, "rb") as handle:
            handle.seek(offset + z0 * plane * stored.itemsize)
            data = np.fromfile(handle, dtype=stored, count=(z1 - z0) * plane)
        if data.size != (z1 - z0) * plane:
            raise VolumeError(
                f"{path}: file ends inside slice {z0 + data.size // plane} (truncated?); re-export the stack"
            )
        return data.reshape(z1 - z0, *shape[1:]).astype(native, copy=False)

    return LazyStack(read, shape, native, path=str(path))
