"""Score a probability volume against ground truth and write the CSVs the report reads.

When the labels come from a prepared store, the held-out slices are scored and a classical baseline is
scored beside the U-Net: the best global intensity threshold of the raw data (membranes are dark in EM).
A model worth its training clearly beats it on Rand and warping error.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from . import io, metrics
from .dataset import held_out, read_split

log = logging.getLogger(__name__)

BASELINE_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 51), 4)  # a fine sweep, to be fair to the baseline


def as_probability(volume: np.ndarray) -> np.ndarray:
    """Stored probabilities (uint8 0-255 or float) as float32 in [0, 1]."""
    if np.issubdtype(volume.dtype, np.integer):
        return volume.astype(np.float32) / np.float32(np.iinfo(volume.dtype).max)
    return volume.astype(np.float32)


def intensity_baseline(raw: np.ndarray) -> np.ndarray:
    """Raw intensity rescaled to [0, 1] (0.5/99.5 percentiles): a threshold on it is the baseline."""
    low, high = np.percentile(raw, [0.5, 99.5])
    return np.clip((raw.astype(np.float32) - low) / max(high - low, 1e-6), 0.0, 1.0)


def _parse_slices(text: str, n: int) -> slice:
    if text == "all":
        return slice(0, n)
    try:
        start, stop = (int(v) for v in text.split(":"))
    except ValueError as err:
        raise ValueError(f"--slices must be 'held-out', 'all' or 'START:STOP', got {text!r}") from err
    if not 0 <= start < stop <= n:
        raise ValueError(f"--slices {text} is outside the volume's {n} slices")
    return slice(start, stop)


def _load_labels(path: str, slices: str) -> tuple[np.ndarray, slice, np.ndarray | None]:
    """Ground truth, the slices to score, and raw data for the baseline when the store has it."""
    node = zarr.open(store=path, mode="r") if Path(path).is_dir() else None
    if isinstance(node, zarr.Group) and "labels/cells/0" in node:
        gt = node["labels/cells/0"]
        chosen = held_out(read_split(node)) if slices == "held-out" else _parse_slices(slices, gt.shape[0])
        return np.asarray(gt[chosen]), chosen, np.asarray(node["0"][chosen])
    gt = io.read_volume(path)
    chosen = slice(0, gt.shape[0]) if slices in ("held-out", "all") else _parse_slices(slices, gt.shape[0])
    return gt[chosen], chosen, None


def evaluate_files(
    prediction: str | os.PathLike,
    labels: str | os.PathLike,
    out_csv: str | os.PathLike,
    *,
    slices: str = "held-out",
    n_workers: int | None = None,
) -> pd.DataFrame:
    """Write ``metrics.csv`` (method, metric, value, threshold) and per-threshold/per-slice CSVs beside it."""
    gt, chosen, raw = _load_labels(os.fspath(labels), slices)
    prob_volume = io.open_volume(prediction)
    if prob_volume.shape[1:] != gt.shape[1:] or prob_volume.shape[0] < chosen.stop:
        raise io.VolumeError(
            f"{prediction}: shape {prob_volume.shape} does not cover the labels' slices {chosen.start}:"
            f"{chosen.stop} of shape {gt.shape[1:]}; predict the same volume the labels belong to"
        )
    prob = as_probability(np.asarray(prob_volume.array[chosen]))
    runs = {"unet": (prob, None)}
    if raw is not None:
        runs["intensity_threshold"] = (intensity_baseline(raw), BASELINE_THRESHOLDS)
    tables: dict[str, list[pd.DataFrame]] = {"summary": [], "per_threshold": [], "per_slice": []}
    for method, (p, thresholds) in runs.items():
        result = metrics.evaluation_tables(p, gt, thresholds=thresholds, n_workers=n_workers)
        for name in tables:
            tables[name].append(result[name].assign(method=method))
    out = Path(out_csv)
    summary = pd.concat(tables["summary"], ignore_index=True)
    summary["slices"] = f"{chosen.start}:{chosen.stop}"
    summary = summary[["method", "metric", "value", "threshold", "slices"]]
    for name, frames in tables.items():
        frame = summary if name == "summary" else pd.concat(frames, ignore_index=True)
        path = out if name == "summary" else out.with_name(f"{out.stem}_{name}.csv")
        io.atomic_write_text(path, frame.to_csv(index=False))
    log.info("evaluation of %s:\n%s", prediction, summary.to_string(index=False))
    return summary
