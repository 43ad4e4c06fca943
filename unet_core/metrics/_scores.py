"""All ISBI metrics in one pass over the slices, as a dict or as tables for reports."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._info import best_over_thresholds, thin_borders, vrand_vinfo_slice
from ._jit import warn_if_slow
from ._parallel import map_slices
from ._pixel import f_score, pixel_counts
from ._rand import TruthSlice, pair_stats, proposal_labels, rand_counts, rand_f
from ._validate import (
    DEFAULT_THRESHOLDS,
    DEFAULT_THRESHOLDS_WITH_1,
    as_inputs,
    as_n_workers,
    as_thresholds,
    require_cells,
)
from ._warping import MISMATCH_CLASSES, slice_warp_counts, summarise_warping

logger = logging.getLogger(__name__)

_PLAIN_THRESHOLD = 0.5
_COUNT_NAMES = tuple(f"n_{name}" for name in MISMATCH_CLASSES)


@dataclass(frozen=True)
class _Counts:
    """Per-slice counts of every metric, stacked over slices (first axis)."""

    thresholds: tuple[float, ...]
    warp_thresholds: tuple[float, ...]
    slice_pixels: int
    pixel: np.ndarray  # (Z, T + 1, 4) TP FP FN TN; the last row is at 0.5
    rand: np.ndarray  # (Z, T, 4) TP FP FN n
    info: np.ndarray  # (Z, T, 2) V_rand V_info
    warp: np.ndarray  # (Z, Tw, 7) six classes, all mismatches


def _slice_counts(prob, foreground, thresholds, warp_thresholds):
    """Every metric's counts for one slice; one labelling per threshold serves Rand and V."""
    truth = TruthSlice.from_mask(foreground)
    rand = np.empty((len(thresholds), 4), np.float64)
    info = np.empty((len(thresholds), 2), np.float64)
    for t, th in enumerate(thresholds):
        proposal, n_proposal = proposal_labels(prob, th)
        rand[t] = rand_counts(truth, pair_stats(truth, proposal, n_proposal))
        thinned = thin_borders(proposal)
        info[t] = vrand_vinfo_slice(truth, pair_stats(truth, thinned, n_proposal))
    pixel = pixel_counts(prob, foreground, (*thresholds, _PLAIN_THRESHOLD))
    return pixel, rand, info, slice_warp_counts(prob, foreground, warp_thresholds)


def _count_all(prob, labels, thresholds, n_workers) -> _Counts:
    probability, foreground = as_inputs(prob, labels)
    require_cells(foreground)
    if thresholds is None:
        sweep, warp_sweep = DEFAULT_THRESHOLDS_WITH_1, DEFAULT_THRESHOLDS
    else:
        sweep = as_thresholds(thresholds)
        # The ISBI warping range stops at 0.9: near 1.0 everything is membrane, which has no splits or
        # merges and would make the split+merge minimum meaningless.
        warp_sweep = tuple(t for t in sweep if t <= DEFAULT_THRESHOLDS[-1] + 1e-9)
        if not warp_sweep:
            raise ValueError(f"thresholds must include a value <= 0.9 for warping, got {sweep}")
    workers = as_n_workers(n_workers)
    warn_if_slow(probability.size)
    start = time.perf_counter()
    per_slice = map_slices(
        lambda z: _slice_counts(probability[z], foreground[z], sweep, warp_sweep),
        probability.shape[0],
        workers,
    )
    logger.info(
        "evaluated %d slices x %d thresholds in %.1f s on %d threads",
        probability.shape[0],
        len(sweep),
        time.perf_counter() - start,
        workers,
    )
    pixel, rand, info, warp = (np.stack(part) for part in zip(*per_slice, strict=True))
    return _Counts(sweep, warp_sweep, probability[0].size, pixel, rand, info, warp)


def _summary_rows(counts: _Counts) -> list[tuple[str, float, float]]:
    """(metric, value, threshold) for the volume, each at its own best threshold."""
    pixel_scores = f_score(counts.pixel[:, :-1].sum(axis=0))
    rand_scores = rand_f(counts.rand.sum(axis=0))
    best_pixel, best_rand = int(np.argmax(pixel_scores)), int(np.argmax(rand_scores))
    tp, fp, fn, tn = counts.pixel[:, -1].sum(axis=0)
    warping = summarise_warping(
        counts.warp.sum(axis=0), counts.slice_pixels * counts.warp.shape[0], counts.warp_thresholds
    )
    info = best_over_thresholds(counts.info, counts.thresholds)
    th_warp = warping["threshold"]
    rows = [
        ("pixel_error", float(1 - pixel_scores[best_pixel]), counts.thresholds[best_pixel]),
        ("pixel_error_at_0.5", float((fp + fn) / (tp + fp + fn + tn)), _PLAIN_THRESHOLD),
        ("rand_error", float(1 - rand_scores[best_rand]), counts.thresholds[best_rand]),
        *_rand_parts(counts.rand.sum(axis=0)[best_rand], counts.thresholds[best_rand]),
        ("warping_error", warping["warping_error"], th_warp),
        ("warping_error_classic", warping["warping_error_classic"], th_warp),
    ]
    rows += [(f"n_{name}", warping[name], th_warp) for name in MISMATCH_CLASSES]
    rows += [
        ("vrand", info["vrand"], info["vrand_threshold"]),
        ("vinfo", info["vinfo"], info["vinfo_threshold"]),
    ]
    return rows


def _rand_parts(counts: np.ndarray, threshold: float) -> list[tuple[str, float, float]]:
    """What a Rand error is made of: ``rand_split``, the share of pixel pairs of one cell that the
    proposal puts apart (FN / (TP + FN)), and ``rand_merge``, the share of pairs the proposal puts
    together that belong to two cells (FP / (TP + FP))."""
    tp, fp, fn = counts[:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        return [
            ("rand_split", float(fn / (tp + fn)), threshold),
            ("rand_merge", float(fp / (tp + fp)), threshold),
        ]


def isbi_scores(
    prob: np.ndarray,
    labels: np.ndarray,
    *,
    thresholds: Sequence[float] | None = None,
    n_workers: int | None = None,
) -> dict[str, float]:
    """Every ISBI 2012 metric of a probability map in one pass over the slices.

    Parameters
    ----------
    prob : ndarray of float, shape (Z, Y, X) or (Y, X)
        Probability of cell (non-membrane) in [0, 1]; score a P(membrane) map as 1 - it.
    labels : ndarray, same shape
        Ground truth: 0 = membrane, > 0 = cell (binary 0/255 or instance ids).
    thresholds : sequence of float, optional
        One sweep for all metrics. Default: the challenge's, 0.0..1.0 for pixel, Rand,
        V_rand and V_info and 0.0..0.9 for warping (step 0.1).
    n_workers : int, optional
        Threads working on slices in parallel; default all usable cores.

    Returns
    -------
    dict
        ``pixel_error`` (1 - max F) and ``pixel_error_threshold``; ``pixel_error_at_0.5``
        (plain error rate); ``rand_error`` and ``rand_error_threshold``; ``rand_split`` and
        ``rand_merge``, the split and merge parts of the Rand error at its threshold (`_rand_parts`);
        ``warping_error`` (split + merge pixels) and ``warping_error_threshold``;
        ``warping_error_classic``; ``n_split``, ``n_merge``, ``n_hole_addition``,
        ``n_hole_deletion``, ``n_object_addition``, ``n_object_deletion`` at the warping
        threshold; ``vrand``, ``vrand_threshold``, ``vinfo``, ``vinfo_threshold``.

    Notes
    -----
    The definitions are those of :func:`pixel_error`, :func:`pixel_error_rate`,
    :func:`rand_error`, :func:`warping_error` and :func:`vrand_vinfo`; here each slice is
    labelled once per threshold for both Rand and V_rand / V_info.

    References
    ----------
    .. [1] O. Ronneberger, P. Fischer, T. Brox, "U-Net: convolutional networks for
       biomedical image segmentation", MICCAI 2015, Table 1.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.ones((6, 7), np.uint8); labels[:, 3] = 0
    >>> scores = isbi_scores((labels > 0).astype(float), labels)
    >>> scores["rand_error"], scores["warping_error"], scores["vrand"]
    (0.0, 0.0, 1.0)
    """
    scores: dict[str, float] = {}
    for metric, value, threshold in _summary_rows(_count_all(prob, labels, thresholds, n_workers)):
        scores[metric] = value
        if metric in ("pixel_error", "rand_error", "warping_error", "vrand", "vinfo"):
            scores[f"{metric}_threshold"] = threshold
    return scores


def _per_threshold(counts: _Counts) -> pd.DataFrame:
    sweep = pd.Index(sorted(set(counts.thresholds) | set(counts.warp_thresholds)), name="threshold")
    main = pd.DataFrame(
        {
            "pixel_error": 1 - f_score(counts.pixel[:, :-1].sum(axis=0)),
            "pixel_error_rate": _plain_rates(counts.pixel[:, :-1].sum(axis=0)),
            "rand_error": 1 - rand_f(counts.rand.sum(axis=0)),
            "vrand": np.nanmean(counts.info[..., 0], axis=0),
            "vinfo": np.nanmean(counts.info[..., 1], axis=0),
        },
        index=pd.Index(counts.thresholds, name="threshold"),
    )
    pooled = counts.warp.sum(axis=0)
    n_pixels = counts.slice_pixels * counts.warp.shape[0]
    warp = pd.DataFrame(
        {
            "warping_error": (pooled[:, 0] + pooled[:, 1]) / n_pixels,
            "warping_error_classic": pooled[:, -1] / n_pixels,
            **{name: pd.array(pooled[:, k], "Int64") for k, name in enumerate(_COUNT_NAMES)},
        },
        index=pd.Index(counts.warp_thresholds, name="threshold"),
    )
    table = main.reindex(sweep).join(warp.reindex(sweep))
    return table[
        ["pixel_error", "pixel_error_rate", "rand_error", "warping_error"]
        + ["warping_error_classic", *_COUNT_NAMES, "vrand", "vinfo"]
    ].reset_index()


def _plain_rates(pixel: np.ndarray) -> np.ndarray:
    """(FP + FN) / N from ``(..., 4)`` pixel counts."""
    return (pixel[..., 1] + pixel[..., 2]) / pixel.sum(axis=-1)


def _per_slice(counts: _Counts, rows: list[tuple[str, float, float]]) -> pd.DataFrame:
    """Each summary metric recomputed on every slice alone, at the volume's threshold."""
    chosen = {metric: threshold for metric, _, threshold in rows}
    t_pixel = counts.thresholds.index(chosen["pixel_error"])
    t_rand = counts.thresholds.index(chosen["rand_error"])
    t_warp = counts.warp_thresholds.index(chosen["warping_error"])
    warp = counts.warp[:, t_warp]
    values = {
        "pixel_error": 1 - f_score(counts.pixel[:, t_pixel]),
        "pixel_error_at_0.5": _plain_rates(counts.pixel[:, -1]),
        "rand_error": 1 - rand_f(counts.rand[:, t_rand]),
        "warping_error": (warp[:, 0] + warp[:, 1]) / counts.slice_pixels,
        "warping_error_classic": warp[:, -1] / counts.slice_pixels,
        **{name: warp[:, k] for k, name in enumerate(_COUNT_NAMES)},
        "vrand": counts.info[:, counts.thresholds.index(chosen["vrand"]), 0],
        "vinfo": counts.info[:, counts.thresholds.index(chosen["vinfo"]), 1],
    }
    frames = [
        pd.DataFrame(
            {
                "slice": np.arange(counts.pixel.shape[0]),
                "metric": metric,
                "value": np.asarray(value, np.float64),
                "threshold": chosen[metric],
            }
        )
        for metric, value in values.items()
    ]
    return pd.concat(frames, ignore_index=True)


def evaluation_tables(
    prob: np.ndarray,
    labels: np.ndarray,
    *,
    thresholds: Sequence[float] | None = None,
    n_workers: int | None = None,
) -> dict[str, pd.DataFrame]:
    """The metrics of :func:`isbi_scores` as tables: summary, per threshold and per slice.

    Parameters
    ----------
    prob, labels, thresholds, n_workers
        As in :func:`isbi_scores`.

    Returns
    -------
    dict of str to pandas.DataFrame
        ``summary``: one row per metric, columns ``metric``, ``value``, ``threshold``
        (the same numbers as :func:`isbi_scores`). ``per_threshold``: one row per
        threshold, columns ``threshold`` and every metric at it (warping columns are
        missing outside the warping sweep). ``per_slice``: one row per slice and metric,
        columns ``slice``, ``metric``, ``value``, ``threshold``: the metric on that slice
        alone at the threshold chosen for the volume (NaN for V_rand / V_info of a slice
        without cells).

    Notes
    -----
    Counts are computed once and every table is derived from them, so the tables agree
    with each other and with :func:`isbi_scores` by construction.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.ones((2, 6, 7), np.uint8); labels[:, :, 3] = 0
    >>> tables = evaluation_tables((labels > 0).astype(float), labels)
    >>> sorted(tables), len(tables["per_threshold"])
    (['per_slice', 'per_threshold', 'summary'], 11)
    """
    counts = _count_all(prob, labels, thresholds, n_workers)
    rows = _summary_rows(counts)
    return {
        "summary": pd.DataFrame(rows, columns=["metric", "value", "threshold"]),
        "per_threshold": _per_threshold(counts),
        "per_slice": _per_slice(counts, rows),
    }
