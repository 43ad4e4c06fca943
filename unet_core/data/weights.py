"""Pixel-wise loss weights of the U-Net paper (Ronneberger, Fischer, Brox 2015, eq. 2).

w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

w_c balances the class frequencies (membrane vs cell); d1 and d2 are the Euclidean distances from
pixel x to the nearest and the second-nearest cell (distance to the closest pixel of that cell, so
d1 = 0 on a cell's own pixels). The border term is applied to every pixel, membrane and cell alike:
on a membrane pixel between two touching cells it is large (d1 + d2 ~ membrane width), on a cell
pixel it is w0 * exp(-d2^2 / (2 sigma^2)) with d2 the distance to the nearest *other* cell, which
emphasises the cell's rim where it faces a neighbour.

Cost grows with the image area, not area x cells: each cell's distance transform is computed only
inside its bounding box grown by the band radius D (see :func:`border_band`), and every pixel keeps
its two smallest distances. The border term is dropped where it is below ``tol`` (1e-3), i.e. where
d1 + d2 > D; every pixel with d1 + d2 <= D has both cells within D, hence inside both cells' grown
boxes, so every term that is kept is exact and every dropped term is < ``tol``.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

#: Border terms below this value are dropped (see :func:`border_band`).
BORDER_TOLERANCE = 1e-3

_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def _check_label_array(labels: object, *, name: str, ndims: tuple[int, ...] | None = None) -> np.ndarray:
    """Validate an integer/bool, non-negative label array of one of ``ndims`` (None: any)."""
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(labels).__name__}")
    if ndims is not None and labels.ndim not in ndims:
        expected = " or ".join(f"{n}D" for n in ndims)
        raise ValueError(f"{name} must be {expected}, got shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise TypeError(f"{name} must have an integer or bool dtype, got {labels.dtype}")
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise ValueError(f"{name} must be non-negative (0 = membrane), got minimum {labels.min()}")
    return labels


def _check_positive(value: float, *, name: str, allow_zero: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value}")
    return value


def instances_from_binary(labels: np.ndarray) -> np.ndarray:
    """Label the 4-connected components of cells (``labels > 0``) in each 2D slice.

    Parameters
    ----------
    labels : ndarray of int or bool, shape (Y, X) or (Z, Y, X)
        0 = membrane, > 0 = cell interior (ISBI labels: 255).

    Returns
    -------
    ndarray of int32, same shape
        0 on membrane; cells numbered 1, 2, ... Slices of a volume are labelled independently
        (a cell is never connected across slices) and ids are unique within the whole volume.

    Examples
    --------
    >>> instances_from_binary(np.array([[1, 0, 1], [0, 1, 0]]))
    array([[1, 0, 2],
           [0, 3, 0]], dtype=int32)
    """
    labels = _check_label_array(labels, name="labels", ndims=(2, 3))
    slices = labels[np.newaxis] if labels.ndim == 2 else labels
    out = np.zeros(slices.shape, dtype=np.int32)
    offset = 0
    for z, plane in enumerate(slices):
        count = ndimage.label(plane > 0, structure=_FOUR_CONNECTED, output=out[z])
        out[z][out[z] > 0] += offset
        offset += count
    return out[0] if labels.ndim == 2 else out


def class_weights(labels: np.ndarray, balance: float = 1.0) -> tuple[float, float]:
    """Class-balancing weights (w_membrane, w_cell) from class frequencies.

    Parameters
    ----------
    labels : ndarray of int or bool, any shape
        0 = membrane, > 0 = cell (binary or instance labels).
    balance : float
        How far to balance, 0 to 1: the weights are raised to this power (1: the paper's balance,
        0: every pixel weighs 1).

    Returns
    -------
    tuple of float
        ``(w_membrane, w_cell)``.

    Notes
    -----
    With N pixels of which N_k belong to class k: w_k = (N / (2 N_k)) ** balance. At balance 1 both
    classes contribute w_k N_k = N / 2 to the summed weight and the mean weight over the volume is 1.
    When one class is absent there is nothing to balance and both weights are 1.

    Examples
    --------
    >>> class_weights(np.array([0, 255, 255, 255]))
    (2.0, 0.6666666666666666)
    """
    labels = _check_label_array(labels, name="labels")
    cells = int(np.count_nonzero(labels))
    return class_weights_from_counts(labels.size - cells, cells, balance)


def class_weights_from_counts(membrane: int, cells: int, balance: float = 1.0) -> tuple[float, float]:
    """`class_weights` from pixel counts, for callers that stream the labels: w_k = (N / (2 N_k)) ** balance.

    >>> class_weights_from_counts(1, 3)
    (2.0, 0.6666666666666666)
    >>> class_weights_from_counts(1, 3, balance=0)
    (1.0, 1.0)
    """
    if not 0 <= balance <= 1:
        raise ValueError(f"class balance must lie in [0, 1] (1: the paper's, 0: none), got {balance}")
    if cells == 0 or membrane == 0:
        return 1.0, 1.0
    total = membrane + cells
    return (total / (2 * membrane)) ** balance, (total / (2 * cells)) ** balance


def border_band(*, w0: float = 10.0, sigma: float = 5.0, tol: float = BORDER_TOLERANCE) -> float:
    """Band radius D beyond which the border term is negligible.

    Parameters
    ----------
    w0, sigma : float
        Border-term amplitude and width (pixels).
    tol : float
        Terms below this are dropped.

    Returns
    -------
    float
        D = sigma * sqrt(2 ln(w0 / tol)), so w0 * exp(-D^2 / (2 sigma^2)) = tol; 0 when w0 <= tol.

    Notes
    -----
    For w0 = 10, sigma = 5 and tol = 1e-3, D = 21.46 px.
    """
    w0 = _check_positive(w0, name="w0", allow_zero=True)
    sigma = _check_positive(sigma, name="sigma")
    tol = _check_positive(tol, name="tol")
    if w0 <= tol:
        return 0.0
    return sigma * math.sqrt(2.0 * math.log(w0 / tol))


def _ranks(instances: np.ndarray) -> np.ndarray:
    """Each pixel's rank among the distinct values of ``instances`` (``np.unique``'s inverse).

    Ids whose range is no wider than the slice has pixels (a slice labelled 1, 2, ...) are ranked by a
    table over that range, far cheaper than ``np.unique``'s sort, which still ranks any other ids.
    """
    values = instances.view(np.uint8) if instances.dtype == bool else instances
    low, high = values.min(), values.max()
    if int(high) - int(low) > values.size:
        return np.unique(values, return_inverse=True)[1].reshape(values.shape)
    shifted = (values - low).astype(np.intp)
    present = np.bincount(shifted.ravel(), minlength=int(high - low) + 1) > 0
    return (np.cumsum(present) - 1)[shifted]


def _two_nearest_distances(instances: np.ndarray, band: float) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the two smallest distances to cells whose grown bounding box covers it."""
    inverse = _ranks(instances)
    if instances.min() != 0:  # no membrane: shift so that every cell has an id >= 1
        inverse += 1
    d1 = np.full(instances.shape, np.inf)
    d2 = np.full(instances.shape, np.inf)
    grow = math.ceil(band)
    for cell, box in enumerate(ndimage.find_objects(inverse), start=1):
        if box is None:
            continue
        crop = tuple(
            slice(max(s.start - grow, 0), min(s.stop + grow, n))
            for s, n in zip(box, instances.shape, strict=True)
        )
        dist = ndimage.distance_transform_edt(inverse[crop] != cell)
        near, second = d1[crop], d2[crop]
        np.minimum(second, np.maximum(near, dist), out=second)
        np.minimum(near, dist, out=near)
    return d1, d2


def weight_map(
    instances: np.ndarray,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weight: tuple[float, float] | None = None,
) -> np.ndarray:
    """U-Net loss weight map of one 2D slice.

    Parameters
    ----------
    instances : ndarray of int, shape (Y, X)
        Instance labels: 0 = membrane, each cell one id > 0 (see :func:`instances_from_binary`).
    w0 : float
        Amplitude of the border term (paper: 10).
    sigma : float
        Width of the border term in pixels (paper: about 5).
    class_weight : tuple of float, optional
        ``(w_membrane, w_cell)``; default: :func:`class_weights` of this slice.

    Returns
    -------
    ndarray of float32, shape (Y, X)

    Notes
    -----
    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2)) (Ronneberger et al. 2015, eq. 2),
    d1, d2 = Euclidean distance to the nearest and second-nearest cell, for every pixel (d1 = 0
    inside a cell). The border term is set to 0 where it is below 1e-3, i.e. where
    d1 + d2 > :func:`border_band`; pixels with fewer than two cells within that band get none.

    Examples
    --------
    >>> w = weight_map(np.array([[1, 0, 0, 2]]), class_weight=(1.0, 1.0))
    >>> bool(np.allclose(w, 1 + 10 * np.exp(-9 / 50)))
    True
    """
    instances = _check_label_array(instances, name="instances", ndims=(2,))
    w0 = _check_positive(w0, name="w0", allow_zero=True)
    sigma = _check_positive(sigma, name="sigma")
    if class_weight is None:
        class_weight = class_weights(instances)
    elif len(class_weight) != 2:
        raise ValueError(f"class_weight must be (w_membrane, w_cell), got {class_weight!r}")
    w_membrane = _check_positive(class_weight[0], name="class_weight[0]")
    w_cell = _check_positive(class_weight[1], name="class_weight[1]")

    band = border_band(w0=w0, sigma=sigma)
    border = band > 0 and instances.size > 0
    # The border term is added in float64 and cast once; without it, float32 at once gives the same
    # values. A fill and a masked copy: cheaper than np.where with two scalars.
    dtype = np.float64 if border else np.float32
    weights = np.full(instances.shape, w_membrane, dtype)
    np.copyto(weights, dtype(w_cell), where=instances > 0)
    if not border:
        return weights
    d1, d2 = _two_nearest_distances(instances, band)
    total = d1 + d2
    near = total <= band
    weights[near] += w0 * np.exp(-(total[near] ** 2) / (2.0 * sigma**2))
    return weights.astype(np.float32)


def weight_volume(
    instances: np.ndarray, *, w0: float = 10.0, sigma: float = 5.0, class_balance: float = 1.0
) -> np.ndarray:
    """U-Net loss weights of a volume, slice by slice, with class weights of the whole volume: what
    ``unet-core prepare`` stores (it streams the slices instead of holding the volume).

    Parameters
    ----------
    instances : ndarray of int, shape (Z, Y, X)
        Instance labels, 0 = membrane (see :func:`instances_from_binary`).
    w0, sigma : float
        Border-term amplitude and width, as in :func:`weight_map`.
    class_balance : float
        How far the class weights balance the class frequencies, 0 to 1, as in :func:`class_weights`.

    Returns
    -------
    ndarray of float32, shape (Z, Y, X)

    Notes
    -----
    Class weights come from :func:`class_weights` over the whole volume; border distances are
    measured within each slice (the paper's data are 2D).
    """
    instances = _check_label_array(instances, name="instances", ndims=(3,))
    balance = class_weights(instances, class_balance)
    out = np.empty(instances.shape, dtype=np.float32)
    for z, plane in enumerate(instances):
        out[z] = weight_map(plane, w0=w0, sigma=sigma, class_weight=balance)
        logger.debug("weights of slice %d/%d done", z + 1, len(instances))
    return out
