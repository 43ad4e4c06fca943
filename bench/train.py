"""Benchmark of the training loop: tiles/s with data loading and augmentation vs the bare step.

Both use the same model, tile size and batch, measured one after the other in this run:
- bare step: forward, weighted loss, backward, optimiser step on tensors made beforehand;
- full loop: tiles sampled from a prepared store, augmented (elastic, rotation, flips, gray values) in
  the loader (worker processes with --workers > 0) and delivered by `training.TileBatches` exactly as
  `Trainer.fit` gets them, then the same step;
- with --contended: the bare step again while --workers processes augment tiles without pause (the loader
  workers' CPU load without their data), which tells a host slowed by busy CPUs (shared cores, memory
  bandwidth) from the cost of moving tiles between processes when the full loop falls short;
- the bare step in float32 and NCHW, the baseline of bf16 autocast and channels_last (on a CPU with
  neither AMX units nor AVX512-BF16, where bf16 does not apply, the ratio is that of the layout alone).

    python bench/train.py                      # CPU: depth 3, width 16, 188 tiles
    python bench/train.py --batch 2 --norm batch --steps 200   # config/isbi2012_cpu.yaml's network
    python bench/train.py --depth 4 --width 64 --tile 572 --workers 8   # the paper's setup (GPU)
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from unet_core.model import native_bf16
from unet_core.prepare import PrepareConfig, prepare
from unet_core.train import TrainConfig, Trainer, flushed_denormals
from unet_core.training import build_trainer


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


def _augment_until(stop, dataset) -> None:
    k = 0
    while not stop.is_set():
        dataset[k % len(dataset)]
        k += 1


def timed_contended_steps(trainer: Trainer, batches, n: int, processes: int) -> float:
    """`timed_steps` while ``processes`` forked processes augment the trainer's tiles without pause."""
    context = multiprocessing.get_context("fork")  # as the loader's workers: they never touch the GPU
    stop = context.Event()
    dataset = trainer.batches.dataset
    busy = [context.Process(target=_augment_until, args=(stop, dataset)) for _ in range(processes)]
    for process in busy:
        process.start()
    try:
        return timed_steps(trainer, batches, n)
    finally:
        stop.set()
        for process in busy:
            process.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--tile", type=int, default=188)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--norm", default="none", choices=["none", "batch", "group"])
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--contended", action="store_true", help="also the bare step beside busy workers")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "data.ome.zarr"
        prepare(store, PrepareConfig(synthetic_shape=(8, 512, 512), train_slices=(0, 6), val_slices=(6, 8)))
        cfg = TrainConfig(
            depth=args.depth, width=args.width, tile_size=args.tile, batch_size=args.batch,
            iterations=args.steps + 1, num_workers=args.workers, optimizer="sgd", norm=args.norm,
        )  # fmt: skip
        trainer = build_trainer(store, Path(tmp) / "model", cfg)
        trainer.model.train()
        with flushed_denormals():  # as in Trainer.fit
            batches = trainer.batches(0)  # the training loop's own batches
            first = next(batches)  # also the pre-made batch of the bare steps (no second loader)
            full = timed_steps(trainer, itertools.chain([first], batches), args.steps)
            batches.close()  # stops the loader workers: they would take CPU from the bare steps
            bare = timed_steps(trainer, [first] * (args.steps + 1), args.steps)
            if args.contended:
                contended = timed_contended_steps(
                    trainer, [first] * (args.steps + 1), args.steps, args.workers
                )
            # The baseline: float32 in NCHW, the CPU's only path before bf16 and channels_last applied there.
            trainer.autocast = nullcontext()
            trainer.model.to(memory_format=torch.contiguous_format)
            plain = tuple(tensor.contiguous() for tensor in first)
            baseline = timed_steps(trainer, [plain] * (args.steps + 1), args.steps)
    device = torch.cuda.get_device_name() if trainer.device.type == "cuda" else f"CPU, {args.threads} threads"
    tiles = args.steps * args.batch
    print(
        f"device: {device}; depth {args.depth}, width {args.width}, norm {args.norm}, tile {args.tile},"
        f" batch {args.batch}"
    )
    print(f"bare step on pre-made tensors : {tiles / bare:8.2f} tiles/s")
    print(f"full loop (load + augment)    : {tiles / full:8.2f} tiles/s  ({args.workers} loader workers)")
    print(f"ratio full / bare             : {bare / full:8.3f}   (target >= 0.9)")
    precision = "bf16" if native_bf16(trainer.device) else "float32"
    print(f"bare step, float32 NCHW       : {tiles / baseline:8.2f} tiles/s")
    print(f"ratio bare ({precision}, NHWC) / float32 NCHW: {baseline / bare:6.3f}")
    if args.contended:
        busy = f"{args.workers} processes augmenting"
        print(f"bare step, CPUs busy          : {tiles / contended:8.2f} tiles/s  ({busy})")
        print(
            f"ratio busy / bare             : {bare / contended:8.3f}   (1: the load does not slow the host)"
        )


if __name__ == "__main__":
    main()
