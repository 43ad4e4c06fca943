"""The report of a store of instance labels (touching cells of light microscopy, the U-Net paper's second
experiment): SEG beside the paper's Table 2, panels like its Fig. 4, the weight map like its Fig. 3, and
the scores per frame.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from skimage.segmentation import find_boundaries

from .. import io
from ..dataset import TrainingStore, intensity_range
from ..evaluate_cells import CELL_METRICS
from ..paths import refuse_overwriting_input
from ..report_figures import report_figures
from ._figures import (
    OKABE_ITO,
    _image_axes,
    _method_colour,
    _styled,
    label_colours,
    save_figure,
    training_figure,
)
from ._html import render_page
from ._tables import _latex_escape, read_eval_metrics, read_run_tables, slice_range_text

if TYPE_CHECKING:
    from . import ReportInputs, ReportProvenance

log = logging.getLogger(__name__)

CELL_PAPER_SOURCE = "Ronneberger et al. 2015, Table 2 (Cell Tracking Challenge 2015, hidden test sequences)"
# U-Net paper, Table 2 (IoU, i.e. the challenge's SEG): docs/metrics.md.
PUBLISHED_CELLS = pd.DataFrame(
    [
        ("u-net (2015), DIC-HeLa", 0.7756),
        ("second best (2015), DIC-HeLa", 0.46),
        ("u-net (2015), PhC-U373", 0.9203),
        ("second best (2015), PhC-U373", 0.83),
    ],
    columns=["method", "seg"],
)
CELL_LABELS = {
    "segmentation": "U-Net + segment (ours)",
    "unet": "U-Net, components of P(cell) > t (ours)",
    "variance_watershed": "Local variance + watershed, untrained (ours)",
}
CELL_METRIC_NAMES = {"seg": "SEG", "foreground_iou": "Foreground IoU", "dice": "Dice"}
CELL_DEFINITIONS = (
    "SEG is the Cell Tracking Challenge's measure, which the U-Net paper's Table 2 calls IoU: for each "
    "reference cell, the Jaccard index with the predicted cell that covers more than half of it (0 if none), "
    "averaged over all reference cells of all scored frames. Foreground IoU and Dice compare the masks of "
    "all cells, averaged over the frames whose reference annotates every cell. U-Net + segment scores the "
    "cells the segment step delivers; 'components of P(cell) > t' the map at the threshold t of the best "
    "SEG; the untrained baseline thresholds the local variance of the image and parts cells by a watershed."
)


def cell_note(slices: str, partial: Sequence[int]) -> str:
    """Where our rows come from, and that the published ones come from other frames."""
    listed = ", ".join(map(str, partial))
    partly = (
        f" Frames {listed} annotate only some cells: SEG scores them, IoU and Dice do not." if partial else ""
    )
    return (
        f"Our rows are measured on held-out frames {slices} (0-based) of the prepared data, not on the "
        "challenge's hidden test sequences that the published rows (the U-Net paper's Table 2) were "
        f"scored on, so the two are not directly comparable.{partly}"
    )


def cell_summary_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per method: ours (SEG, foreground IoU, Dice, counts), then the paper's Table 2.

    Parameters
    ----------
    metrics : pandas.DataFrame
        ``eval/metrics.csv`` of a store of instance labels (`evaluate_cells.evaluate_cells`).

    Returns
    -------
    pandas.DataFrame
        Columns ``method, label, source, slices, seg, foreground_iou, dice, threshold, n_objects,
        n_matched``; published rows have only ``seg``.
    """
    rows = []
    for method, group in metrics.groupby("method", sort=False):
        by_metric = group.set_index("metric")["value"]
        row = {
            "method": method,
            "label": CELL_LABELS.get(method, f"{method} (ours)"),
            "source": f"this run, held-out frames {group['slices'].iloc[0]}",
            "slices": group["slices"].iloc[0],
            "threshold": float(group["threshold"].iloc[0]),
        }
        row |= {
            name: float(by_metric.get(name, np.nan)) for name in (*CELL_METRICS, "n_objects", "n_matched")
        }
        rows.append(row)
    published = PUBLISHED_CELLS.assign(label=PUBLISHED_CELLS["method"], source=CELL_PAPER_SOURCE)
    columns = ["method", "label", "source", "slices", *CELL_METRICS, "threshold", "n_objects", "n_matched"]
    return pd.concat([pd.DataFrame(rows), published], ignore_index=True).reindex(columns=columns)


def _cells_display(
    table: pd.DataFrame, marker: str, escape: Callable[[str], str]
) -> tuple[list[str], list[list[str]]]:
    ours = table["source"] != CELL_PAPER_SOURCE
    header = ["Method", *(CELL_METRIC_NAMES[m] for m in CELL_METRICS), "t", "cells (matched)"]
    body = []
    for row, mine in zip(table.itertuples(index=False), ours, strict=True):
        cells = [escape(row.label) + (marker if mine else "")]
        cells += ["--" if math.isnan(getattr(row, m)) else f"{getattr(row, m):.4f}" for m in CELL_METRICS]
        cells.append("--" if math.isnan(row.threshold) else f"{row.threshold:.1f}")
        counted = not math.isnan(row.n_objects)
        cells.append(f"{row.n_objects:.0f} ({row.n_matched:.0f})" if counted else "--")
        body.append(cells)
    return header, body


def cell_html_table(table: pd.DataFrame) -> str:
    """`cell_summary_table` as an HTML fragment."""
    header, body = _cells_display(table, "\N{DAGGER}", html.escape)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body)
    return f'<table class="metrics"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def cell_latex_table(table: pd.DataFrame, note: str, *, label: str = "tab:unet-cells") -> str:
    """`cell_summary_table` as a booktabs ``table`` fragment: our rows, a rule, the paper's Table 2."""
    header, body = _cells_display(table, r"$^\dagger$", _latex_escape)
    ours = int((table["source"] != CELL_PAPER_SOURCE).sum())
    lines = [
        r"\begin{table}",
        r"\centering",
        rf"\caption{{{_latex_escape(CELL_DEFINITIONS)}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
        *(" & ".join(row) + r" \\" for row in body[:ours]),
        r"\midrule",
        *(" & ".join(row) + r" \\" for row in body[ours:]),
        r"\bottomrule",
        r"\end{tabular}",
        rf"\par\smallskip{{\footnotesize $^\dagger$ {_latex_escape(note)} $t$: threshold on P(cell).}}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def cell_jaccard(labels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each reference cell's SEG score painted over its pixels: the Jaccard index with the predicted cell
    covering more than half of it, 0 without one; NaN on background.

    >>> cell_jaccard(np.array([[5, 5, 0, 7]]), np.array([[1, 1, 1, 2]])).round(2).tolist()
    [[0.67, 0.67, 0.67, 1.0]]
    """
    reference = np.asarray(reference)
    ids, sizes = np.unique(reference, return_counts=True)
    pred_ids, pred_sizes = np.unique(labels, return_counts=True)
    score = np.zeros(len(ids))
    both = (reference > 0) & (labels > 0)
    pairs, overlaps = np.unique(np.stack([reference[both], labels[both]]), axis=1, return_counts=True)
    r, s = np.searchsorted(ids, pairs[0]), np.searchsorted(pred_ids, pairs[1])
    matched = overlaps > 0.5 * sizes[r]
    score[r[matched]] = overlaps[matched] / (sizes[r[matched]] + pred_sizes[s[matched]] - overlaps[matched])
    painted = score[np.searchsorted(ids, reference)]
    return np.where(reference > 0, painted, np.nan)


def _overlay(raw: np.ndarray, labels: np.ndarray, colour: str) -> np.ndarray:
    """Raw in gray with the cells' outlines drawn in ``colour``."""
    low, high = intensity_range(raw)
    grey = np.clip((raw.astype(np.float64) - low) / (high - low), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[find_boundaries(labels, mode="inner")] = plt.matplotlib.colors.to_rgb(colour)
    return rgb


REFERENCE_COLOUR, PREDICTED_COLOUR = OKABE_ITO[6], OKABE_ITO[4]


@_styled
def cells_figure(
    data: str | os.PathLike,
    segmentation: str | os.PathLike,
    zs: Sequence[int],
    *,
    notes: Mapping[int, str] | None = None,
) -> Figure:
    """Chosen frames like the U-Net paper's Fig. 4: raw, reference and predicted outlines, each reference
    cell coloured by its SEG score.

    Parameters
    ----------
    data : str or path-like
        A prepared store of instance labels (`TrainingStore`).
    segmentation : str or path-like
        The cells ``unet-core segment`` made of its prediction.
    zs : sequence of int
        Frames (absolute z) to show, one row each.
    notes : mapping, optional
        A line under each frame's label, by z.

    Raises
    ------
    ValueError
        If ``data`` is not a prepared store or ``segmentation`` has another shape.
    """
    store = TrainingStore.find(data)
    if store is None:
        raise ValueError(
            f"{data}: no labels/cells in it; give the data.ome.zarr that `unet-core prepare` wrote"
        )
    cells = io.open_volume(segmentation).array
    if cells.shape != store.raw.shape:
        raise ValueError(
            f"{segmentation}: shape {cells.shape} differs from {data}'s {store.raw.shape}; give the "
            "segmentation of the prepared frames"
        )
    fig, axes = plt.subplots(
        len(zs), 4, figsize=(12, 0.8 + 3.0 * len(zs)), squeeze=False, layout="constrained"
    )
    for row, z in zip(axes, zs, strict=True):
        raw, reference, labels = (np.asarray(a[z]) for a in (store.raw, store.instances, cells))
        low, high = intensity_range(raw)
        row[0].imshow(raw, cmap="gray", vmin=low, vmax=high)
        row[1].imshow(_overlay(raw, reference, REFERENCE_COLOUR))
        row[2].imshow(_overlay(raw, labels, PREDICTED_COLOUR))
        shown = row[3].imshow(cell_jaccard(labels, reference), cmap="viridis", vmin=0.0, vmax=1.0)
        row[3].contour(labels > 0, levels=[0.5], colors="w", linewidths=0.6)
        for ax in row:
            _image_axes(ax)
        label = store.frames[z] if store.frames else f"frame z = {z}"
        row[0].set_ylabel(label + (f"\n{notes[z]}" if notes and z in notes else ""))
        fig.colorbar(shown, cax=row[3].inset_axes([1.03, 0.0, 0.05, 1.0]), label="SEG of the cell")
    titles = ["raw", "reference cells", "U-Net + segment", "reference cells by SEG"]
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title)
    handles = [
        Patch(color=REFERENCE_COLOUR, label="reference outline"),
        Patch(color=PREDICTED_COLOUR, label="predicted outline"),
        Patch(facecolor="none", edgecolor="0.3", label="white line: predicted cells (last column)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles))
    return fig


def border_frame(store: TrainingStore) -> int:
    """The training frame with the most separation-border pixels (reference cells that are background in
    the target): the one where the weight map has most to show."""
    train = store.split.slices("train")
    borders = [
        int(np.count_nonzero((np.asarray(store.instances[z]) > 0) & (np.asarray(store.cells[z]) == 0)))
        for z in range(train.start, train.stop)
    ]
    return train.start + int(np.argmax(borders))


@_styled
def weight_map_figure(data: str | os.PathLike, z: int) -> Figure:
    """One frame's training target and weight map, like the U-Net paper's Fig. 3.

    Parameters
    ----------
    data : str or path-like
        A prepared store of instance labels.
    z : int
        The frame.

    Raises
    ------
    ValueError
        If ``data`` is not a prepared store.
    """
    store = TrainingStore.find(data)
    if store is None:
        raise ValueError(
            f"{data}: no labels/cells in it; give the data.ome.zarr that `unet-core prepare` wrote"
        )
    raw, reference = np.asarray(store.raw[z]), np.asarray(store.instances[z])
    target, weights = np.asarray(store.cells[z]) > 0, np.asarray(store.weights[z])
    fig, axes = plt.subplots(1, 4, figsize=(15, 4.2), layout="constrained")
    low, high = intensity_range(raw)
    axes[0].imshow(raw, cmap="gray", vmin=low, vmax=high)
    axes[1].imshow(label_colours(reference))
    separation = np.repeat(np.where(target, 1.0, 0.0)[..., None], 3, axis=-1)
    separation[(reference > 0) & ~target] = plt.matplotlib.colors.to_rgb(OKABE_ITO[5])
    axes[2].imshow(separation)
    shown = axes[3].imshow(weights, cmap="jet")
    fig.colorbar(shown, ax=axes[3], shrink=0.8, label="w(x)")
    parameters = store.weight_parameters
    titles = [
        "raw",
        "reference cells",
        "target: cells (white), separation borders",
        f"weight map (w0 = {parameters['w0']:g}, sigma = {parameters['sigma']:g} px)",
    ]
    for ax, title in zip(axes, titles, strict=True):
        _image_axes(ax)
        ax.set_title(title, fontsize="small")
    axes[0].set_ylabel(store.frames[z] if store.frames else f"frame z = {z}")
    return fig


@_styled
def per_frame_figure(per_slice: pd.DataFrame, summary: pd.DataFrame, *, first_slice: int = 0) -> Figure:
    """SEG per held-out frame, bars side by side per method, the pooled SEG dashed.

    Parameters
    ----------
    per_slice : pandas.DataFrame
        ``eval/metrics_per_slice.csv`` of cells: ``method``, ``metric``, ``slice`` (0 = first scored frame),
        ``value`` and optionally the frame's name, ``frame``.
    summary : pandas.DataFrame
        Our rows of `cell_summary_table`.
    first_slice : int, optional
        Absolute z of scored frame 0, for the labels when the frames have no names.
    """
    rows = per_slice[per_slice["metric"] == "seg"]
    methods = list(dict.fromkeys(rows["method"]))
    width = 0.8 / len(methods)
    frames = sorted(set(rows["slice"]))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(frames) + 3), 3.6), layout="constrained")
    for k, method in enumerate(methods):
        bars = rows[rows["method"] == method].sort_values("slice")
        colour = _method_colour(method, k)
        label = CELL_LABELS.get(method, method).removesuffix(" (ours)")
        ax.bar(
            bars["slice"] + (k - (len(methods) - 1) / 2) * width,
            bars["value"],
            width,
            color=colour,
            label=label,
        )
        ax.axhline(summary.set_index("method").loc[method, "seg"], color=colour, ls="--", lw=1)
    names = rows.drop_duplicates("slice").set_index("slice")
    ticks = [names.loc[s, "frame"] if "frame" in names else str(s + first_slice) for s in frames]
    ax.set_xticks(frames, ticks)
    ax.set(xlabel="frame", ylabel="SEG", ylim=(0, 1), title="SEG per held-out frame")
    ax.legend(title="dashed: pooled over all reference cells", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def build_cell_report(
    out_dir: str | os.PathLike,
    inputs: ReportInputs,
    *,
    provenance: ReportProvenance,
    title: str,
    n_slices: int,
) -> Path:
    """`build_report` for a store of instance labels (its arguments are the same).

    Writes ``metrics.csv`` and ``metrics.tex`` (`cell_summary_table`), ``provenance.json``, the figures
    of `report_figures.CELL_FIGURES` and ``index.html``.
    """
    from . import choose_slices, volume_figures  # here: the package imports this module

    metrics = read_eval_metrics(inputs.metrics_csv, required=CELL_METRICS)
    table = cell_summary_table(metrics)
    named = inputs.named_paths()
    refuse_overwriting_input(out_dir, *named.values())
    per_slice, training_log = read_run_tables(inputs)
    store = TrainingStore.find(inputs.data)
    slices = str(metrics["slices"].iloc[0])
    first, _, _ = slices.partition(":")
    first = int(first) if first.isdigit() else 0
    note = cell_note(slice_range_text(slices), store.partial_slices)
    record = provenance.record(named)
    select_metric = (provenance.config or {}).get("train", {}).get("select_metric", "seg")
    method = "segmentation" if "segmentation" in set(per_slice["method"]) else "unet"
    zs = choose_slices(per_slice, first_slice=first, n=n_slices, method=method, metric="seg")
    partial = set(store.partial_slices)
    notes = {z: f"SEG {v:.3f}" + (" (partial reference)" if z in partial else "") for z, v in zs.items()}
    captions = report_figures("instances")
    with io.atomic_directory(out_dir) as tmp:
        table.to_csv(tmp / "metrics.csv", index=False)
        (tmp / "metrics.tex").write_text(cell_latex_table(table, note))
        (tmp / "provenance.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        ours = table[table["source"] != CELL_PAPER_SOURCE]
        made = {
            "cells": cells_figure(inputs.data, inputs.segmentation, list(zs), notes=notes),
            "weight_map": weight_map_figure(inputs.data, border_frame(store)),
            "training": training_figure(training_log, select_metric=select_metric),
            "per_frame": per_frame_figure(per_slice, ours, first_slice=first),
        }
        figures = [(save_figure(fig, tmp / "figures", name), captions[name]) for name, fig in made.items()]
        figures += volume_figures(tmp / "figures", inputs.volumes)
        files = ["metrics.csv", "metrics.tex", "provenance.json"]
        files += [f"figures/{png.stem}.{suffix}" for png, _ in figures for suffix in ("png", "pdf")]
        page = render_page(
            title,
            table_html=cell_html_table(table),
            notes=[note, CELL_DEFINITIONS],
            figures=figures,
            record=record,
            files=files,
            heading="Scores on held-out frames",
        )
        (tmp / "index.html").write_text(page)
    log.info("report written to %s (%d figures)", out_dir, len(figures))
    return Path(out_dir) / "index.html"
