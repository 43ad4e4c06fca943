"""The report folder a paper author lifts from: metrics.csv/.tex, PNG+PDF figures, index.html."""

from __future__ import annotations

import base64
import html
import logging
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import zarr  # noqa: E402

from . import io  # noqa: E402
from .dataset import held_out, read_split  # noqa: E402
from .evaluate import as_probability  # noqa: E402

log = logging.getLogger(__name__)

# U-Net paper, Table 1 (ISBI 2012 test set, March 2015); see METRICS.md.
PUBLISHED = pd.DataFrame(
    [
        ("human values", 0.000005, 0.0021, 0.0010),
        ("u-net (paper)", 0.000353, 0.0382, 0.0611),
        ("DIVE-SCI", 0.000355, 0.0305, 0.0584),
        ("IDSIA", 0.000420, 0.0504, 0.0613),
    ],
    columns=["method", "warping_error", "rand_error", "pixel_error"],
)
TABLE_METRICS = ["warping_error", "rand_error", "pixel_error", "pixel_error_at_0.5"]
FOOTNOTE = (
    "Our rows are measured on held-out slices of the training data, not on the hidden ISBI 2012 test "
    "labels; the published rows are the U-Net paper's Table 1. Errors follow the ISBI 2012 definitions "
    "(Fiji PixelError, RandError, WarpingError), each minimised over thresholds 0.0-1.0 (warping 0.0-0.9)."
)


def metrics_table(metrics_csv: str | os.PathLike) -> pd.DataFrame:
    """One row per method: ours from ``metrics.csv`` (long form), then the paper's published rows."""
    long = pd.read_csv(metrics_csv)
    ours = long.pivot_table(index="method", columns="metric", values="value", sort=False).reset_index()
    ours = ours[["method", *[m for m in TABLE_METRICS if m in ours.columns]]]
    return pd.concat([ours, PUBLISHED], ignore_index=True)


def _save(fig: plt.Figure, out_dir: Path, name: str) -> Path:
    png = out_dir / "figures" / f"{name}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120, bbox_inches="tight")
    fig.savefig(png.with_suffix(".pdf"), bbox_inches="tight")
    plt.close(fig)
    return png


def overview_figure(data: str, prediction: str, segmentation: str, out_dir: Path) -> Path:
    """Raw, ground truth, probability and segmentation of the middle held-out slice."""
    root = zarr.open_group(store=data, mode="r")
    chosen = held_out(read_split(root))
    z = (chosen.start + chosen.stop - 1) // 2 if chosen.stop > chosen.start else 0
    panels = [
        ("raw", np.asarray(root["0"][z]), "gray"),
        ("ground truth", np.asarray(root["labels/cells/0"][z]), "gray"),
        ("P(cell)", as_probability(np.asarray(io.open_volume(prediction).array[z])), "magma"),
        ("segmentation", np.asarray(io.open_volume(segmentation).array[z]), None),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.8))
    for ax, (title, image, cmap) in zip(axes, panels, strict=True):
        if cmap is None:
            ax.imshow(_colour_labels(image), interpolation="nearest")
        else:
            ax.imshow(image, cmap=cmap, interpolation="nearest")
        ax.set_title(f"{title} (slice {z})", fontsize=11)
        ax.axis("off")
    return _save(fig, out_dir, "overview")


def _colour_labels(labels: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    colours = rng.uniform(0.2, 1.0, size=(int(labels.max()) + 1, 3))
    colours[0] = 0.0
    return colours[labels]


def training_figure(train_log: str, out_dir: Path) -> Path:
    """Training loss and validation errors against iteration."""
    frame = pd.read_csv(train_log)
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot(frame["iteration"], frame["loss"], marker="o", ms=3)
    ax_loss.set(xlabel="iteration", ylabel="weighted cross entropy", title="training loss")
    for column in ("val_rand_error", "val_pixel_error"):
        if column in frame:
            ax_val.plot(frame["iteration"], frame[column], marker="o", ms=3, label=column[4:])
    ax_val.set(xlabel="iteration", ylabel="error", title="validation")
    ax_val.legend()
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
    return _save(fig, out_dir, "training")


def _img_tag(png: Path, alt: str) -> str:
    payload = base64.b64encode(png.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{payload}"></figure>'


def build_report(
    out_dir: str | os.PathLike,
    *,
    metrics_csv: str,
    train_log: str,
    data: str,
    prediction: str,
    segmentation: str,
    title: str = "U-Net segmentation report",
) -> Path:
    """Write ``metrics.csv``, ``metrics.tex``, ``figures/*.png|pdf`` and ``index.html`` into ``out_dir``."""
    with io.atomic_directory(out_dir) as tmp:
        table = metrics_table(metrics_csv)
        table.to_csv(tmp / "metrics.csv", index=False)
        latex = table.to_latex(index=False, float_format="%.6f", na_rep="--", caption=FOOTNOTE)
        (tmp / "metrics.tex").write_text(latex.replace("\\begin{tabular}", "\\centering\n\\begin{tabular}"))
        figures = [
            (
                overview_figure(data, prediction, segmentation, tmp),
                "raw, ground truth, probability, segmentation",
            ),
            (training_figure(train_log, tmp), "training curves"),
        ]
        body = "\n".join(
            [
                f"<h1>{html.escape(title)}</h1>",
                "<h2>Held-out errors</h2>",
                table.to_html(index=False, float_format=lambda v: f"{v:.6f}", na_rep="&ndash;", escape=True),
                f"<p class=note>{html.escape(FOOTNOTE)}</p>",
                "<h2>Figures</h2>",
                *(_img_tag(png, alt) for png, alt in figures),
            ]
        )
        style = (
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%}"
            "table{border-collapse:collapse}td,th{padding:4px 10px;border-bottom:1px solid #ccc}"
        )
        (tmp / "index.html").write_text(
            f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{body}</body></html>"
        )
    log.info("report written to %s", out_dir)
    return Path(out_dir) / "index.html"
