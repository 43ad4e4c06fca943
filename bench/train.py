"""Benchmark of the training loop: tiles/s with data loading and augmentation vs the bare step.

Both use the same model, tile size and batch, measured one after the other in this run:
- bare step: forward, weighted loss, backward, optimiser step on tensors made beforehand;
- full loop: tiles sampled from a prepared store, augmented (elastic, rotation, flips, gray values) in
  the loader (worker processes with --workers > 0) and delivered by `Trainer.batches` exactly as
  `Trainer.fit` gets them, then the same step.

    python bench/train.py                      # CPU: depth 3, width 16, 188 tiles
    python bench/train.py --depth 4 --width 64 --tile 572 --workers 8   # the paper's setup (GPU)
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import torch

from unet_core.prepare import PrepareConfig, prepare
from unet_core.train import TrainConfig, Trainer, flushed_denormals


def timed_steps(trainer: Trainer, batches, n: int) -> float:
    """Seconds for ``n`` steps over ``batches`` (after one warm-up step)."""
    iterator = iter(batches)
    trainer.step(*next(iterator))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        trainer.step(*next(iterator))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--tile", type=int, default=188)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "data.ome.zarr"
        prepare(store, PrepareConfig(synthetic_shape=(8, 512, 512), train_slices=(0, 6), val_slices=(6, 8)))
        cfg = TrainConfig(
            depth=args.depth, width=args.width, tile_size=args.tile, batch_size=args.batch,
            iterations=args.steps + 1, num_workers=args.workers, optimizer="sgd",
        )  # fmt: skip
        trainer = Trainer(store, Path(tmp) / "model", cfg)
        trainer.model.train()
        with flushed_denormals():  # as in Trainer.fit
            batches = trainer.batches()  # the training loop's own batches
            first = next(batches)  # also the pre-made batch of the bare steps (no second loader)
            full = timed_steps(trainer, itertools.chain([first], batches), args.steps)
            batches.close()  # stops the loader workers: they would take CPU from the bare steps
            bare = timed_steps(trainer, [first] * (args.steps + 1), args.steps)
    device = torch.cuda.get_device_name() if trainer.device.type == "cuda" else f"CPU, {args.threads} threads"
    tiles = args.steps * args.batch
    print(f"device: {device}; depth {args.depth}, width {args.width}, tile {args.tile}, batch {args.batch}")
    print(f"bare step on pre-made tensors : {tiles / bare:8.2f} tiles/s")
    print(f"full loop (load + augment)    : {tiles / full:8.2f} tiles/s  ({args.workers} loader workers)")
    print(f"ratio full / bare             : {bare / full:8.3f}   (target >= 0.9)")


if __name__ == "__main__":
    main()
