"""Cross-validation summaries: the mean and spread of every metric over folds, and the mean validation
curve that chooses the training length.

Each fold k of K (`unet_core.folds`) trains on the labelled slices outside its run and is scored on the
run (``unet-core evaluate --slices fold:k/K``). Decisions taken on one split of four ISBI slices were
luck (a few merges of large cells decide its Rand error); over five folds every labelled slice is
scored once, and the spread over folds says how far a difference between recipes can be trusted.

``unet-core crossval OUT`` writes:

    OUT/metrics.csv   method, metric, mean, std (over folds, n - 1), min, max, folds
    OUT/folds.csv     fold, slices, method, metric, value, threshold: every fold's metrics.csv
    OUT/curve.csv     iteration and the mean and std over folds of each validation metric of the
                      training logs: the iteration where the mean is lowest is the length to train
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .io import atomic_write_text
from .report._tables import EVAL_COLUMNS, EVALUATE, read_checked_csv

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ["method", "metric", "mean", "std", "min", "max", "folds"]


def fold_table(metrics_csvs: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Every fold's ``metrics.csv`` in one long table, fold k being the k-th file (membrane or cell
    metrics alike)."""
    columns, numeric = list(EVAL_COLUMNS), ["value", "threshold"]
    frames = [
        read_checked_csv(path, columns, numeric=numeric, writer=EVALUATE).assign(fold=k)
        for k, path in enumerate(metrics_csvs)
    ]
    table = pd.concat(frames, ignore_index=True)
    return table[["fold", "slices", "method", "metric", "value", "threshold"]]


def summarize(folds: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (n - 1; NaN for one fold), min and max of each method's metrics over the folds."""
    grouped = folds.groupby(["method", "metric"], sort=False)["value"]
    summary = grouped.agg(["mean", "std", "min", "max", "count"]).reset_index()
    return summary.rename(columns={"count": "folds"})[SUMMARY_COLUMNS]


def mean_curve(train_logs: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """The validation metrics of the folds' training logs, mean and std over folds per iteration (the
    iterations all folds logged)."""
    logs = [
        read_checked_csv(
            path, ["iteration", "loss"], numeric=["iteration", "loss"], writer="`unet-core train`"
        )
        for path in train_logs
    ]
    columns = [c for c in logs[0].columns if c.startswith("val_") or c == "loss"]
    stacked = pd.concat([frame.assign(fold=k) for k, frame in enumerate(logs)], ignore_index=True)
    shared = stacked.groupby("iteration")["fold"].nunique() == len(logs)
    stacked = stacked[stacked["iteration"].isin(shared[shared].index)]
    grouped = stacked.groupby("iteration")[[c for c in columns if c in stacked]]
    curve = grouped.mean().add_suffix("_mean").join(grouped.std().add_suffix("_std"))
    return curve.reset_index()


def write_summary(
    out_dir: str | os.PathLike,
    metrics_csvs: Sequence[str | os.PathLike],
    train_logs: Sequence[str | os.PathLike],
) -> pd.DataFrame:
    """Write ``metrics.csv``, ``folds.csv`` and ``curve.csv`` of a cross-validation into ``out_dir``;
    returns the summary.

    Raises
    ------
    ValueError
        Fewer than two folds, a different number of metrics files and training logs, or a file that is
        not what ``unet-core evaluate`` or ``unet-core train`` write (naming it).
    """
    if len(metrics_csvs) < 2 or len(metrics_csvs) != len(train_logs):
        raise ValueError(
            f"cross-validation needs the metrics.csv and train_log.csv of each of at least two folds, got "
            f"{len(metrics_csvs)} metrics files and {len(train_logs)} training logs"
        )
    folds = fold_table(metrics_csvs)
    summary = summarize(folds)
    curve = mean_curve(train_logs)
    out = Path(out_dir)
    atomic_write_text(out / "folds.csv", folds.to_csv(index=False))
    atomic_write_text(out / "curve.csv", curve.to_csv(index=False))
    atomic_write_text(out / "metrics.csv", summary.to_csv(index=False))  # last: the set is complete
    for column in (c for c in curve.columns if c.startswith("val_") and c.endswith("_mean")):
        best = curve.loc[curve[column].idxmin()]
        log.info("%s: lowest mean %.4f at iteration %d", column, best[column], best["iteration"])
    log.info("cross-validation over %d folds:\n%s", len(metrics_csvs), summary.to_string(index=False))
    return summary
