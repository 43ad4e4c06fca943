"""Benchmark of overlap-tile inference, Zarr to Zarr, against the bare model on the same tiles.

Prints, measured side by side in one run on this machine:
- efficiency: end-to-end output voxels/s of `predict_file` (read, decode, mirror, model, encode, write,
  resume markers; one dask graph of block tasks) over the model's voxels/s on the very same input tiles
  already in memory;
- the dask graph against the pipeline it replaced (reader and writer thread pools around the model,
  `threaded_pipeline` below) on the same volume and blocks, with a no-op model (the ceiling the host
  sets) and with the real one, and the threaded scheduler's cost per task;
- halo overhead: input voxels computed per output voxel for the block size;
- memory: peak RSS of a prediction of a volume 4x larger over that of the base volume;
- on a GPU, the ratio to DESIGN.md's H200 ceiling of the raw model.

    python bench/predict.py                         # CPU defaults: depth 3, width 16
    python bench/predict.py --depth 4 --width 64 --block 1 1028 1028   # the paper's network (GPU)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr

from unet_core import io
from unet_core.blockwise import ModelHandle, VolumeReference, read_block_input
from unet_core.checkpoint import save_checkpoint
from unet_core.inference import TilePredictor, resolve_device
from unet_core.model import UNet, UNetConfig, bf16_autocast, memory_format, native_bf16
from unet_core.parallel import in_order
from unet_core.predict import (
    PROBABILITY_COMPRESSION_LEVEL,
    ChunkWriter,
    PredictionStore,
    PredictOptions,
    predict_file,
    write_blocks,
)
from unet_core.tiling import Block, network_input, plan_blocks, read_mirrored

H200_CEILING_MPX = {"eager bf16": 156.0, "compiled bf16": 249.0}


def make_inputs(folder: Path, args: argparse.Namespace, shape: list[int] | None = None) -> tuple[Path, Path]:
    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=args.depth, width=args.width))
    checkpoint = folder / "model.pt"
    save_checkpoint(
        checkpoint,
        {
            "model_config": model.config.to_dict(),
            "model_state": model.state_dict(),
            "normalization": [0.0, 255.0],
        },
    )
    source = folder / "input.ome.zarr"
    target = io.create_image(
        zarr.open_group(store=str(source), mode="w", zarr_format=3), "", shape=shape or args.shape,
        dtype="uint8", chunks=args.block,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    for z in range(target.shape[0]):  # slice by slice: the benchmark itself stays small in memory
        target[z] = rng.integers(0, 255, target.shape[1:], dtype=np.uint8)
    return checkpoint, source


def raw_model_rate(
    checkpoint: Path, source: Path, args: argparse.Namespace, fast: bool = True
) -> tuple[float, float]:
    """Output voxels/s of the model alone on the pipeline's own input tiles, and the halo overhead;
    ``fast=False``: in float32 NCHW, the baseline of the defaults (bf16 where native, channels_last)."""
    from unet_core.checkpoint import load_model

    device = resolve_device(args.device)
    model, normalization = load_model(checkpoint, device=device)
    predictor = TilePredictor(
        model, normalization=normalization, device=device, compile=args.compile, bf16=fast, channels_last=fast
    )
    array = io.open_volume(source).array
    blocks = plan_blocks(array.shape, args.block)
    tiles = [read_mirrored(array, network_input(b.write_roi, args.depth)[0]) for b in blocks]
    crops = [network_input(b.write_roi, args.depth)[1] for b in blocks]
    predictor.block(tiles[0], crops[0], "uint8")  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for tile, crop in zip(tiles, crops, strict=True):  # the pipeline's own compute step, nothing else
        predictor.block(tile, crop, "uint8")
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    out_voxels = float(np.prod(array.shape))
    in_voxels = float(sum(t.size for t in tiles))
    return out_voxels / elapsed, in_voxels / out_voxels


def monai_rate(checkpoint: Path, source: Path, args: argparse.Namespace, overlap: float) -> float | None:
    """MONAI's sliding_window_inference over the volume in memory, same model, as a peer reference.

    MONAI expects windows that keep their size, so each window is mirror-padded by the U-Net's halo
    (context from inside the window only: the seams that overlap averages away)."""
    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        return None
    from unet_core.checkpoint import load_model
    from unet_core.model import context, valid_output_size

    device = resolve_device(args.device)
    model, _ = load_model(checkpoint, device=device)
    model = model.eval().to(memory_format=memory_format(True))  # our pipeline's layout and precision
    halo = context(args.depth) // 2

    def window(x: torch.Tensor) -> torch.Tensor:
        with bf16_autocast(device, True):
            logits = model(torch.nn.functional.pad(x, (halo,) * 4, mode="reflect"))
        return torch.softmax(logits.float(), dim=1)

    roi = valid_output_size(args.block[1], args.depth)
    volume = torch.from_numpy(np.asarray(io.open_volume(source).array[...], dtype=np.float32) / 255.0)
    volume = volume[:, None].to(device)
    with torch.inference_mode():
        sliding_window_inference(volume[:1], (roi, roi), 1, window, overlap=overlap)  # warm-up
        start = time.perf_counter()
        sliding_window_inference(volume, (roi, roi), 1, window, overlap=overlap)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return float(np.prod(args.shape)) / (time.perf_counter() - start)


def pipeline_rate(checkpoint: Path, source: Path, folder: Path, args: argparse.Namespace, run: int) -> float:
    options = PredictOptions(block_shape=tuple(args.block), device=args.device, compile=args.compile)
    if run == 0:
        # Same warm-up as raw; with --compile it also fills inductor's cache, so the timed runs only pay
        # for re-tracing their freshly loaded model, as a user's second run would.
        predict_file(checkpoint, source, folder / "warmup.ome.zarr", options=options)
    start = time.perf_counter()
    predict_file(checkpoint, source, folder / f"output{run}.ome.zarr", options=options)
    return float(np.prod(args.shape)) / (time.perf_counter() - start)


def model_and_pipeline(
    checkpoint: Path, source: Path, folder: Path, args: argparse.Namespace
) -> tuple[float, float, float]:
    """Medians of the bare model's and the pipeline's rates over ``args.repeats`` alternating runs, and
    the halo overhead: on two shared cores one run of either varies by a third."""
    raws, pipes = [], []
    for run in range(args.repeats):
        raw, halo = raw_model_rate(checkpoint, source, args)
        raws.append(raw)
        pipes.append(pipeline_rate(checkpoint, source, folder, args, run))
    return statistics.median(raws), statistics.median(pipes), halo


def threaded_pipeline(
    predictor: TilePredictor, source, target: zarr.Array, blocks: list[Block], *, prefetch: int = 2, on_stored
) -> None:
    """The pipeline before the dask graph, kept as this benchmark's baseline: reader threads keep
    ``prefetch`` blocks read ahead of the model, writer threads store finished blocks while the next
    one computes."""

    def read(block: Block) -> tuple[Block, np.ndarray, tuple[slice, ...]]:
        return block, *read_block_input(source, block, predictor.depth, "input")

    def store(block: Block, out: np.ndarray) -> None:
        target[block.write_roi.to_slices()] = out
        on_stored(block)

    with ThreadPoolExecutor(prefetch) as readers, ThreadPoolExecutor(2) as writers:
        pending = []
        for block, tile, crop in in_order(readers, read, blocks, prefetch + 1):
            pending.append(writers.submit(store, block, predictor.block(tile, crop, str(target.dtype))))
        for write in pending:
            write.result()


class _NoModel(TilePredictor):
    """Returns zeros of the right shape at once: what is left is the pipeline's host work."""

    def block(self, tile: np.ndarray, crop: tuple[slice, ...], dtype: str) -> np.ndarray:
        return np.zeros(tuple(c.stop - c.start for c in crop), dtype)


@dataclass(frozen=True)
class _NoModelHandle(ModelHandle):
    depth: int = 3

    def _build(self) -> TilePredictor:
        return _NoModel(UNet(UNetConfig(depth=self.depth, width=1)))


@dataclass(frozen=True)
class Comparison:
    """Medians over alternating runs: output voxels/s and CPU seconds (all threads) of each path."""

    dask_rate: float
    threads_rate: float
    dask_cpu: float
    threads_cpu: float


def side_by_side(
    handle: ModelHandle, source: Path, folder: Path, args: argparse.Namespace, repeats: int
) -> Comparison:
    """The dask graph against the threaded pipeline it replaced on the same volume, blocks and model,
    each writing a fresh work store with its done-markers, over ``repeats`` alternating runs of each.

    Medians, and CPU time beside wall time: on two shared cores single runs vary by a fifth in speed,
    while the CPU seconds a run costs vary much less."""
    predictor, _ = handle.load()
    volume = io.open_volume(source)
    options = PredictOptions(block_shape=tuple(args.block), device="cpu")
    blocks = plan_blocks(volume.shape, args.block)
    rates: dict[str, list[float]] = {"dask": [], "threads": []}
    cpu: dict[str, list[float]] = {"dask": [], "threads": []}
    for run in range(repeats):
        for kind in rates:
            store = PredictionStore(folder / f"{kind}{run}.ome.zarr")
            target = store.open(volume=volume, options=options, key=kind, n_blocks=len(blocks))
            start, cpu_start = time.perf_counter(), time.process_time()
            if kind == "dask":
                write_blocks(
                    handle,
                    VolumeReference(str(source), volume),
                    blocks,
                    ChunkWriter(target, store),
                    options=options,
                    depth=predictor.depth,
                    name="input",
                    key=f"{kind}{run}",
                )
            else:
                threaded_pipeline(predictor, volume.array, target, blocks, on_stored=store.mark_done)
            rates[kind].append(float(np.prod(volume.shape)) / (time.perf_counter() - start))
            cpu[kind].append(time.process_time() - cpu_start)
    median = statistics.median
    return Comparison(
        median(rates["dask"]), median(rates["threads"]), median(cpu["dask"]), median(cpu["threads"])
    )


def chunk_write_ms(values: np.ndarray, folder: Path, level: int) -> tuple[float, float]:
    """Milliseconds per chunk to store ``values`` (the pipeline's output, chunk by chunk) into a fresh
    OME-Zarr array at Blosc zstd ``level``, and the compression ratio reached."""
    path = folder / f"level{level}.ome.zarr"
    target = io.create_image(
        zarr.open_group(store=str(path), mode="w", zarr_format=3), "", shape=values.shape,
        dtype=values.dtype, chunks=(1, *values.shape[1:]), compression_level=level,
    )  # fmt: skip
    start = time.perf_counter()
    for z in range(values.shape[0]):
        target[z] = values[z]
    elapsed = time.perf_counter() - start
    return 1e3 * elapsed / values.shape[0], values.nbytes / target.nbytes_stored()


def scheduler_cost_per_task(threads: int, n: int = 2000) -> float:
    """Seconds the threaded scheduler spends per task, measured on ``n`` tasks that do nothing."""
    from dask.threaded import get

    graph = {("noop", i): (int, i) for i in range(n)}
    start = time.perf_counter()
    get(graph, list(graph), num_workers=threads)
    return (time.perf_counter() - start) / n


def peak_rss_mb(shape: list[int], folder: Path, args: argparse.Namespace) -> float:
    """Peak RSS (MB) of a fresh process predicting a volume of ``shape`` written beforehand."""
    checkpoint, source = make_inputs(folder, args, shape)
    child = [
        sys.executable, __file__, "--child", str(checkpoint), str(source), "--block", *map(str, args.block),
        "--device", args.device, "--threads", str(args.threads),
    ]  # fmt: skip
    result = subprocess.run(child, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[8, 1024, 1024])
    parser.add_argument("--block", type=int, nargs=3, default=[1, 512, 512])
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (raw and pipeline)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of model and pipeline")
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-RSS runs")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "INPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        output = Path(args.child[1]).with_name("output.ome.zarr")
        options = PredictOptions(block_shape=tuple(args.block), device=args.device)
        predict_file(args.child[0], args.child[1], output, options=options)
        print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint, source = make_inputs(folder, args)
        device = resolve_device(args.device)
        name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} threads"
        print(
            f"device: {name}; U-Net depth {args.depth} width {args.width};"
            f" volume {args.shape}, block {args.block}{', torch.compile' if args.compile else ''}"
        )
        raw, pipe, halo = model_and_pipeline(checkpoint, source, folder, args)
        print(f"raw model on the same tiles : {raw / 1e6:8.3f} Mvox/s   (median of {args.repeats} runs)")
        print(f"pipeline Zarr -> Zarr       : {pipe / 1e6:8.3f} Mvox/s")
        print(f"efficiency (pipeline / raw) : {pipe / raw:8.3f}   (target >= 0.85 on CPU)")
        print(f"halo overhead (in/out vox)  : {halo:8.3f}   (target <= 1.5 for the default tile)")
        plain, _ = raw_model_rate(checkpoint, source, args, fast=False)
        precision = "bf16" if native_bf16(device) else "float32"
        print(f"raw model, float32 NCHW     : {plain / 1e6:8.3f} Mvox/s   (one run)")
        print(f"raw ({precision}, NHWC) / float32 NCHW: {raw / plain:6.3f}")
        values = io.open_volume(folder / "output0.ome.zarr").array[...]
        (folder / "levels").mkdir()
        shipped_ms, shipped_ratio = chunk_write_ms(values, folder / "levels", PROBABILITY_COMPRESSION_LEVEL)
        level5_ms, level5_ratio = chunk_write_ms(values, folder / "levels", 5)
        print(
            f"storing a slice of probabilities: level {PROBABILITY_COMPRESSION_LEVEL} {shipped_ms:.2f} ms "
            f"({shipped_ratio:.2f}x smaller), level 5 {level5_ms:.2f} ms ({level5_ratio:.2f}x): "
            f"{level5_ms / shipped_ms:.2f}x the time"
        )
        # The host's own speed is measured on a volume 4x deeper: a no-op run of the base volume takes
        # a few tens of ms, of which starting the threads and bars is a fixed part.
        (folder / "noop").mkdir()
        _, deep = make_inputs(folder / "noop", args, [4 * args.shape[0], *args.shape[1:]])
        noop = _NoModelHandle.create(checkpoint, depth=args.depth)
        host = side_by_side(noop, deep, folder / "noop", args, repeats=11)
        print(f"host ceiling (no-op model), dask graph : {host.dask_rate / 1e6:8.3f} Mvox/s")
        print(f"host ceiling (no-op model), threads    : {host.threads_rate / 1e6:8.3f} Mvox/s")
        ratio = host.dask_rate / host.threads_rate
        print(f"dask / threaded pipeline, no-op model  : {ratio:8.3f}   (target >= 0.95)")
        print(f"  CPU seconds per run, threads / dask  : {host.threads_cpu / host.dask_cpu:8.3f}")
        if device.type == "cpu":  # on a GPU the bare model rate above is the comparison that matters
            real = side_by_side(
                ModelHandle.create(checkpoint, device="cpu"), source, folder / "real", args, 5
            )
            ratio = real.dask_rate / real.threads_rate
            print(f"dask / threaded pipeline, real model   : {ratio:8.3f}   (target >= 0.95)")
            print(f"  CPU seconds per run, threads / dask  : {real.threads_cpu / real.dask_cpu:8.3f}")
        per_task = scheduler_cost_per_task(PredictOptions().prefetch + 3)
        print(
            f"threaded scheduler: {per_task * 1e6:.0f} us per task, one task per block: "
            f"{per_task * host.dask_rate / np.prod(args.block):.1%} of the no-op run"
        )
        for overlap in () if args.compile else (0.0, 0.25):  # MONAI runs eager: one row is enough
            peer = monai_rate(checkpoint, source, args, overlap)
            peer_text = f"{peer / 1e6:8.3f} Mvox/s" if peer else "     n/a (pip install monai)"
            print(f"MONAI sliding window, in memory, overlap {overlap:4.2f} (seams): {peer_text}")
        if device.type == "cuda":
            for label, ceiling in H200_CEILING_MPX.items():
                print(f"raw / H200 ceiling ({label}): {raw / 1e6 / ceiling:.3f}")
                print(f"pipeline / H200 ceiling ({label}): {pipe / 1e6 / ceiling:.3f}")
    if args.skip_memory:
        return
    big = [args.shape[0] * 4, *args.shape[1:]]
    with tempfile.TemporaryDirectory() as small_dir, tempfile.TemporaryDirectory() as big_dir:
        rss_small = peak_rss_mb(args.shape, Path(small_dir), args)
        rss_big = peak_rss_mb(big, Path(big_dir), args)
    print(f"peak RSS {args.shape}: {rss_small:.0f} MB; {big} (4x): {rss_big:.0f} MB")
    print(f"peak RSS ratio (4x volume / volume): {rss_big / rss_small:8.3f}   (target <= 1.2)")


if __name__ == "__main__":
    main()
