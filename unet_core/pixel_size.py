"""Predicting at the training pixel size.

A network trained on 4 nm pixels sees the cells of a 6 nm stack 2/3 as large, and the watershed then
splits or merges them (README, "Predicting at the training pixel size"). When the input volume and the
checkpoints both record a pixel size, predict resamples each block's input in Y and X to the training
pixel size, applies the network there, and resamples the probabilities back onto the input's grid
(bilinear, with a Gaussian prefilter where it shrinks, as `skimage.transform.rescale` does). Z is left
alone: the network is 2D.

Pixel centres map onto each other: input pixel ``y`` lies at ``(y + 0.5) * s - 0.5`` on the model's grid,
``s`` = input pixel / training pixel. Every block samples that one global grid (mirrored outside the
volume, like the input), so the output does not depend on the blocks, as without resampling::

    input grid   |  0  |  1  |  2  |  3  |          6 nm pixels
    model grid   | 0 | 1 | 2 | 3 | 4 | 5 |          4 nm pixels: s = 1.5, 4 * 1.5 = 6 model pixels
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .checkpoint import training_pixel_size
from .io import NANOMETERS, Volume, ngff_unit
from .tiling import Block, Roi, read_mirrored

log = logging.getLogger(__name__)

#: Pixel sizes closer than this (relative) count as equal, not worth an interpolation's blur: training's
#: elastic deformation (10 px on a 3 x 3 grid of a 188 px tile) stretches tiles locally by about 10 %.
TOLERANCE = 0.05
#: Pixel sizes further apart than this factor are taken for wrong metadata (a placeholder 1 micrometre,
#: say), not resampled: a network sees cells 4x larger or smaller than it learnt as another kind of data.
MAX_ZOOM = 4.0
# scipy's Gaussian kernel reaches int(TRUNCATE * sigma + 0.5) pixels out; reads add that margin.
TRUNCATE = 4.0


def in_nanometers(voxel_size: Sequence[float] | None, unit: str | None) -> tuple[float, float] | None:
    """The (y, x) pixel size in nm of a (z, y, x) ``voxel_size`` in ``unit``; None where unknown."""
    factor = NANOMETERS.get(ngff_unit(unit) or "")
    if voxel_size is None or factor is None:
        return None
    return float(voxel_size[1]) * factor, float(voxel_size[2]) * factor


def zoom_factors(
    input_size: Sequence[float],
    input_unit: str | None,
    trained_size: Sequence[float] | None,
    trained_unit: str | None,
) -> tuple[float, float] | None:
    """Model-grid pixels per input pixel in (y, x): input pixel size / training pixel size.

    None when either size is unknown (no unit, or one not in `NANOMETERS`) or both agree within
    `TOLERANCE`: the input is then predicted on its own grid.

    Examples
    --------
    >>> zoom_factors((50, 6, 6), "nanometer", (50, 4, 4), "nanometer")
    (1.5, 1.5)
    >>> zoom_factors((1, 0.004, 0.004), "micrometer", (50, 4, 4), "nanometer") is None
    True
    """
    given = in_nanometers(input_size, input_unit)
    trained = in_nanometers(trained_size, trained_unit)
    if given is None or trained is None:
        return None
    factors = tuple(g / t for g, t in zip(given, trained, strict=True))
    if all(abs(f - 1.0) <= TOLERANCE for f in factors):
        return None
    return factors


def zoom_for(
    checkpoints: Sequence[str | os.PathLike], volume: Volume, *, quiet: bool = False
) -> tuple[float, float] | None:
    """`zoom_factors` of ``volume`` for the data the checkpoints were trained on, None beyond `MAX_ZOOM`;
    logs what predict does unless ``quiet``."""
    trained = training_pixel_size(checkpoints)
    if trained is None:
        return None
    zoom = zoom_factors(volume.voxel_size, volume.unit, *trained)
    plausible = zoom is None or all(1 / MAX_ZOOM <= f <= MAX_ZOOM for f in zoom)
    if not quiet:
        _explain(volume, trained, zoom, plausible)
    return zoom if plausible else None


def _explain(volume: Volume, trained: tuple, zoom: tuple[float, float] | None, plausible: bool) -> None:
    (_, y, x), unit = trained
    model_pixels = f"{y:g} x {x:g} {unit}"
    if not plausible:
        log.warning(
            "%s: pixels of %g x %g %s, %.3g x %.3g times the %s the model was trained on: taken for wrong "
            "metadata and predicted as they are; fix the volume's voxel size (the volume sheet's voxel_size "
            "column, or --voxel-size with --unit), or resample the volume yourself",
            volume.path, *volume.voxel_size[1:], volume.unit, *zoom, model_pixels,
        )  # fmt: skip
    elif zoom is not None:
        log.info(
            "%s: pixels of %g x %g %s, the model was trained on %s: predicting on that grid (x%.3g, "
            "x%.3g in y, x) and resampling the probabilities back",
            volume.path, *volume.voxel_size[1:], volume.unit, model_pixels, *zoom,
        )  # fmt: skip
    elif in_nanometers(volume.voxel_size, volume.unit) is None:
        log.warning(
            "%s records no pixel size in a known unit (unit %r); the model was trained on %s pixels and "
            "sees this volume at its own: give its voxel size (the volume sheet's voxel_size column, or "
            "--voxel-size with --unit) to predict at the model's pixel size",
            volume.path, volume.unit, model_pixels,
        )  # fmt: skip


def _positions(begin: int, end: int, zoom: float) -> np.ndarray:
    """Where pixels ``begin..end-1`` of one grid lie on the other, ``zoom`` times finer."""
    return (np.arange(begin, end, dtype=np.float64) + 0.5) * zoom - 0.5


def _sample(data: np.ndarray, positions: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``data`` along ``axis`` at ``positions`` (0 = its first pixel); positions
    outside the pixels take the nearest one."""
    last = data.shape[axis] - 1
    below = np.clip(np.floor(positions).astype(np.intp), 0, last)
    above = np.minimum(below + 1, last)
    weight = np.clip(positions - below, 0.0, 1.0).astype(np.float32)
    shape = [1] * data.ndim
    shape[axis] = len(positions)
    weight = weight.reshape(shape)
    return np.take(data, below, axis=axis) * (1 - weight) + np.take(data, above, axis=axis) * weight


class ResampledSource:
    """A (Z, Y, X) volume as seen on the model's grid: ``zoom`` times as many pixels in Y and X.

    Reading a box reads the input pixels it needs (mirrored outside the volume), smooths them where the
    grid is coarser than the input (sigma = (1/zoom - 1) / 2 input pixels) and interpolates linearly.

    Parameters
    ----------
    source : array-like
        The input (Z, Y, X): numpy, zarr, or anything `tiling.read_mirrored` reads.
    zoom : (float, float)
        Model-grid pixels per input pixel in Y and X (`zoom_factors`).
    """

    def __init__(self, source: Any, zoom: Sequence[float]) -> None:
        self.source = source
        self.zoom = tuple(float(z) for z in zoom)
        z, y, x = (int(s) for s in source.shape)
        self.shape = (z, *(max(1, round(n * f)) for n, f in zip((y, x), self.zoom, strict=True)))
        self.dtype = np.dtype(np.float32)
        self._sigma = [max(0.0, (1.0 / f - 1.0) / 2.0) for f in self.zoom]

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        zs, *yx = key
        begin, size, where = [zs.start], [zs.stop - zs.start], []
        for axis_slice, zoom, sigma in zip(yx, self.zoom, self._sigma, strict=True):
            positions = _positions(axis_slice.start, axis_slice.stop, 1.0 / zoom)
            margin = int(TRUNCATE * sigma + 0.5) + 1
            first = math.floor(positions.min()) - margin
            begin.append(first)
            size.append(math.floor(positions.max()) + 2 + margin - first)
            where.append(positions - first)
        data = read_mirrored(self.source, Roi(tuple(begin), tuple(size))).astype(np.float32)
        for axis, (positions, sigma) in enumerate(zip(where, self._sigma, strict=True), start=1):
            if sigma > 0:
                data = gaussian_filter1d(data, sigma, axis=axis, mode="nearest", truncate=TRUNCATE)
            data = _sample(data, positions, axis)
        return data


def model_block(block: Block, source: ResampledSource) -> Block:
    """The block of the model's grid whose probabilities ``block`` (of the input's grid) is sampled from."""
    begin, size = [block.write_roi.begin[0]], [block.write_roi.shape[0]]
    for axis, zoom in enumerate(source.zoom, start=1):
        positions = _model_positions(block.write_roi, axis, zoom, source.shape[axis])
        first = int(np.floor(positions.min()))
        begin.append(first)
        size.append(min(source.shape[axis], int(np.floor(positions.max())) + 2) - first)
    return Block(block.block_id, block.grid_index, Roi(tuple(begin), tuple(size)))


def _model_positions(roi: Roi, axis: int, zoom: float, extent: int) -> np.ndarray:
    """The model-grid positions of the roi's pixels along ``axis``; the outermost input pixels, which lie
    up to half a pixel past the model grid's first and last pixel centres, take the edge values."""
    return np.clip(_positions(roi.begin[axis], roi.end[axis], zoom), 0, extent - 1)


def back_to_input(prob: np.ndarray, block: Block, computed: Block, source: ResampledSource) -> np.ndarray:
    """``block``'s probabilities on the input's grid from ``prob``, those of ``computed`` (`model_block`)."""
    for axis, zoom in enumerate(source.zoom, start=1):
        positions = _model_positions(block.write_roi, axis, zoom, source.shape[axis])
        prob = _sample(prob, positions - computed.write_roi.begin[axis], axis)
    return prob
