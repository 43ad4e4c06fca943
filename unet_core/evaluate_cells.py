"""Scoring cells (instance labels) the Cell Tracking Challenge's way, for stores of instance labels.

The U-Net paper's second experiment (Table 2) scores touching cells of light microscopy with the
challenge's SEG (`metrics.iou_seg`): each reference cell's Jaccard index with the predicted cell that
covers more than half of it, 0 without one, averaged over every reference cell of every frame. Foreground
IoU and Dice are scored beside it, on the frames whose reference annotates every cell (a partial frame's
unannotated cells would count as false positives; SEG scores annotated cells only).

Three methods are scored on the held-out frames:

- ``unet``: the probability map thresholded at t, its 4-connected components, at the t of the best SEG
  (the sweep is ``metrics_per_threshold.csv``);
- ``segmentation``: the cells ``unet-core segment`` delivers;
- ``variance_watershed``: a classical baseline without training (`classical_cells`), which a trained
  U-Net must beat clearly.

The same scores of the segmented validation frames are the `Trainer`'s validation on such stores
(`cell_validation_metrics`), so that ``best.pt`` is chosen by the SEG of what ``segment`` will deliver.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.measure import label as connected_components
from skimage.morphology import h_maxima, remove_small_objects
from skimage.segmentation import watershed

from . import io, metrics
from .dataset import TrainingStore
from .inference import decode
from .segment import SegmentOptions, segment_slice

log = logging.getLogger(__name__)

#: The scores of cells, in the order of the tables: SEG, then foreground IoU and Dice of complete frames.
CELL_METRICS = ("seg", "foreground_iou", "dice")
#: Thresholds on P(cell) of the ``unet`` method.
MAP_THRESHOLDS = tuple(np.round(np.arange(0.1, 1.0, 0.1), 1))
#: The classical baseline's settings, chosen by its SEG on the DIC-HeLa training frames 0-5: the local
#: standard deviation over ``window`` px, smoothed by ``smooth`` px, above Otsu's threshold, closed by
#: ``close`` px, holes filled, regions under ``min_size`` px dropped, cut by a watershed of the smoothed
#: distance transform from its maxima of height ``seed_height`` px.
BASELINE = {"window": 5, "smooth": 4.0, "close": 6, "min_size": 2000, "seed_height": 2.0}


def classical_cells(raw: np.ndarray) -> np.ndarray:
    """Cells of one 2D light-microscopy image without training: local variance, Otsu, a watershed.

    Cells are textured and the glass around them is flat: the local standard deviation of the
    intensities, smoothed and thresholded by Otsu's method, marks the cells; their distance transform
    parts touching ones (`BASELINE` holds the settings).

    Parameters
    ----------
    raw : ndarray, shape (Y, X)
        The image, any real dtype.

    Returns
    -------
    ndarray of int32, shape (Y, X)
        Cell ids 1..N, 0 = background.
    """
    image = np.asarray(raw, np.float64)
    size = BASELINE["window"]
    mean = ndimage.uniform_filter(image, size)
    spread = np.sqrt(np.maximum(ndimage.uniform_filter(image**2, size) - mean**2, 0.0))
    texture = ndimage.gaussian_filter(spread, BASELINE["smooth"])
    cells = texture > threshold_otsu(texture) if np.ptp(texture) > 0 else np.zeros(image.shape, bool)
    cells = ndimage.binary_fill_holes(ndimage.binary_closing(cells, iterations=BASELINE["close"]))
    cells = remove_small_objects(cells, max_size=BASELINE["min_size"] - 1)
    distance = ndimage.gaussian_filter(ndimage.distance_transform_edt(cells), 2.0)
    seeds = connected_components(h_maxima(distance, BASELINE["seed_height"]) & cells, connectivity=2)
    return watershed(-distance, seeds, mask=cells).astype(np.int32)


def cell_scores(labels: np.ndarray, reference: np.ndarray, *, complete: np.ndarray) -> dict[str, float]:
    """SEG over every frame, foreground IoU and Dice over the ``complete`` ones, and the cell counts.

    Parameters
    ----------
    labels, reference : ndarray of int, shape (Z, Y, X)
        Predicted and reference cell ids per frame, 0 = background.
    complete : ndarray of bool, shape (Z,)
        Frames whose reference annotates every cell.

    Returns
    -------
    dict
        ``seg`` (pooled over the reference cells of all frames), ``foreground_iou`` and ``dice`` (means
        over the complete frames; NaN without one), ``n_objects`` and ``n_matched``.
    """
    seg = metrics.iou_seg(labels, reference)
    overlap = metrics.iou_seg(labels[complete], reference[complete]) if complete.any() else {}
    return {
        "seg": seg["seg"],
        "foreground_iou": overlap.get("foreground_iou", math.nan),
        "dice": overlap.get("dice", math.nan),
        "n_objects": seg["n_objects"],
        "n_matched": seg["n_matched"],
    }


def _per_frame(labels: np.ndarray, reference: np.ndarray, complete: np.ndarray) -> pd.DataFrame:
    """Long table of each frame's scores: ``slice``, ``metric``, ``value``."""
    rows = []
    for z in range(len(labels)):
        scores = cell_scores(labels[z : z + 1], reference[z : z + 1], complete=complete[z : z + 1])
        rows += [{"slice": z, "metric": name, "value": float(value)} for name, value in scores.items()]
    return pd.DataFrame(rows)


def _complete(store: TrainingStore, chosen: slice) -> np.ndarray:
    partial = set(store.partial_slices)
    return np.array([z not in partial for z in range(chosen.start, chosen.stop)], bool)


def read_segmentation(
    path: str | os.PathLike, shape: tuple[int, ...], chosen: slice, *, shape_of: str = "prepared frames'"
) -> np.ndarray:
    """The ``chosen`` slices of a segmentation from ``unet-core segment``: integer cell ids of ``shape``
    (the shape of the ``shape_of`` volume, named in the error), else one `io.VolumeError`."""
    volume = io.open_volume(path)
    if volume.shape != shape or volume.dtype.kind not in "iu":
        raise io.VolumeError(
            f"{path}: {volume.dtype} labels of shape {volume.shape}, expected integer cell ids of the "
            f"{shape_of} shape {shape}; segment the same prediction again"
        )
    return io.read_slices(volume, chosen.start, chosen.stop)


def evaluate_cells(
    prediction: str | os.PathLike,
    store: TrainingStore,
    chosen: slice,
    *,
    out_csv: str | os.PathLike,
    segmentation: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Write ``metrics.csv`` and its per-threshold and per-frame CSVs for a store of instance labels.

    Parameters
    ----------
    prediction : str or path-like
        P(cell) of the store's raw data (``unet-core predict``).
    store : TrainingStore
        A prepared store whose ``labels_kind`` is ``instances``.
    chosen : slice
        The frames to score.
    out_csv : str or path-like
        ``metrics.csv`` (method, metric, value, threshold, slices): ``seg``, ``foreground_iou``, ``dice``,
        ``n_objects`` and ``n_matched`` of each method; ``metrics_per_threshold.csv`` (the ``unet``
        method's scores per threshold) and ``metrics_per_slice.csv`` (each frame's scores, with the frame's
        name where the store records one) go beside it, and ``metrics.csv`` is written last.
    segmentation : str or path-like, optional
        The cells ``unet-core segment`` made of ``prediction``, scored as method ``segmentation``.

    Returns
    -------
    pandas.DataFrame
        What ``metrics.csv`` holds.

    Raises
    ------
    io.VolumeError
        A prediction or segmentation of another shape, non-integer labels, or probabilities with NaN.
    """
    shape = tuple(store.raw.shape)
    prob_volume = io.open_volume(prediction)
    io.check_real(prob_volume, "probabilities")
    if prob_volume.shape != shape:
        raise io.VolumeError(
            f"{prediction}: shape {prob_volume.shape} differs from the prepared frames' {shape}; predict "
            f"the store {store.path}"
        )
    prob = decode(io.read_slices(prob_volume, chosen.start, chosen.stop), np.float64)
    if not np.isfinite(prob).all():
        raise io.VolumeError(f"{prediction}: probabilities contain NaN or inf; predict the volume again")
    reference = np.asarray(store.instances[chosen])
    complete = _complete(store, chosen)
    sweep = pd.DataFrame(
        [
            {"method": "unet", "threshold": t}
            | cell_scores(
                np.stack([connected_components(p > t, connectivity=1) for p in prob]),
                reference,
                complete=complete,
            )
            for t in MAP_THRESHOLDS
        ]
    )
    best = float(sweep.loc[sweep["seg"].idxmax(), "threshold"])  # the first of equal SEGs
    runs = {"unet": (np.stack([connected_components(p > best, connectivity=1) for p in prob]), best)}
    if segmentation is not None:
        runs["segmentation"] = (read_segmentation(segmentation, shape, chosen), math.nan)
    raw = io.read_slices(io.Volume(store.raw, os.fspath(store.path)), chosen.start, chosen.stop)
    runs["variance_watershed"] = (np.stack([classical_cells(r) for r in raw]), math.nan)
    summary, frames = [], []
    for method, (labels, threshold) in runs.items():
        scores = cell_scores(labels, reference, complete=complete)
        summary += [
            {"method": method, "metric": name, "value": float(value), "threshold": threshold}
            for name, value in scores.items()
        ]
        frames.append(_per_frame(labels, reference, complete).assign(method=method))
    table = pd.DataFrame(summary).assign(slices=f"{chosen.start}:{chosen.stop}")
    per_frame = pd.concat(frames, ignore_index=True)
    names = store.frames
    if names:
        per_frame["frame"] = [names[chosen.start + z] for z in per_frame["slice"]]
    _write(Path(out_csv), table, sweep[["method", "threshold", *CELL_METRICS]], per_frame)
    log.info("evaluation of %s:\n%s", prediction, table.to_string(index=False))
    return table


def _write(out: Path, table: pd.DataFrame, per_threshold: pd.DataFrame, per_frame: pd.DataFrame) -> None:
    """The three CSVs, ``metrics.csv`` last; a failure leaves none of them."""
    outputs = {out.with_name(f"{out.stem}_per_threshold.csv"): per_threshold}
    outputs[out.with_name(f"{out.stem}_per_slice.csv")] = per_frame
    try:
        for path, frame in outputs.items():
            io.atomic_write_text(path, frame.to_csv(index=False))
        io.atomic_write_text(out, table.to_csv(index=False))
    except BaseException:  # a full disk, say: leave no half set behind
        for path in outputs:
            path.unlink(missing_ok=True)
        raise


def cell_validation_metrics(
    prob: np.ndarray, *, labels: np.ndarray, complete: np.ndarray, segment: SegmentOptions
) -> dict[str, float]:
    """SEG, foreground IoU and Dice of the cells ``segment`` makes of a validation probability map: the
    score of the `Trainer`'s validation on stores of instance labels (`training.validate_model`).

    Parameters
    ----------
    prob : ndarray, shape (Z, Y, X)
        The network's P(cell) of the validation frames.
    labels : ndarray, shape (Z, Y, X)
        Their reference cell ids.
    complete : ndarray of bool, shape (Z,)
        Frames whose reference annotates every cell (foreground IoU and Dice score only these).
    segment : SegmentOptions
        How ``unet-core segment`` will cut the probability map into cells.

    Returns
    -------
    dict
        ``val_seg``, ``val_foreground_iou`` and ``val_dice`` (`cell_scores`).
    """
    cells = np.stack([segment_slice(p, **dataclasses.asdict(segment)) for p in prob])
    scores = cell_scores(cells, labels, complete=complete)
    return {f"val_{name}": float(scores[name]) for name in CELL_METRICS}
