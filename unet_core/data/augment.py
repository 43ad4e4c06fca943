"""Training-tile augmentation of the U-Net paper: elastic deformation, rotation, flips, gray values.

One call of :func:`augment` draws, in this order and each only when enabled in
:class:`AugmentConfig`:

1. one of the 8 dihedral transforms (rot90 x flip), applied exactly as an index permutation
   (only the 4 that keep the shape when the tile is not square);
2. a small rotation angle, a zoom and an elastic displacement field, combined into ONE coordinate map
   so every array is resampled once (raw and weights bilinear, labels nearest, mirror boundary);
3. gray-value changes of raw only: contrast, brightness, gamma, additive Gaussian noise.

Everything is numpy/scipy and deterministic given the ``np.random.Generator``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from io import BytesIO
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..io.atomic import atomic_write_bytes
from ..mirror import reflect_indices

logger = logging.getLogger(__name__)

_BLOCK_PIXELS = 8192


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations :func:`augment` applies and how strongly; 0 or False disables a part.

    Attributes
    ----------
    flip_rotate : bool
        Random dihedral transform (90-degree rotations and flips).
    elastic_sigma : float
        Std (pixels) of the random displacements on the coarse grid (paper: 10).
    elastic_grid : int
        Coarse grid size per axis (paper: 3); must be >= 2 unless 0.
    rotation_degrees : float
        Rotation angle drawn uniformly in [-rotation_degrees, rotation_degrees], at most 180.
    scale : float
        Zoom factor drawn log-uniformly in [1 / (1 + scale), 1 + scale] (not in the paper): the same
        cells at other pixel sizes, as another microscope's stack shows them.
    contrast : float
        Contrast factor drawn uniformly in [1 - contrast, 1 + contrast] around the tile mean; < 1.
    brightness : float
        Offset drawn uniformly in [-brightness, brightness].
    gamma : float
        Gamma exponent drawn log-uniformly in [1 / (1 + gamma), 1 + gamma].
    noise_std : float
        Std of additive Gaussian noise.
    """

    flip_rotate: bool = True
    elastic_sigma: float = 10.0
    elastic_grid: int = 3
    rotation_degrees: float = 15.0
    scale: float = 0.0
    contrast: float = 0.2
    brightness: float = 0.1
    gamma: float = 0.2
    noise_std: float = 0.03

    def __post_init__(self) -> None:
        if not isinstance(self.flip_rotate, bool):
            raise TypeError(f"flip_rotate must be a bool, got {self.flip_rotate!r}")
        for field in fields(self)[1:]:
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{field.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{field.name} must be a finite number >= 0, got {value}")
        if not isinstance(self.elastic_grid, int) or self.elastic_grid == 1:
            raise ValueError(f"elastic_grid must be an integer >= 2 or 0, got {self.elastic_grid}")
        if self.rotation_degrees > 180:
            raise ValueError(f"rotation_degrees must be <= 180, got {self.rotation_degrees}")
        if self.contrast >= 1:
            raise ValueError(f"contrast must be < 1 (factor 1 - contrast > 0), got {self.contrast}")

    @property
    def elastic(self) -> bool:
        """Whether the elastic deformation is enabled."""
        return self.elastic_sigma > 0 and self.elastic_grid > 0

    @property
    def gray(self) -> bool:
        """Whether any gray-value change is enabled."""
        return any((self.contrast, self.brightness, self.gamma, self.noise_std))


def _check_rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _check_tile(
    raw: np.ndarray, labels: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    for name, array in (("raw", raw), ("labels", labels), ("weights", weights)):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
        if array.ndim != 2:
            raise ValueError(f"{name} must be 2D (Y, X), got shape {array.shape}")
        if array.size == 0:
            raise ValueError(f"{name} must not be empty, got shape {array.shape}")
    if not raw.shape == labels.shape == weights.shape:
        raise ValueError(
            "raw, labels and weights must have the same shape, got "
            f"{raw.shape}, {labels.shape} and {weights.shape}"
        )
    for name, array in (("raw", raw), ("weights", weights)):
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"{name} must be floating point (float32), got {array.dtype}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise TypeError(f"labels must have an integer or bool dtype, got {labels.dtype}")
    return raw.astype(np.float32, copy=False), labels, weights.astype(np.float32, copy=False)


def draw_elastic_grid(rng: np.random.Generator, *, grid: int = 3, sigma: float = 10.0) -> np.ndarray:
    """Draw the coarse displacement grid of the elastic deformation.

    Parameters
    ----------
    rng : numpy.random.Generator
    grid : int
        Grid points per axis (paper: 3), >= 2.
    sigma : float
        Std of each displacement component in pixels (paper: 10).

    Returns
    -------
    ndarray of float64, shape (2, grid, grid)
        (dy, dx) displacement at each grid point, i.i.d. N(0, sigma^2).
    """
    rng = _check_rng(rng)
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
        raise ValueError(f"grid must be an integer >= 2, got {grid!r}")
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    return rng.normal(0.0, sigma, size=(2, grid, grid))


@lru_cache(maxsize=32)
def _cubic_weights(grid: int, length: int) -> np.ndarray:
    """(length, grid) matrix mapping grid values to their cubic-spline interpolation."""
    columns = [
        ndimage.zoom(unit, length / grid, order=3, mode="mirror", grid_mode=False) for unit in np.eye(grid)
    ]
    matrix = np.stack(columns, axis=1)
    matrix.flags.writeable = False
    return matrix


def _check_coarse(coarse: np.ndarray) -> np.ndarray:
    coarse = np.asarray(coarse, dtype=np.float64)
    if coarse.ndim != 3 or coarse.shape[0] != 2 or min(coarse.shape[1:]) < 2:
        raise ValueError(f"coarse must have shape (2, gy, gx) with gy, gx >= 2, got {coarse.shape}")
    return coarse


def dense_displacement(coarse: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bicubic (cubic B-spline) interpolation of a coarse displacement grid to every pixel.

    Parameters
    ----------
    coarse : ndarray, shape (2, gy, gx)
        Displacements at grid points spread evenly from corner to corner of the tile.
    shape : tuple of int
        Tile shape (Y, X).

    Returns
    -------
    ndarray of float64, shape (2, Y, X)

    Notes
    -----
    Equals ``scipy.ndimage.zoom(coarse[i], (Y / gy, X / gx), order=3, mode="mirror",
    grid_mode=False)``, computed as W_y @ coarse[i] @ W_x^T because the tensor-product spline is
    separable and linear in the grid values: two small matrix products instead of a 2D spline.
    """
    coarse = _check_coarse(coarse)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (Y, X) with Y, X >= 1, got {shape}")
    w_y = _cubic_weights(coarse.shape[1], int(shape[0]))
    w_x = _cubic_weights(coarse.shape[2], int(shape[1]))
    return np.einsum("yi,cij,xj->cyx", w_y, coarse, w_x, optimize=True)


def _mirror(index: np.ndarray, size: int) -> np.ndarray:
    """:func:`~unet_core.mirror.reflect_indices` (scipy.ndimage's ``mode="mirror"``) through a lookup
    table over the index range (integer modulo is slow)."""
    low, high = int(index.min()), int(index.max())
    if low >= 0 and high < size:
        return index
    table = reflect_indices(np.arange(low, high + 1), size)
    return table[index - low]


def _axis_sampling(source: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mirrored lower and upper neighbour indices and the float32 fraction along one axis."""
    floor = np.floor(source)
    fraction = (source - floor).astype(np.float32)
    low = floor.astype(np.intp)
    return _mirror(low, size), _mirror(low + 1, size), fraction


def _source_block(
    rows: slice,
    shape: tuple[int, int],
    angle_degrees: float,
    zoom: float,
    field: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Input coordinates sampled by output ``rows``: rotation and zoom about the centre plus the field.

    ``field`` is (W_y, coarse @ W_x^T) of :func:`dense_displacement`, so only these rows of the
    dense displacement are ever built.
    """
    center_y, center_x = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    y = np.arange(rows.start, rows.stop, dtype=np.float64)[:, None] - center_y
    x = np.arange(shape[1], dtype=np.float64) - center_x
    angle = math.radians(angle_degrees)
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    source_y = cos * y - sin * x + center_y
    source_x = sin * y + cos * x + center_x
    if field is not None:
        w_y, across = field
        source_y += w_y[rows] @ across[0]
        source_x += w_y[rows] @ across[1]
    return source_y, source_x


def warp(
    raw: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    *,
    angle_degrees: float = 0.0,
    zoom: float = 1.0,
    coarse: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample a tile once through a rotation and zoom about its centre plus an elastic displacement.

    Parameters
    ----------
    raw : ndarray of float, shape (Y, X)
    labels : ndarray of int, shape (Y, X)
    weights : ndarray of float, shape (Y, X)
    angle_degrees : float
        Rotation about the tile centre; a positive angle turns the content clockwise as displayed
        with rows downward (90 degrees gives ``np.rot90(image, -1)``).
    zoom : float
        Magnification about the tile centre, > 0: 2 shows the middle half of the tile at twice the size.
    coarse : ndarray, shape (2, gy, gx), optional
        Coarse displacement grid (see :func:`draw_elastic_grid`); its bicubic interpolation
        (:func:`dense_displacement`) is added to the rotated source coordinates.

    Returns
    -------
    tuple of ndarray
        New ``(raw, labels, weights)``: raw and weights float32 by bilinear interpolation, labels
        by nearest neighbour in their own dtype; outside the tile the input is mirrored.

    Notes
    -----
    Output pixel p samples the input at R(angle) (p - c) / zoom + c + u(p), c = tile centre, u = dense
    displacement; equal to ``scipy.ndimage.map_coordinates`` with ``order=1`` (raw, weights) or
    ``order=0`` (labels) and ``mode="mirror"`` up to float32 rounding. Raw and weights are clipped
    to their input [min, max], which only removes float32 rounding overshoot of the lerps.
    """
    raw, labels, weights = _check_tile(raw, labels, weights)
    if not 0 < zoom < math.inf:
        raise ValueError(f"zoom must be a finite number > 0, got {zoom}")
    shape = raw.shape
    field = None
    if coarse is not None:
        coarse = _check_coarse(coarse)
        w_x = _cubic_weights(coarse.shape[2], shape[1])
        field = (_cubic_weights(coarse.shape[1], shape[0]), coarse @ w_x.T)
    sources = [np.ascontiguousarray(image).ravel() for image in (raw, labels, weights)]
    outputs = [np.empty(shape, dtype=dtype) for dtype in (np.float32, labels.dtype, np.float32)]
    bounds = [(raw.min(), raw.max()), None, (weights.min(), weights.max())]
    # Row blocks keep every temporary small: whole-tile temporaries cost more in page faults
    # of fresh allocations than in arithmetic.
    step = max(1, _BLOCK_PIXELS // shape[1])
    for start in range(0, shape[0], step):
        rows = slice(start, min(start + step, shape[0]))
        source_y, source_x = _source_block(rows, shape, float(angle_degrees), float(zoom), field)
        low_y, high_y, frac_y = _axis_sampling(source_y, shape[0])
        low_x, high_x, frac_x = _axis_sampling(source_x, shape[1])
        low_y, high_y = low_y * shape[1], high_y * shape[1]  # flat row offsets
        nearest = np.where(frac_y >= 0.5, high_y, low_y) + np.where(frac_x >= 0.5, high_x, low_x)
        np.take(sources[1], nearest, out=outputs[1][rows])
        corners = (low_y + low_x, low_y + high_x, high_y + low_x, high_y + high_x)
        for index in (0, 2):
            a, b, c, d = (np.take(sources[index], corner) for corner in corners)
            top = a + frac_x * (b - a)
            block = top + frac_y * (c + frac_x * (d - c) - top)
            # a fraction just below 1 rounds to 1.0 in float32, and a + 1.0 * (b - a) may
            # overshoot b by an ulp: clip to keep outputs within the input range
            np.clip(block, *bounds[index], out=outputs[index][rows])
    return outputs[0], outputs[1], outputs[2]


def elastic_deform(
    raw: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    *,
    rng: np.random.Generator,
    sigma: float = 10.0,
    grid: int = 3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth elastic deformation of a tile, as in the U-Net paper.

    Parameters
    ----------
    raw, labels, weights : ndarray, shape (Y, X)
        Raw float32, labels integer, weights float32.
    rng : numpy.random.Generator
    sigma : float
        Std of the coarse displacements in pixels (paper: 10).
    grid : int
        Coarse grid points per axis (paper: 3).

    Returns
    -------
    tuple of ndarray
        Deformed ``(raw, labels, weights)``, see :func:`warp`.

    Notes
    -----
    "Random displacement vectors on a coarse 3 by 3 grid [...] sampled from a Gaussian
    distribution with 10 pixels standard deviation. Per-pixel displacements are then computed
    using bicubic interpolation." (Ronneberger et al. 2015, section 3.1):
    :func:`draw_elastic_grid`, then :func:`dense_displacement`, then :func:`warp`.
    """
    raw, labels, weights = _check_tile(raw, labels, weights)
    coarse = draw_elastic_grid(rng, grid=grid, sigma=sigma)
    return warp(raw, labels, weights, coarse=coarse)


def _dihedral(arrays: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Views of one random dihedral transform (only shape-preserving ones for non-square tiles)."""
    square = arrays[0].shape[0] == arrays[0].shape[1]
    turns = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
    flip = bool(rng.integers(2))
    views = [np.rot90(array, turns) for array in arrays]
    return [view[:, ::-1] for view in views] if flip else views


def _log_uniform(rng: np.random.Generator, spread: float) -> float:
    """A factor drawn log-uniformly in [1 / (1 + spread), 1 + spread]: as likely halved as doubled."""
    log_range = math.log1p(spread)
    return math.exp(rng.uniform(-log_range, log_range))


def _gray_values(raw: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> None:
    """Contrast, brightness, gamma and noise on float32 raw in [0, 1], in place; clip to [0, 1]."""
    if config.contrast:
        factor = rng.uniform(1 - config.contrast, 1 + config.contrast)
        mean = raw.mean()
        raw -= mean
        raw *= np.float32(factor)
        raw += mean
    if config.brightness:
        raw += np.float32(rng.uniform(-config.brightness, config.brightness))
    if config.gamma:
        exponent = _log_uniform(rng, config.gamma)
        np.power(np.clip(raw, 0, 1, out=raw), np.float32(exponent), out=raw)
    if config.noise_std:
        noise = rng.standard_normal(raw.shape, dtype=np.float32)
        noise *= np.float32(config.noise_std)
        raw += noise
    np.clip(raw, 0, 1, out=raw)


def augment(
    raw: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    *,
    rng: np.random.Generator,
    config: AugmentConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Randomly augment one training tile.

    Parameters
    ----------
    raw : ndarray of float32, shape (Y, X)
        Normalised to [0, 1] by the caller.
    labels : ndarray of int, shape (Y, X)
    weights : ndarray of float32, shape (Y, X)
    rng : numpy.random.Generator
        The only source of randomness: the same generator state gives the same output.
    config : AugmentConfig

    Returns
    -------
    tuple of ndarray
        New ``(raw, labels, weights)`` arrays of the input shape: raw and weights float32, labels
        in their input dtype. Labels only take input label values (nearest neighbour) and weights
        stay within the input's [min, max] (bilinear). Raw is clipped to [0, 1] when a gray-value
        change is enabled.

    Notes
    -----
    Order: dihedral transform (exact), rotation + zoom + elastic field in one resampling
    (:func:`warp`), gray values (raw only). Ronneberger et al. 2015, section 3.1.

    Examples
    --------
    >>> raw, labels = np.full((64, 64), 0.5, np.float32), np.ones((64, 64), np.uint8)
    >>> weights = np.ones((64, 64), np.float32)
    >>> rng = np.random.default_rng(0)
    >>> raw, labels, weights = augment(raw, labels, weights, rng=rng, config=AugmentConfig())
    >>> raw.shape, labels.dtype, float(weights.min()), float(weights.max())
    ((64, 64), dtype('uint8'), 1.0, 1.0)
    """
    rng = _check_rng(rng)
    if not isinstance(config, AugmentConfig):
        raise TypeError(f"config must be an AugmentConfig, got {type(config).__name__}")
    arrays = _check_tile(raw, labels, weights)
    if config.flip_rotate:
        arrays = _dihedral(arrays, rng)
    angle = rng.uniform(-config.rotation_degrees, config.rotation_degrees) if config.rotation_degrees else 0.0
    zoom = _log_uniform(rng, config.scale) if config.scale else 1.0
    coarse = (
        draw_elastic_grid(rng, grid=config.elastic_grid, sigma=config.elastic_sigma)
        if config.elastic
        else None
    )
    if config.rotation_degrees or config.scale or coarse is not None:
        raw, labels, weights = warp(*arrays, angle_degrees=angle, zoom=zoom, coarse=coarse)
    else:
        raw, labels, weights = (np.array(array, order="C") for array in arrays)
    if config.gray:
        _gray_values(raw, rng, config)
    return raw, labels, weights


def save_augmentation_panel(
    path: str | os.PathLike[str],
    examples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> Path:
    """Write a PNG grid with one row per example: raw, labels, weights.

    Parameters
    ----------
    path : str or PathLike
        Output PNG; parent folders are created; written atomically (rendered in memory, then
        `unet_core.io.atomic.atomic_write_bytes`).
    examples : sequence of (raw, labels, weights)
        2D arrays; raw shown in gray on [0, 1], labels and weights with their own colour scale.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(path)!r}")
    if len(examples) == 0:
        raise ValueError("examples must hold at least one (raw, labels, weights) tuple, got none")
    for row, example in enumerate(examples):
        if len(example) != 3:
            raise ValueError(f"examples[{row}] must be (raw, labels, weights), got {len(example)}")
        _check_tile(*example)

    figure = Figure(figsize=(9, 3 * len(examples)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(examples), 3, squeeze=False)
    for row, (raw, labels, weights) in enumerate(examples):
        axes[row, 0].imshow(raw, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[row, 1].imshow(labels, cmap="nipy_spectral", interpolation="nearest")
        image = axes[row, 2].imshow(weights, cmap="viridis", interpolation="nearest")
        figure.colorbar(image, ax=axes[row, 2], shrink=0.8)
        for ax in axes[row]:
            ax.set_axis_off()
    for ax, title in zip(axes[0], ("raw", "labels", "weights"), strict=True):
        ax.set_title(title)

    png = BytesIO()
    figure.savefig(png, format="png", dpi=100)
    atomic_write_bytes(path, png.getvalue())
    logger.info("wrote augmentation panel with %d examples to %s", len(examples), path)
    return path
