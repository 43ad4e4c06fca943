"""Does a cross-validated recipe carry over? Each fold's validation slices of ISBI 2012, changed in a way
training never saw, predicted by that fold's models and scored (README, "Does it carry over").

Run after a cross-validation (``snakemake results/<dataset>/cv/metrics.csv ...``): for every fold k and
condition the fold's 4 slices are rewritten as a TIFF, predicted by the fold's members (``last.pt``, the
checkpoints its scores use) with the unet-core CLI, cut by ``unet-core segment`` once per ``--segment``
variant and scored by ``unet-core evaluate``. Conditions:

- ``x1.25``, ``x1.5``, ``x0.667``: rescaled (raw bilinear, anti-aliased when shrunk; the labels' cells
  nearest-neighbour, then every contact between two cells drawn as membrane, so cells stay closed), as a
  stack imaged at 3.2, 2.7 or 6 nm would show them. Predicted with that voxel size, so predict works on
  the training pixel grid (``predict.match_pixel_size``).
- ``contrast``: contrast 0.6 around the mean, 25 gray values brighter.
- ``gamma``: gamma 1.5 (darker mid-tones).
- ``isbi``: the slices as they are.

Prints one line per condition, variant and fold, then the mean over folds of the cells' Rand and warping
errors and of the map's Rand error, and how many folds each variant ties or beats the first on.

    python bench/carry_over.py results/isbi2012_cpu --folds 0 1 2 \\
        --segment "--method watershed --threshold 0.3 --seed-threshold 0.7" \\
        --segment "--method watershed --threshold 0.3 --seed-threshold 0.7 --seed-min-size 20"
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from skimage.measure import label
from skimage.transform import resize

from unet_core.checkpoint import load_checkpoint
from unet_core.folds import fold_slices
from unet_core.segment import cell_map

ISBI = Path(__file__).resolve().parents[2] / "shared/data/isbi2012"
PIXEL_NM = 4.0  # ISBI 2012: 4 x 4 x 50 nm
CONDITIONS = ("isbi", "x1.25", "x1.5", "x0.667", "contrast", "gamma")
SCORES = {("segmentation", "rand_error"): "cells Rand", ("segmentation", "warping_error"): "cells warping"}
SCORES |= {("unet", "rand_error"): "map Rand"}


def changed(condition: str, raw: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The slices under ``condition``: raw, ISBI labels, and the pixel size (nm) they now show."""
    if condition.startswith("x"):
        factor = float(condition[1:])
        shape = (raw.shape[0], round(raw.shape[1] * factor), round(raw.shape[2] * factor))
        scaled = resize(raw.astype(np.float32), shape, order=1, anti_aliasing=factor < 1, preserve_range=True)
        cells = np.stack([label(s > 0, connectivity=1) for s in labels])
        cells = resize(cells, shape, order=0, anti_aliasing=False, preserve_range=True).astype(np.int32)
        # the ISBI view of the cells: a contact between two becomes membrane, so cells stay closed
        return _gray(scaled), np.where(cell_map(cells), 255, 0).astype(np.uint8), PIXEL_NM / factor
    values = raw.astype(np.float32)
    if condition == "contrast":
        return _gray((values - values.mean()) * 0.6 + values.mean() + 25), labels, PIXEL_NM
    if condition == "gamma":
        return _gray(255 * (values / 255) ** 1.5), labels, PIXEL_NM
    if condition == "isbi":
        return raw, labels, PIXEL_NM
    raise ValueError(f"unknown condition {condition!r}: choose from {CONDITIONS}")


def _gray(values: np.ndarray) -> np.ndarray:
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def fold_models(results: Path, fold: int) -> list[Path]:
    """``last.pt`` of every member of the fold: member 0 in model/, member k in model/member<k>/."""
    model = results / "cv" / f"fold{fold}" / "model"
    members = [model / "last.pt", *sorted(model.glob("member*/last.pt"))]
    if not members[0].is_file():
        raise SystemExit(f"{members[0]}: no such checkpoint; run the cross-validation first")
    return members


def unet_core(*args: object) -> None:
    done = subprocess.run(["unet-core", *map(str, args)], capture_output=True, text=True)
    if done.returncode:  # its own error names the file and the fix
        raise SystemExit(f"unet-core {args[0]} failed:\n{done.stderr[-3000:]}")


def score(workdir: Path, models: list[Path], pixel: float, segments: list[str]) -> list[dict]:
    """Predict workdir/raw.tif once, cut and score it once per segment variant."""
    pred = workdir / "pred.ome.zarr"
    unet_core("predict", *models, workdir / "raw.tif", pred, "--voxel-size", 50, pixel, pixel,
              "--unit", "nanometer")  # fmt: skip
    rows = []
    for variant, flags in enumerate(segments):
        seg, metrics = workdir / f"seg{variant}.ome.zarr", workdir / f"metrics{variant}.csv"
        unet_core("segment", pred, seg, *shlex.split(flags))
        unet_core("evaluate", pred, workdir / "labels.tif", "--segmentation", seg, "--slices", "all",
                  "--out", metrics)  # fmt: skip
        table = pd.read_csv(metrics).set_index(["method", "metric"])["value"]
        rows.append({"variant": variant} | {name: table[key] for key, name in SCORES.items()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path, help="results/<dataset> of a finished cross-validation")
    parser.add_argument("--folds", type=int, nargs="+", help="default: every fold found")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    parser.add_argument("--segment", action="append", help="unet-core segment flags; repeat to compare")
    parser.add_argument("--raw", type=Path, default=ISBI / "train-volume.tif")
    parser.add_argument("--labels", type=Path, default=ISBI / "train-labels.tif")
    args = parser.parse_args()
    segments = args.segment or ["--method watershed --threshold 0.3 --seed-threshold 0.7"]
    found = sorted(int(p.parent.parent.name[4:]) for p in (args.results / "cv").glob("fold*/model/last.pt"))
    raw, labels = tifffile.imread(args.raw), tifffile.imread(args.labels)
    rows = []
    for fold in args.folds if args.folds is not None else found:
        models = fold_models(args.results, fold)
        trained_on = load_checkpoint(models[0], mmap=True)["train_config"]["fold"]  # "k/K"
        _, chosen = fold_slices((0, len(labels)), (len(labels), len(labels)), trained_on)
        for condition in args.conditions:
            with tempfile.TemporaryDirectory() as tmp:
                workdir = Path(tmp)
                raw_c, labels_c, pixel = changed(condition, raw[chosen], labels[chosen])
                tifffile.imwrite(workdir / "raw.tif", raw_c, photometric="minisblack")
                tifffile.imwrite(workdir / "labels.tif", labels_c, photometric="minisblack")
                for row in score(workdir, models, pixel, segments):
                    rows.append({"condition": condition, "fold": fold} | row)
                    print(", ".join(f"{k} {v:.5g}" if isinstance(v, float) else f"{k} {v}"
                                    for k, v in rows[-1].items()), flush=True)  # fmt: skip
    for variant, flags in enumerate(segments):
        print(f"variant {variant}: {flags}")
    table = pd.DataFrame(rows)
    cells = ["cells Rand", "cells warping"]
    first = table.loc[table.variant == 0, ["condition", "fold", *cells]]
    paired = table.merge(first, on=["condition", "fold"], how="left", suffixes=("", " of variant 0"))
    for name in cells:  # paired counts say more than the spread, which is mostly the slices'
        paired[f"folds <= variant 0: {name}"] = paired[name] <= paired[f"{name} of variant 0"]
    summary = paired.drop(columns=["fold", *(f"{name} of variant 0" for name in cells)])
    how = {name: "mean" for name in SCORES.values()} | {
        f"folds <= variant 0: {name}": "sum" for name in cells
    }
    print(summary.groupby(["condition", "variant"]).agg(how).to_string(float_format="%.5f"))
    print("mean over every condition and fold:")
    print(table.groupby("variant")[list(SCORES.values())].mean().to_string(float_format="%.5f"))


if __name__ == "__main__":
    main()
