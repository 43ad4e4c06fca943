"""Time the ISBI metrics on a realistic 30 x 512 x 512 probability map.

Usage: ``python bench/evaluate.py [--labels PATH] [--slices 30] [--n-workers 2]``

The ground truth is the ISBI 2012 training labels when the file exists (20 slices, cycled
with left-right flips to fill the volume; read in place, never copied), else a synthetic
Voronoi membrane volume. The probability map is the cell mask blurred, with noise, membrane
gaps (merges) and dark blobs in cells (splits, holes), so every metric has work to do.
Prints the seconds per slice per threshold of each metric, and the total.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from unet_core.metrics import (
    DEFAULT_THRESHOLDS,
    DEFAULT_THRESHOLDS_WITH_1,
    evaluation_tables,
    isbi_scores,
    pixel_error,
    rand_error,
    vrand_vinfo,
    warping_error,
)

ISBI_LABELS = Path(__file__).resolve().parents[2] / "shared/data/isbi2012/train-labels.tif"


def _isbi_labels(path: Path, n_slices: int) -> np.ndarray:
    import tifffile

    stack = tifffile.imread(path)
    slices = [stack[z % len(stack)] for z in range(n_slices)]
    return np.stack([s if (z // len(stack)) % 2 == 0 else s[:, ::-1] for z, s in enumerate(slices)])


def _voronoi_labels(n_slices: int, size: int, rng: np.random.Generator) -> np.ndarray:
    volume = np.empty((n_slices, size, size), np.uint8)
    for z in range(n_slices):
        seeds = np.zeros((size, size), np.int32)
        ys, xs = rng.integers(0, size, (2, 300))
        seeds[ys, xs] = np.arange(1, 301)
        _, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
        cells = seeds[iy, ix]
        edges = ndi.grey_dilation(cells, 2) != ndi.grey_erosion(cells, 2)
        volume[z] = np.where(edges, 0, 255)
    return volume


def _probability(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cells = (labels > 0).astype(np.float64)
    prob = ndi.gaussian_filter(cells, sigma=(0, 1.5, 1.5))
    prob += ndi.gaussian_filter(rng.normal(0.0, 0.35, cells.shape), sigma=(0, 1, 1))
    for z in range(len(prob)):
        for value, n_blobs in ((1.0, 40), (0.0, 40)):  # gaps in membranes, blobs in cells
            blobs = np.zeros(cells.shape[1:], bool)
            blobs[tuple(rng.integers(0, cells.shape[1], (2, n_blobs)))] = True
            blobs = ndi.binary_dilation(blobs, iterations=2)
            prob[z][blobs] = 0.5 * prob[z][blobs] + 0.5 * value
    return np.clip(prob, 0.0, 1.0).astype(np.float32)


def _timed(label: str, func, n_units: int) -> tuple[float, object]:
    start = time.perf_counter()
    result = func()
    elapsed = time.perf_counter() - start
    print(f"{label:<22} {elapsed:7.2f} s   {1000 * elapsed / n_units:7.2f} ms/slice/threshold")
    return elapsed, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=ISBI_LABELS)
    parser.add_argument("--slices", type=int, default=30)
    parser.add_argument("--n-workers", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.labels.exists():
        labels, source = _isbi_labels(args.labels, args.slices), str(args.labels)
    else:
        labels, source = _voronoi_labels(args.slices, 512, rng), "synthetic Voronoi"
    prob = _probability(labels, rng)
    print(f"labels: {source}; volume {prob.shape}; {args.n_workers} worker threads")

    start = time.perf_counter()
    isbi_scores(prob[:1, :64, :64], labels[:1, :64, :64], n_workers=1)  # numba compile / load
    print(f"{'compile (or cache load)':<22} {time.perf_counter() - start:7.2f} s")

    z, n11, n10 = len(prob), len(DEFAULT_THRESHOLDS_WITH_1), len(DEFAULT_THRESHOLDS)
    n = args.n_workers
    _timed("pixel_error", lambda: pixel_error(prob, labels), z * n11)
    _timed("rand_error", lambda: rand_error(prob, labels, n_workers=n), z * n11)
    _timed("vrand_vinfo", lambda: vrand_vinfo(prob, labels, n_workers=n), z * n11)
    _timed("warping_error", lambda: warping_error(prob, labels, n_workers=n), z * n10)
    total, scores = _timed("isbi_scores (all)", lambda: isbi_scores(prob, labels, n_workers=n), z * n11)
    _timed("evaluation_tables", lambda: evaluation_tables(prob, labels, n_workers=n), z * n11)
    volume = " x ".join(map(str, prob.shape))
    print(f"all metrics, {volume} over {n11} thresholds: {total:.1f} s (target < 60 s)")
    for name, value in scores.items():
        print(f"  {name:<24} {value}")


if __name__ == "__main__":
    main()
