"""Throughput and peak memory of ``unet-core prepare`` on multi-GB TIFF stacks, beside a plain read.

Usage: ``nice python bench/prepare.py [--sizes-gb 1 2] [--weights-slices 256] [--slab-mb 256]``

For each size, writes a uint8 stack of 512 x 512 slices and its labels as multi-page TIFFs into a
temporary folder under /tmp (deleted afterwards). Slices are the ISBI 2012 training slices and labels
when ``../shared/data/isbi2012`` exists (read in place, cycled with flips), else synthetic ones. Each
measurement runs in a fresh Python process that reports its own wall time and peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``):

- plain read: ``tifffile.imread`` of the raw stack (the throughput reference);
- import only: ``import unet_core.prepare`` (the RSS floor of any prepare process: torch, zarr, ...);
- raw copy to zarr: the raw stack streamed into a Zarr array with the chunks, shards, chunk keys and
  codec that prepare gives raw, nothing else (how much of prepare's time writing alone costs: raw is 1
  of the 10 bytes per pixel that prepare stores, and the only one that is not labels or weights);
- prepare with ``w0 = 0`` (class-balance weights only) for every size: streaming throughput and memory;
- on a stack of ``--weights-slices`` slices (0: skipped): prepare uncompressed (level 0) and with the paper's
  weight map (``w0 = 10``), whose per-cell distance transforms dominate the cost.

Throughput is MB of raw per second; CPU is the process's user + system seconds (over wall seconds: the
cores kept busy). Targets: prepare >= 0.7x plain read; peak RSS < 4x one slab (``--slab-mb``: every
slice in flight, raw, labels and outputs), whatever the stack size.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

ISBI = Path(__file__).resolve().parents[2] / "shared/data/isbi2012"
SLICE = 512
CHILD = """
import json, resource, sys, time
{setup}
start = time.perf_counter()
cpu0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
{body}
seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu = usage.ru_utime + usage.ru_stime - cpu0
print(json.dumps({{"seconds": seconds, "cpu": cpu, "rss_mb": usage.ru_maxrss / 1024}}))
"""


def _base_slices() -> tuple[np.ndarray, np.ndarray, str]:
    if (ISBI / "train-volume.tif").is_file():
        raw, labels = (tifffile.imread(ISBI / name) for name in ("train-volume.tif", "train-labels.tif"))
        source = f"ISBI 2012 training slices ({ISBI})"
    else:
        from unet_core.data.synthetic import generate_volume

        raw, labels = generate_volume((16, SLICE, SLICE), seed=0)
        source = "synthetic slices"

    def flipped(stack: np.ndarray) -> np.ndarray:  # 3x as many distinct slices
        return np.concatenate([stack, stack[:, :, ::-1], stack[:, ::-1, :]])

    return flipped(raw), flipped(labels), source


def _write_stacks(
    raw: Path, labels: Path, raw_base: np.ndarray, labels_base: np.ndarray, n_slices: int
) -> float:
    """Write raw and labels stacks of ``n_slices`` (cycling the base slices); returns MB of raw."""
    start = time.perf_counter()
    for path, base in ((raw, raw_base), (labels, labels_base)):
        pages = (base[z % len(base)] for z in range(n_slices))
        tifffile.imwrite(
            path, pages, shape=(n_slices, SLICE, SLICE), dtype=np.uint8, photometric="minisblack"
        )
    mb = n_slices * SLICE**2 / 1e6
    seconds = time.perf_counter() - start
    print(f"\n{n_slices} slices ({mb:.0f} MB raw, as much labels) written in {seconds:.0f} s")
    return mb


def _child(setup: str, body: str = "") -> dict:
    """Run ``setup`` then ``body`` in a fresh interpreter; the seconds of ``body``, the peak RSS of all."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD.format(setup=setup, body=body)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{result.stderr[-3000:]}")
    stages = [line.split(":", 2)[-1].strip() for line in result.stderr.splitlines() if "per stage" in line]
    return json.loads(result.stdout.strip().splitlines()[-1]) | {"stages": stages}


def _prepare(raw: Path, labels: Path, out: Path, *, w0: float, slab_mb: int, level: int) -> dict:
    setup = (
        "import logging; logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "from unet_core.prepare import PrepareConfig, prepare"
    )
    options = (
        f"raw={str(raw)!r}, labels={str(labels)!r}, w0={w0}, slab_mb={slab_mb}, compression_level={level}"
    )
    return _child(setup, f"prepare({str(out)!r}, PrepareConfig({options}))")


def _read(raw: Path) -> dict:
    return _child("import tifffile", f"tifffile.imread({str(raw)!r})")


def _copy_raw(raw: Path, out: Path, *, slab_mb: int) -> dict:
    setup = "import zarr\nfrom unet_core import io\nfrom unet_core.prepare import SHUFFLE, shard_slices"
    body = f"""
source = io.open_volume({str(raw)!r})
chunks = (1, {SLICE}, {SLICE})
shard = shard_slices(source.shape, chunks)
step = max(shard, {slab_mb} * 2**20 // ({SLICE} * {SLICE}) // shard * shard)
root = zarr.open_group({str(out)!r}, mode="w-", zarr_format=3)
array = io.create_image(root, "", shape=source.shape, dtype=source.dtype, chunks=chunks, compression_level=1,
    shuffle=SHUFFLE["raw"], shard_slices=shard, flat_keys=True).with_config({{"write_empty_chunks": True}})
for z0 in range(0, source.shape[0], step):
    array[z0 : z0 + step] = io.read_slices(source, z0, min(z0 + step, source.shape[0]))
"""
    return _child(setup, body)


def _report(label: str, mb: float, run: dict, reference: dict | None = None, slab_mb: int = 0) -> None:
    rate = mb / run["seconds"]
    ratio = f"{rate / (mb / reference['seconds']):6.3f}x read" if reference else " " * 13
    slab = f"  RSS {run['rss_mb']:6.0f} MB = {run['rss_mb'] / slab_mb:4.2f} slabs" if slab_mb else ""
    cpu = f"  CPU {run['cpu']:6.1f} s"
    print(
        f"{label:<34} {mb:7.0f} MB {run['seconds']:7.1f} s {rate:8.1f} MB/s  {ratio}{slab}{cpu}", flush=True
    )
    for line in run["stages"]:
        print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-gb", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--weights-slices", type=int, default=256, help="0 skips the weight-map runs")
    parser.add_argument("--slab-mb", type=int, default=256)
    args = parser.parse_args()
    raw_base, labels_base, source = _base_slices()
    floor = _child("import unet_core.prepare")
    print(f"slices: {source}; slab {args.slab_mb} MB; import-only RSS {floor['rss_mb']:.0f} MB")
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="unet-core-bench-prepare-") as tmp:
        folder = Path(tmp)
        raw, labels, out = folder / "raw.tif", folder / "labels.tif", folder / "out.ome.zarr"
        for size in args.sizes_gb:
            n_slices = int(size * 2**30 // SLICE**2)
            mb = _write_stacks(raw, labels, raw_base, labels_base, n_slices)
            read = _read(raw)
            _report("plain tifffile.imread(raw)", mb, read)
            _report("raw copy to zarr (no labels)", mb, _copy_raw(raw, out, slab_mb=args.slab_mb), read)
            shutil.rmtree(out)
            run = _prepare(raw, labels, out, w0=0.0, slab_mb=args.slab_mb, level=1)
            _report("prepare, w0=0 (no border term)", mb, run, read, args.slab_mb)
            shutil.rmtree(out)
        if args.weights_slices < 1:
            return
        mb = _write_stacks(raw, labels, raw_base, labels_base, args.weights_slices)
        read = _read(raw)
        _report("plain tifffile.imread(raw)", mb, read)
        for w0, level in ((0.0, 0), (0.0, 1), (10.0, 1)):
            run = _prepare(raw, labels, out, w0=w0, slab_mb=args.slab_mb, level=level)
            _report(f"prepare, w0={w0:g}, compression {level}", mb, run, read, args.slab_mb)
            shutil.rmtree(out)


if __name__ == "__main__":
    main()
