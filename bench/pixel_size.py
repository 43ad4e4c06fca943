"""Benchmark of predicting at the training pixel size: what the resampling costs next to the network.

A volume of 6 nm pixels goes through a model trained on 4 nm pixels (zoom 1.5: the network computes 2.25x
the volume's pixels). Prints, measured side by side in one run on this machine:
- the bare model on the very model-grid tiles that predict computes (resampled beforehand, in memory);
- the resampling alone: every block's input read, smoothed where needed and interpolated onto the model's
  grid, and its probabilities interpolated back (`unet_core.pixel_size`), no network;
- the pipeline, Zarr to Zarr, at zoom 1.5 and, on the same file with `match_pixel_size` off, at zoom 1.
The resampling's share is resampling / (resampling + model); the pipeline's efficiency is the model's
time over the pipeline's at zoom 1.5.

    python bench/pixel_size.py                  # 8 x 1024 x 1024 at 6 nm, depth 3 width 16, 2 threads
    python bench/pixel_size.py --zoom 0.667     # a 2.67 nm volume: the model grid is coarser
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from unet_core import io
from unet_core.blockwise import ModelHandle
from unet_core.checkpoint import save_checkpoint
from unet_core.inference import resolve_device
from unet_core.model import UNet, UNetConfig
from unet_core.pixel_size import ResampledSource, back_to_input, model_block
from unet_core.predict import PredictOptions, predict_file
from unet_core.tiling import network_input, plan_blocks, read_mirrored

TRAINED_NM = 4.0


def make_inputs(folder: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=args.depth, width=args.width))
    checkpoint = folder / "model.pt"
    state = {"model_config": model.config.to_dict(), "model_state": model.state_dict()}
    state |= {
        "normalization": [0.0, 255.0],
        "voxel_size": [50.0, TRAINED_NM, TRAINED_NM],
        "unit": "nanometer",
    }
    save_checkpoint(checkpoint, state)
    source = folder / "input.ome.zarr"
    pixel = TRAINED_NM * args.zoom
    target = io.create_image(
        zarr.open_group(store=str(source), mode="w", zarr_format=3), "", shape=args.shape, dtype="uint8",
        chunks=args.block, voxel_size=(50.0, pixel, pixel), unit="nanometer",
    )  # fmt: skip
    rng = np.random.default_rng(0)
    for z in range(target.shape[0]):
        target[z] = rng.integers(0, 255, target.shape[1:], dtype=np.uint8)
    return checkpoint, source


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def model_and_resampling(
    checkpoint: Path, source: Path, args: argparse.Namespace
) -> tuple[float, float, float]:
    """Seconds of the bare model on the model-grid tiles of every block, of the resampling alone, and of
    the bare model on the input's own tiles (zoom 1)."""
    device = resolve_device(args.device)
    predictor, _ = ModelHandle.create(checkpoint, device=args.device).load()
    array = io.open_volume(source).array
    grid = ResampledSource(array, (args.zoom, args.zoom))
    blocks = plan_blocks(array.shape, args.block)
    computed = [model_block(b, grid) for b in blocks]
    inputs = [network_input(c.write_roi, args.depth) for c in computed]

    def resample() -> list:
        tiles = [read_mirrored(grid, roi) for roi, _ in inputs]
        for block, done in zip(blocks, computed, strict=True):
            back_to_input(np.zeros(done.write_roi.shape, np.float32), block, done, grid)
        return tiles

    tiles = resample()
    own = [network_input(b.write_roi, args.depth) for b in blocks]
    own_tiles = [read_mirrored(array, roi) for roi, _ in own]
    predictor.block(tiles[0], inputs[0][1], "float32")  # warm-up

    def model(tiles: list, inputs: list) -> None:
        for tile, (_, crop) in zip(tiles, inputs, strict=True):
            predictor.block(tile, crop, "float32")
        if device.type == "cuda":
            torch.cuda.synchronize()

    return timed(lambda: model(tiles, inputs)), timed(resample), timed(lambda: model(own_tiles, own))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[8, 1024, 1024])
    parser.add_argument("--block", type=int, nargs=3, default=[1, 512, 512])
    parser.add_argument("--zoom", type=float, default=1.5, help="input pixel / training pixel")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint, source = make_inputs(folder, args)
        options = PredictOptions(block_shape=tuple(args.block), device=args.device)
        plain = PredictOptions(block_shape=tuple(args.block), device=args.device, match_pixel_size=False)
        predict_file(checkpoint, source, folder / "warmup.ome.zarr", options=options)
        runs = [
            measure(checkpoint, source, folder / str(run), args, options, plain)
            for run in range(args.repeats)
        ]
        model, resampling, own, pipe, flat = (statistics.median(values) for values in zip(*runs, strict=True))
        print(
            f"{args.threads} threads; U-Net depth {args.depth} width {args.width}; volume {args.shape} of "
            f"{TRAINED_NM * args.zoom:g} nm pixels, model trained on {TRAINED_NM:g} nm (zoom {args.zoom:g}); "
            f"blocks {args.block}; medians of {args.repeats} runs"
        )
        print(f"bare model on the model-grid tiles : {model:7.2f} s")
        print(f"resampling alone (in and back)     : {resampling:7.2f} s")
        print(f"resampling's share                 : {resampling / (resampling + model):7.3f}")
        print(f"pipeline at the training pixel size: {pipe:7.2f} s   efficiency {model / pipe:.3f}")
        print(f"bare model on the input's own tiles: {own:7.2f} s")
        print(f"pipeline at the input's own pixels : {flat:7.2f} s   efficiency {own / flat:.3f}")
        print(
            f"zoom {args.zoom:g} over zoom 1: model {model / own:.2f}x, pipeline {pipe / flat:.2f}x the time"
        )


def measure(
    checkpoint: Path,
    source: Path,
    folder: Path,
    args: argparse.Namespace,
    options: PredictOptions,
    plain: PredictOptions,
) -> tuple[float, ...]:
    """One run of each, alternating: on two shared cores one run varies by a third."""
    model, resampling, own = model_and_resampling(checkpoint, source, args)
    pipe = timed(lambda: predict_file(checkpoint, source, folder / "zoomed.ome.zarr", options=options))
    flat = timed(lambda: predict_file(checkpoint, source, folder / "own.ome.zarr", options=plain))
    return model, resampling, own, pipe, flat


if __name__ == "__main__":
    main()
