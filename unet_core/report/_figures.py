"""The report's figures, one function each, in one style; saved as PNG (for HTML) and PDF (vector)."""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from cycler import cycler  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .. import io  # noqa: E402
from ..dataset import TrainingStore, intensity_range  # noqa: E402
from ..inference import decode  # noqa: E402
from ..metrics import MISMATCH_CLASSES, warped_ground_truth  # noqa: E402
from ..train import MAXIMISED  # noqa: E402
from ._tables import ISBI_METRICS, METRIC_NAMES, OUR_LABELS  # noqa: E402

log = logging.getLogger(__name__)
# fontTools logs every table it subsets while a PDF is written: noise in a rule's log.
logging.getLogger("fontTools").setLevel(logging.WARNING)
F = TypeVar("F", bound=Callable)

# Okabe & Ito's colour-blind-safe palette.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
METHOD_COLOURS = {"unet": OKABE_ITO[0], "intensity_threshold": OKABE_ITO[1], "segmentation": OKABE_ITO[2]}
SPLIT_COLOUR, MERGE_COLOUR, OTHER_COLOUR = "#D55E00", "#0072B2", "#F0E442"
_SPLIT, _MERGE = MISMATCH_CLASSES.index("split") + 1, MISMATCH_CLASSES.index("merge") + 1
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.prop_cycle": cycler(color=OKABE_ITO),
    "image.interpolation": "nearest",
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays editable in a journal's tools
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
}


def _styled(func: F) -> F:
    """Run a figure function under :data:`STYLE`: text and lines take rcParams when they are made."""

    @functools.wraps(func)
    def styled(*args, **kwargs):
        with plt.rc_context(STYLE):
            return func(*args, **kwargs)

    return styled  # type: ignore[return-value]


@_styled
def save_figure(fig: Figure, directory: str | os.PathLike, name: str) -> Path:
    """Write ``name.png`` and ``name.pdf`` into ``directory``, close ``fig``, return the PNG's path.

    The PDF carries no creation date, so the same figure gives the same bytes on every run.
    """
    png = Path(directory) / f"{name}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, metadata={"Software": None})
    fig.savefig(png.with_suffix(".pdf"), metadata={"CreationDate": None, "Creator": None})
    plt.close(fig)
    return png


def _method_colour(method: str, k: int) -> str:
    return METHOD_COLOURS.get(method, OKABE_ITO[(k + 2) % len(OKABE_ITO)])


def _method_label(method: str) -> str:
    return OUR_LABELS.get(method, method).removesuffix(" (ours)")


def _image_axes(ax: plt.Axes) -> None:
    """No ticks, grid or frame, but axis labels stay visible (``axis('off')`` would hide them)."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def label_colours(labels: np.ndarray) -> np.ndarray:
    """RGB image of instance labels: 0 (membrane) black, each id a stable colour from its value.

    Colours come from a fixed 255-entry table indexed by ``(id - 1) % 255``, so any number of cells needs
    no table of that size, and a cell has the same colour in every view.
    """
    table = np.random.default_rng(0).uniform(0.25, 1.0, size=(255, 3))
    ids = np.asarray(labels).astype(np.int64)
    rgb = table[(ids - 1) % 255]
    rgb[ids == 0] = 0.0
    return rgb


def error_overlay(target: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """RGB image: the binarised prediction in grey, other mismatches yellow, splits and merges coloured.

    Parameters
    ----------
    target : ndarray of bool, shape (Y, X)
        ``prob > t``, the prediction the ground truth was warped toward.
    classes : ndarray of int, shape (Y, X)
        Mismatch class codes from :func:`unet_core.metrics.warped_ground_truth`.
    """
    grey = np.where(target, 0.9, 0.45)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for code, colour in ((-1, OTHER_COLOUR), (_SPLIT, SPLIT_COLOUR), (_MERGE, MERGE_COLOUR)):
        where = classes > 0 if code == -1 else classes == code
        rgb[where] = matplotlib.colors.to_rgb(colour)
    return rgb


@_styled
def held_out_figure(
    data: str | os.PathLike,
    prediction: str | os.PathLike,
    segmentation: str | os.PathLike,
    zs: Sequence[int],
    *,
    threshold: float,
    notes: Mapping[int, str] | None = None,
) -> tuple[Figure, dict[int, dict[str, int]]]:
    """Raw, ground truth, P(cell), cells and warping errors of chosen slices, one row per slice.

    Parameters
    ----------
    data : str or path-like
        Prepared store (`unet_core.dataset.TrainingStore`): its raw data and cell labels are shown.
    prediction, segmentation : str or path-like
        Probability and instance-label volumes of the same store.
    zs : sequence of int
        Slices (absolute z) to show.
    threshold : float
        Threshold of the warping error, at which splits and merges are found.
    notes : mapping, optional
        A line under each slice's label, by z (e.g. its Rand error).

    Returns
    -------
    fig : matplotlib.figure.Figure
    counts : dict
        Per slice, the number of ``split`` and ``merge`` pixels marked.
    """
    store = TrainingStore.find(data)
    if store is None:
        raise ValueError(
            f"{data}: no labels/cells in it; give the data.ome.zarr that `unet-core prepare` wrote"
        )
    prob_volume = io.open_volume(prediction).array
    seg_volume = io.open_volume(segmentation).array
    for path, volume in ((prediction, prob_volume), (segmentation, seg_volume)):
        if volume.shape != store.raw.shape:
            raise ValueError(
                f"{path}: shape {volume.shape} differs from {data}'s {store.raw.shape}; give the held-out "
                "volume's prediction and segmentation"
            )
    fig, axes = plt.subplots(
        len(zs), 5, figsize=(13.5, 0.6 + 2.7 * len(zs)), squeeze=False, layout="constrained"
    )
    counts = {}
    for row, z in zip(axes, zs, strict=True):
        raw, gt = np.asarray(store.raw[z]), np.asarray(store.cells[z])
        prob = decode(np.asarray(prob_volume[z]))
        _, classes = warped_ground_truth(prob, gt, threshold=threshold)
        counts[z] = {"split": int((classes == _SPLIT).sum()), "merge": int((classes == _MERGE).sum())}
        low, high = intensity_range(raw)
        row[0].imshow(raw, cmap="gray", vmin=low, vmax=high)
        row[1].imshow(gt > 0, cmap="gray")
        shown = row[2].imshow(prob, cmap="magma", vmin=0.0, vmax=1.0)
        row[3].imshow(label_colours(np.asarray(seg_volume[z])))
        row[4].imshow(error_overlay(prob > threshold, classes))
        ys, xs = np.nonzero((classes == _SPLIT) | (classes == _MERGE))
        colours = np.where(classes[ys, xs] == _SPLIT, SPLIT_COLOUR, MERGE_COLOUR)
        row[4].scatter(xs, ys, s=60, facecolors="none", edgecolors=colours, linewidths=1.2)
        for ax in row:
            _image_axes(ax)
        row[0].set_ylabel(f"slice z = {z}" + (f"\n{notes[z]}" if notes and z in notes else ""))
        row[4].set_xlabel(f"split {counts[z]['split']}, merge {counts[z]['merge']} px")
        fig.colorbar(shown, cax=row[2].inset_axes([1.03, 0.0, 0.05, 1.0]))  # keeps the panel full size
    titles = ["raw", "ground truth", "P(cell)", "cells (segmentation)", f"errors at t = {threshold:.2f}"]
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title)
    handles = [
        Patch(color=SPLIT_COLOUR, label="split (circled)"),
        Patch(color=MERGE_COLOUR, label="merge (circled)"),
        Patch(color=OTHER_COLOUR, label="other mismatch (holes, objects)"),
        Patch(color="0.9", label="P(cell) > t"),
        Patch(color="0.45", label="P(cell) \u2264 t"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles))
    return fig, counts


@_styled
def cover_figure(raw: np.ndarray, probability: np.ndarray, *, caption: str) -> Figure:
    """Raw data beside the U-Net's P(cell interior), 2:1 wide: the cover of an exported model package.

    Parameters
    ----------
    raw : ndarray, shape (Y, X)
        A slice (or part of one) of the raw data.
    probability : ndarray, shape (Y, X)
        P(cell interior) of the same pixels, in [0, 1].
    caption : str
        A line under the panels (e.g. which slice it is).

    Raises
    ------
    ValueError
        If the two images differ in shape.
    """
    if np.shape(raw) != np.shape(probability):
        raise ValueError(f"raw {np.shape(raw)} and probability {np.shape(probability)} differ in shape")
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 4), layout="constrained")
    low, high = intensity_range(raw)
    left.imshow(raw, cmap="gray", vmin=low, vmax=high)
    right.imshow(probability, cmap="magma", vmin=0.0, vmax=1.0)
    for ax, title in ((left, "raw"), (right, "U-Net: P(cell interior)")):
        _image_axes(ax)
        ax.set_title(title)
    fig.supxlabel(caption, fontsize="small", parse_math=False)  # a path may hold $ signs
    return fig


@_styled
def training_figure(train_log: pd.DataFrame, *, select_metric: str = "rand_error") -> Figure:
    """Training loss, validation errors and learning rate against iteration; best checkpoint marked.

    Parameters
    ----------
    train_log : pandas.DataFrame
        ``train_log.csv``: ``iteration``, ``loss`` and optionally ``lr``, ``val_*`` columns.
    select_metric : str, optional
        The validation metric ``best.pt`` was chosen by (``"loss"`` for the training loss).

    Raises
    ------
    ValueError
        If ``iteration`` or ``loss`` is missing, or the log has no rows.
    """
    missing = [c for c in ("iteration", "loss") if c not in train_log.columns]
    if missing or train_log.empty:
        raise ValueError(
            f"train_log needs rows and columns 'iteration' and 'loss'; got columns {list(train_log.columns)} "
            f"and {len(train_log)} rows"
        )
    selected = "loss" if select_metric == "loss" else f"val_{select_metric}"
    highest = select_metric in MAXIMISED  # SEG: higher is better
    if selected in train_log:
        column = train_log[selected]
        best = train_log.loc[column.idxmax() if highest else column.idxmin(), "iteration"]
    else:
        best = None
    validation = [c for c in train_log.columns if c.startswith("val_")]
    cells = "val_seg" in validation  # scores of cells (higher is better), not errors
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    axes[0].plot(train_log["iteration"], train_log["loss"], marker="o", ms=3)
    axes[0].set(ylabel="weighted cross entropy", title="training loss")
    for column in validation:
        axes[1].plot(train_log["iteration"], train_log[column], marker="o", ms=3, label=column[4:])
    axes[1].set(
        ylabel="score" if cells else "error",
        title="validation (cells)" if cells else "validation (ISBI errors)",
    )
    if validation:
        axes[1].legend()
    if "lr" in train_log:
        axes[2].plot(train_log["iteration"], train_log["lr"], marker="o", ms=3, color=OKABE_ITO[2])
    axes[2].set(ylabel="learning rate", title="learning rate")
    for ax in axes:
        ax.set_xlabel("iteration")
        if best is not None:
            ax.axvline(best, color="0.3", ls="--", lw=1)
    if best is not None:
        axes[0].legend(
            [Line2D([], [], color="0.3", ls="--")],
            [f"best.pt ({'highest' if highest else 'lowest'} {selected},\niteration {best})"],
            loc="upper right",
        )
    return fig


@_styled
def threshold_figure(per_threshold: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """Each ISBI error against the threshold t, one line per method; the reported minimum marked.

    Parameters
    ----------
    per_threshold : pandas.DataFrame
        ``eval/metrics_per_threshold.csv``: ``threshold``, ``method`` and one column per metric.
    summary : pandas.DataFrame
        Our rows of :func:`summary_table`: the value and threshold reported for each metric.
    """
    fig, axes = plt.subplots(1, len(ISBI_METRICS), figsize=(13, 3.6), constrained_layout=True)
    for k, (method, curve) in enumerate(per_threshold.groupby("method", sort=False)):
        reported = summary.set_index("method").loc[method]
        for ax, name in zip(axes, ISBI_METRICS, strict=True):
            points = curve[["threshold", name]].dropna()
            colour = _method_colour(method, k)
            if len(points) > 1:
                ax.plot(points["threshold"], points[name], color=colour, lw=1.5, label=_method_label(method))
            elif len(points) == 1:  # a binary map (the segmentation) scores the same at every threshold
                ax.axhline(points[name].iloc[0], color=colour, lw=1.5, ls=":", label=_method_label(method))
            ax.plot(reported[f"{name}_threshold"], reported[name], "o", color=colour, ms=7)
    for ax, name in zip(axes, ISBI_METRICS, strict=True):
        values = per_threshold[name].dropna()
        ax.set(xlabel="threshold t on P(cell)", ylabel=METRIC_NAMES[name].lower(), title=METRIC_NAMES[name])
        if name == "warping_error" and (values > 0).all():
            ax.set_yscale("log")  # it spans orders of magnitude; the Rand and pixel errors do not
    axes[0].legend(title="dot: reported minimum")
    return fig


@_styled
def per_slice_figure(per_slice: pd.DataFrame, summary: pd.DataFrame, *, first_slice: int = 0) -> Figure:
    """Each ISBI error per held-out slice, bars side by side per method, pooled value dashed.

    Parameters
    ----------
    per_slice : pandas.DataFrame
        ``eval/metrics_per_slice.csv``: ``slice`` (0 = first scored slice), ``metric``, ``value``,
        ``method``; values at the pooled best threshold.
    summary : pandas.DataFrame
        Our rows of :func:`summary_table`: the pooled values.
    first_slice : int, optional
        Absolute z of scored slice 0, for the axis labels.
    """
    methods = list(dict.fromkeys(per_slice["method"]))
    width = 0.8 / len(methods)
    fig, axes = plt.subplots(1, len(ISBI_METRICS), figsize=(13, 3.6), constrained_layout=True)
    for ax, name in zip(axes, ISBI_METRICS, strict=True):
        for k, method in enumerate(methods):
            rows = per_slice[(per_slice["method"] == method) & (per_slice["metric"] == name)]
            z = rows["slice"].to_numpy() + first_slice
            colour = _method_colour(method, k)
            ax.bar(
                z + (k - (len(methods) - 1) / 2) * width,
                rows["value"],
                width,
                color=colour,
                label=_method_label(method),
            )
            pooled = summary.set_index("method").loc[method, name]
            ax.axhline(pooled, color=colour, ls="--", lw=1)
        ax.set(xlabel="slice z", ylabel=METRIC_NAMES[name].lower(), title=METRIC_NAMES[name])
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(title="dashed: pooled over slices")
    return fig


def _plane(array, axis: int, index: int, max_side: int) -> np.ndarray:
    """The plane ``index`` across ``axis``, read with a stride so no side exceeds ``max_side``."""
    steps = [max(1, math.ceil(n / max_side)) for n in array.shape]
    key = tuple(index if a == axis else slice(None, None, steps[a]) for a in range(3))
    return np.asarray(array[key])


#: z is drawn at least this fraction of the larger xy side, stretched if need be, so thin stacks stay visible.
MIN_Z_FRACTION = 0.15


@_styled
def orthoviews_figure(
    prediction: str | os.PathLike, segmentation: str | os.PathLike, *, name: str, max_side: int = 1024
) -> Figure:
    """Orthogonal views (xy, yz, xz through the centre) of a volume's P(cell) and cells.

    Each block is laid out as in a viewer: xy, with yz to its right and xz below, in physical
    units from the volume's voxel size; dashed lines mark where the other two planes cut.

    Parameters
    ----------
    prediction, segmentation : str or path-like
        Probability and instance-label volumes of the same (Z, Y, X) shape.
    name : str
        The volume's name, for the title.
    max_side : int, optional
        Planes are read with a stride so that no side exceeds this many pixels: a terabyte
        volume costs a few rows of chunks, not a full read.

    Raises
    ------
    ValueError
        If the two volumes differ in shape.

    Notes
    -----
    When the stack's physical thickness (z) is under ``MIN_Z_FRACTION`` of its larger xy side, z is
    stretched to that fraction and the title says by how much.
    """
    prob_volume, seg_volume = io.open_volume(prediction), io.open_volume(segmentation)
    if prob_volume.shape != seg_volume.shape:
        raise ValueError(
            f"segmentation {segmentation} has shape {seg_volume.shape}, expected the prediction's "
            f"{prob_volume.shape} ({prediction})"
        )
    cz, cy, cx = (n // 2 for n in prob_volume.shape)
    thickness, height, width = (n * v for n, v in zip(prob_volume.shape, prob_volume.voxel_size, strict=True))
    stretch = max(1.0, MIN_Z_FRACTION * max(height, width) / thickness)
    thickness *= stretch
    fig = plt.figure(
        figsize=(13, 0.9 + 5.9 * (height + thickness) / (width + thickness)), layout="constrained"
    )
    grid = fig.add_gridspec(2, 4, width_ratios=[width, thickness] * 2, height_ratios=[height, thickness])
    for block, (volume, kind) in enumerate(((prob_volume, "P(cell)"), (seg_volume, "cells"))):
        xy, yz, xz = (fig.add_subplot(grid[r, 2 * block + c]) for r, c in ((0, 0), (0, 1), (1, 0)))
        planes = [
            (_plane(volume.array, 0, cz, max_side), [0, width, height, 0], xy),
            (_plane(volume.array, 2, cx, max_side).T, [0, thickness, height, 0], yz),  # y down, z across
            (_plane(volume.array, 1, cy, max_side), [0, width, thickness, 0], xz),
        ]
        for plane, extent, ax in planes:
            image = label_colours(plane) if kind == "cells" else decode(plane)
            shown = ax.imshow(image, cmap="magma", vmin=0, vmax=1, extent=extent, aspect="equal")
            _image_axes(ax)
        xy.axhline((cy + 0.5) * height / volume.shape[1], color="w", ls="--", lw=0.8)
        xy.axvline((cx + 0.5) * width / volume.shape[2], color="w", ls="--", lw=0.8)
        for ax in (yz, xz):
            cut = (cz + 0.5) * thickness / volume.shape[0]
            (ax.axvline if ax is yz else ax.axhline)(cut, color="w", ls="--", lw=0.8)
        xy.set_title(f"{kind}: xy at z = {cz}")
        yz.set_title(f"yz at x = {cx}", fontsize="small")
        xz.set_xlabel(f"xz at y = {cy}")
        if kind == "P(cell)":
            fig.colorbar(shown, ax=[xy, yz, xz], location="left", shrink=0.6, label="P(cell)")
    unit = prob_volume.unit or "voxel"
    size = " x ".join(f"{v:g}" for v in prob_volume.voxel_size)
    z_note = f"; z drawn {stretch:.1f}x" if stretch > 1 else ""
    fig.suptitle(f"{name}: {prob_volume.shape} voxels (z, y, x) of {size} {unit}{z_note}")
    return fig
