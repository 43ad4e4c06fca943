"""The README.md inside an exported package: what the model does, how to tile it, what it scored, on what
data it was trained, and whom to cite."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from ..evaluate_cells import CELL_METRICS
from ..report._cells import CELL_LABELS, CELL_METRIC_NAMES
from ..report._tables import ISBI_METRICS, METRIC_NAMES, OUR_LABELS

PAPER = (
    "Ronneberger O, Fischer P, Brox T (2015). U-Net: Convolutional Networks for Biomedical Image "
    "Segmentation. MICCAI 2015, LNCS 9351, 234-241."
)
PAPER_DOI = "10.1007/978-3-319-24574-4_28"


#: What the network tells apart, and what its validation scores, by the kind of labels it learnt.
SUBJECT = {
    "binary": (
        "for electron microscopy of neural tissue: it maps a 2D\nEM image (one slice of a stack) to the "
        "probability that each pixel is cell interior rather than\nmembrane. Threshold it, or grow cells "
        "from it with a seeded watershed, to get a segmentation."
    ),
    "instances": (
        "for touching cells in light microscopy (the paper's second\nexperiment): it maps a 2D image (one "
        "frame) to the probability that each pixel is cell interior\nrather than background or a border "
        "between touching cells. Cut it into cells with a watershed to\nget one label per cell."
    ),
}
VALIDATION = {
    "binary": (
        "ISBI 2012 errors on the held-out slices {slices} of the same data (lower is better;\neach at its "
        'best threshold t on P(cell), from `eval/metrics.csv`). "U-Net + segment" scores the cells\nof '
        "unet-core's seeded watershed, which is not part of this package."
    ),
    "instances": (
        "The Cell Tracking Challenge's SEG, foreground IoU and Dice on the held-out frames {slices} of the "
        'same\ndata (higher is better; from `eval/metrics.csv`). "U-Net + segment" scores the cells of '
        "unet-core's\nsegment step, which is not part of this package."
    ),
}


def metrics_markdown(metrics: pd.DataFrame) -> str:
    """The ISBI errors (or, for cells, SEG, foreground IoU and Dice) of ``eval/metrics.csv`` as a Markdown
    table: one row per method, value (threshold)."""
    cells_scored = "seg" in set(metrics["metric"])
    columns = CELL_METRICS if cells_scored else ISBI_METRICS
    names, labels = (CELL_METRIC_NAMES, CELL_LABELS) if cells_scored else (METRIC_NAMES, OUR_LABELS)
    header = "| method | " + " | ".join(names[m] for m in columns) + " |"
    lines = [header, "|---" * (len(columns) + 1) + "|"]
    for method, rows in metrics.groupby("method", sort=False):
        by_metric = rows.set_index("metric")
        cells = []
        for metric in columns:
            if metric not in by_metric.index:
                cells.append("-")
                continue
            value, threshold = by_metric.loc[metric, ["value", "threshold"]]
            cells.append(f"{value:.4g}" + ("" if math.isnan(threshold) else f" (t = {threshold:g})"))
        lines.append(f"| {labels.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _table(values: Mapping[str, object]) -> str:
    rows = "\n".join(f"| `{key}` | {value} |" for key, value in sorted(values.items()))
    return f"| key | value |\n|---|---|\n{rows}"


def _pixel_line(pixel_size: tuple[Sequence[float], str] | None) -> str:
    if pixel_size is None:
        return "- **Pixel size**: not recorded; give it data of the training data's pixel size."
    (_, y, x), unit = pixel_size
    return (
        f"- **Pixel size**: trained on {y:g} x {x:g} {unit} pixels (the y and x axes' scale). Resample "
        "data of\n  another pixel size to it (`unet-core predict` does where the data records its own)."
    )


def documentation(
    *,
    name: str,
    depth: int,
    halo: int,
    min_size: int,
    normalization: tuple[float, float],
    checkpoints: Sequence[Mapping[str, object]],
    data: Mapping[str, object],
    metrics: pd.DataFrame,
    test_origin: tuple[int, int, int],
    version: str,
    labels_kind: str = "binary",
    pixel_size: tuple[Sequence[float], str] | None = None,
) -> str:
    """README.md of a package.

    Parameters
    ----------
    name : str
        The package's name (the heading).
    depth, halo, min_size : int
        The U-Net's depth and the package's tiling geometry (`halo`, `min_input`).
    normalization : tuple of float
        Raw intensities (low, high) that the network's input maps to 0 and 1.
    checkpoints : sequence of mapping
        Per trained model: ``file``, ``sha256``, ``best_iteration``, ``train_config``.
    data : mapping
        The prepared store's record: ``path``, ``source``, ``labels``, ``split``, ``data_sha256``.
    metrics : pandas.DataFrame
        ``eval/metrics.csv``.
    test_origin : tuple of int
        The test input's first voxel (z, y, x) in the prepared store.
    version : str
        unet-core's version.
    labels_kind : {"binary", "instances"}, optional
        What the network learnt: membranes of EM, or touching cells (`SUBJECT`).
    pixel_size : (voxel size (z, y, x), unit), optional
        The training data's, where recorded.
    """
    low, high = normalization
    members = len(checkpoints)
    seeds = ", ".join(str(c["train_config"].get("seed")) for c in checkpoints)
    ensemble = (
        f"It is the mean of {members} U-Nets trained alike with seeds {seeds} (an ensemble): each input "
        "tile runs through all of them.\n\n"
        if members > 1
        else ""
    )
    trained = "\n\n".join(
        f"Model {k} (`{c['file']}`, sha256 `{c['sha256']}`), best checkpoint at iteration "
        f"{c['best_iteration']}, trained with:\n\n{_table(c['train_config'])}"
        for k, c in enumerate(checkpoints)
    )
    split = data["split"]
    return f"""# {name}

The U-Net of Ronneberger, Fischer and Brox (2015) {SUBJECT[labels_kind]}
{ensemble}Exported by unet-core {version} (`unet-core export`).

## Input and output

- **Input** `raw`: one channel, axes batch, channel, y, x; float32 raw intensities. The package's
  preprocessing maps the training data's 0.5 and 99.5 percentiles, {low:g} and {high:g}, to 0 and 1
  (`scale_linear`, gain {1 / (high - low):.6g}, offset {-low / (high - low):.6g}), exactly as training did:
  give it data of the same kind (the same microscope, contrast and bit depth).
- **Output** `cell_probability`: P(cell interior) in [0, 1], one channel, same y, x size as the input.
{_pixel_line(pixel_size)}
- **Tiling**: the network (depth {depth}) uses valid convolutions and {depth} 2x2 max-pools. Tiles are
  {min_size} + k x {2**depth} pixels per side (k = 0, 1, ...). The outer {halo} pixels per side of an output
  tile (the declared halo: the context its other pixels need) are zeros, which tiling consumers crop: they
  overlap tiles by the halo and mirror the image at its border. Tiles laid that way from the image's
  corner share one pooling grid and give the values of `unet-core predict --no-bf16` of the image (float32,
  as here; its bf16 default on GPUs and bf16-capable CPUs differs by bf16's rounding), wherever its
  sides are multiples of {2**depth}: otherwise bioimageio.core moves the last tile back to end at the
  border, off the grid, and its pixels differ (a pooling U-Net's output depends on the grid's phase).
- Test-time augmentation is not part of the package.

## Use it

- **bioimageio.core** (Python): `bioimageio predict` or `bioimageio.core.predict(model="this.zip", ...)`;
  `bioimageio test this.zip` reproduces the test output.
- **ilastik** (1.4 or later): the Neural Network workflow loads the zip.
- **Fiji**: deepImageJ installs the zip (install from a local file) and runs it on the open image.
- **napari**: the napari-bioimageio model manager lists it; bioimageio.core runs it.
- **unet-core**: `unet-core predict this.zip volume.zarr out.ome.zarr` predicts whole volumes of any size.

## Training data

Prepared store `{data["path"]}`, made by `unet-core prepare` from raw `{data["source"]}` and labels
`{data["labels"]}` (sha256 of the training slices' raw, labels and weights: `{data["data_sha256"]}`).
Slices (z, half-open): train {split["train"]}, validation {split["val"]}, test {split["test"]}.
Labels: cell interior versus membrane; loss: the paper's weighted cross entropy.

{trained}

## Validation

{VALIDATION[labels_kind].format(slices=metrics["slices"].iloc[0])}

{metrics_markdown(metrics)}

## Test tensors

`test_input.npy` is a crop of training slice z = {test_origin[0]} of the prepared store from row
{test_origin[1]} and column {test_origin[2]} (mirrored where it leaves the slice, as `unet-core predict`
mirrors); `test_output.npy` is this package's output for it: zeros in the halo, and inside it the values
of `unet-core predict --no-bf16` for those pixels.

## Cite

{PAPER} doi:{PAPER_DOI}
"""
