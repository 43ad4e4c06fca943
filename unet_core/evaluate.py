"""Score a probability volume against ground truth and write the CSVs the report reads.

When the labels come from a prepared store, the held-out slices are scored and a classical baseline is
scored beside the U-Net: the best global intensity threshold of the raw data (membranes are dark in EM).
A model worth its training clearly beats it on Rand and warping error. Given the output of
`unet_core.segment` too, the cells it delivers are scored as a third method, ``segmentation`` (its
instance labels read as a binary map with 1-px borders between touching cells, `segment.cell_map`).
A store of instance labels (cells of light microscopy) is scored by SEG instead (`evaluate_cells`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import io, metrics
from .dataset import Split, TrainingStore, held_out, intensity_range
from .evaluate_cells import evaluate_cells, read_segmentation
from .folds import fold_slices, parse_fold
from .inference import decode
from .paths import refuse_overwriting_input
from .segment import cell_map

log = logging.getLogger(__name__)

BASELINE_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 51), 4)  # a fine sweep, to be fair to the baseline


def intensity_baseline(raw: np.ndarray) -> np.ndarray:
    """Raw intensity rescaled to [0, 1] (`dataset.intensity_range`): a threshold on it is the baseline."""
    low, high = intensity_range(raw)
    # float32 intensities, as the network reads them, scaled in float64, as the probabilities are scored
    return np.clip((raw.astype(np.float32).astype(np.float64) - low) / (high - low), 0.0, 1.0)


def _parse_slices(text: str, n: int) -> slice:
    if text == "all":
        return slice(0, n)
    try:
        start, stop = (int(v) for v in text.split(":"))
    except ValueError as err:
        raise ValueError(
            f"--slices must be 'held-out', 'all', 'START:STOP' or 'fold:k/K', got {text!r}"
        ) from err
    if not 0 <= start < stop <= n:
        raise ValueError(f"--slices {text} is outside the volume's {n} slices")
    return slice(start, stop)


def _load_labels(path: str, slices: str) -> tuple[np.ndarray, slice, np.ndarray | None, tuple[int, ...]]:
    """Ground truth, the slices to score, raw data for the baseline when the store has it, and the shape
    of the whole labelled volume (which the prediction must have)."""
    store = TrainingStore.find(path)
    if store is not None:
        gt = store.cells
        chosen = _store_slices(store, slices)
        raw = io.read_slices(io.Volume(store.raw, path), chosen.start, chosen.stop)
        return io.read_slices(io.Volume(gt, path), chosen.start, chosen.stop), chosen, raw, gt.shape
    volume = io.open_volume(path)
    io.check_real(volume, "labels")
    n = volume.shape[0]
    chosen = slice(0, n) if slices in ("held-out", "all") else _parse_slices(slices, n)
    return io.read_slices(volume, chosen.start, chosen.stop), chosen, None, volume.shape


def _store_slices(store: TrainingStore, slices: str) -> slice:
    """The slices of a prepared store that ``--slices`` names: held-out, a fold's, or a range."""
    if slices == "held-out":
        return _held_out(store)
    if slices.startswith("fold:"):
        return _validated_by(store, slices.removeprefix("fold:"))
    return _parse_slices(slices, store.raw.shape[0])


def _held_out(store: TrainingStore) -> slice:
    return held_out(_split(store))


def _split(store: TrainingStore) -> Split:
    if store.split is None:
        raise io.VolumeError(
            f"{store.path}: records no train/val/test split (not written by unet-core prepare); "
            "score it with --slices all or --slices START:STOP"
        )
    return store.split


def _validated_by(store: TrainingStore, fold: str) -> slice:
    """The slices cross-validation fold ``fold`` (``k/K``) validates on (`unet_core.folds`)."""
    try:
        chosen = parse_fold(fold)
    except ValueError as err:
        raise ValueError(f"--slices fold:{fold}: {err}") from err
    if chosen is None:
        raise ValueError(f"--slices fold:{fold}: name a fold as k/K, e.g. fold:0/5")
    split = _split(store)
    _, zs = fold_slices(split.train, split.val, fold)
    if np.any(np.diff(zs) != 1):
        raise ValueError(
            f"{store.path}: fold {fold} validates on slices {zs.tolist()}, which are not contiguous (the "
            "split's train and val ranges are apart); score them with --slices START:STOP each"
        )
    return slice(int(zs[0]), int(zs[-1]) + 1)


def _segmented_cells(path: str | os.PathLike, shape: tuple[int, ...], chosen: slice) -> np.ndarray:
    cells = read_segmentation(path, shape, chosen, shape_of="probabilities'")
    return cell_map(cells).astype(np.float32)


def evaluate_files(
    prediction: str | os.PathLike,
    labels: str | os.PathLike,
    out_csv: str | os.PathLike,
    *,
    slices: str = "held-out",
    segmentation: str | os.PathLike | None = None,
    n_workers: int | None = None,
) -> pd.DataFrame:
    """Write ``metrics.csv`` (method, metric, value, threshold) and per-threshold/per-slice CSVs beside it.

    The three CSVs of an earlier run are removed first and ``metrics.csv`` is written last, so its presence
    means the CSVs beside it belong to it; a failed run leaves none of the three. ``segmentation``:
    instance labels of the same volume (``unet-core segment``), scored as method ``segmentation`` at the
    one threshold its binary map has.
    Raises `io.VolumeError` for unreadable, damaged, NaN or mismatched volumes and ValueError for outputs
    that would overwrite an input, naming the file.
    """
    out = Path(out_csv)
    outputs = [out.with_name(f"{out.stem}_{name}.csv") for name in ("per_threshold", "per_slice")]
    for path in (out, *outputs):
        refuse_overwriting_input(path, *(p for p in (prediction, labels, segmentation) if p is not None))
    for path in (out, *outputs):  # metrics.csv marks a complete set: none of an old set may outlive a failure
        path.unlink(missing_ok=True)
    store = TrainingStore.find(labels)
    if store is not None and store.labels_kind == "instances":  # cells: the Cell Tracking Challenge's SEG
        chosen = _store_slices(store, slices)
        return evaluate_cells(prediction, store, chosen, out_csv=out, segmentation=segmentation)
    gt, chosen, raw, labelled_shape = _load_labels(os.fspath(labels), slices)
    prob_volume = io.open_volume(prediction)
    io.check_real(prob_volume, "probabilities")
    if prob_volume.shape != labelled_shape:
        raise io.VolumeError(
            f"{prediction}: shape {prob_volume.shape} differs from the labelled volume's {labelled_shape}; "
            "predict the same volume the labels belong to"
        )
    prob = decode(io.read_slices(prob_volume, chosen.start, chosen.stop), np.float64)
    if not np.isfinite(prob).all():
        raise io.VolumeError(f"{prediction}: probabilities contain NaN or inf; predict the volume again")
    runs = {"unet": (prob, None)}
    if segmentation is not None:
        runs["segmentation"] = (_segmented_cells(segmentation, prob_volume.shape, chosen), (0.5,))
    if raw is not None:
        runs["intensity_threshold"] = (intensity_baseline(raw), BASELINE_THRESHOLDS)
    tables: dict[str, list[pd.DataFrame]] = {"summary": [], "per_threshold": [], "per_slice": []}
    for method, (p, thresholds) in runs.items():
        try:
            result = metrics.evaluation_tables(p, gt, thresholds=thresholds, n_workers=n_workers)
        except ValueError as err:  # the metrics name their arguments, not the files
            raise ValueError(f"{prediction} against {labels}: {err}") from err
        for name in tables:
            tables[name].append(result[name].assign(method=method))
    summary = pd.concat(tables["summary"], ignore_index=True)
    summary["slices"] = f"{chosen.start}:{chosen.stop}"
    summary = summary[["method", "metric", "value", "threshold", "slices"]]
    try:  # metrics.csv comes back last
        for path, name in zip(outputs, ("per_threshold", "per_slice"), strict=True):
            io.atomic_write_text(path, pd.concat(tables[name], ignore_index=True).to_csv(index=False))
        io.atomic_write_text(out, summary.to_csv(index=False))
    except BaseException:  # a full disk, say: leave no half set behind
        for path in outputs:
            path.unlink(missing_ok=True)
        raise
    log.info("evaluation of %s:\n%s", prediction, summary.to_string(index=False))
    return summary
