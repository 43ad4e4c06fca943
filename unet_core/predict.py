"""``unet-core predict``: cell-interior probability of whole volumes into OME-Zarr, resumable and sharded.

Output chunks are the unit of work: one dask graph per run (or shard) holds one task per chunk still to
do, the block task of `unet_core.blockwise` (the one `predict_dask` is made of) followed by its write and
its done-marker in a work store beside the output (`PredictionStore`). A killed run, rerun, computes only
the chunks without a marker; the output appears, renamed into place, once every chunk is written. The
graph runs on this process's threads or on a dask.distributed cluster (``PredictOptions.scheduler``).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from tqdm import tqdm

from . import io
from .blockwise import ModelHandle, VolumeReference, block_tasks, model_options, run_graph
from .model import Ensemble, UNet
from .paths import refuse_overwriting_input
from .pixel_size import ResampledSource, zoom_for
from .tiling import (
    Block,
    block_side_for_overhead,
    halo_overhead,
    plan_blocks,
)

log = logging.getLogger(__name__)

OUTPUT_DTYPES = ("uint8", "float16", "float32")
#: Input voxels computed per output voxel above which predict suggests larger blocks.
HALO_LIMIT = 1.5
# Probabilities hardly compress, and level 5 cost 5x the time for nothing: on an ISBI map (uint8, 512 x 512
# chunks) Blosc zstd level 5 packed 1.52x in 5.2 ms per chunk, level 1 1.51x in 1.0 ms.
PROBABILITY_COMPRESSION_LEVEL = 1


@dataclass(frozen=True)
class PredictOptions:
    """How to run inference; ``block_shape`` is also the output's chunk shape.

    Attributes
    ----------
    block_shape : (z, y, x) int
        Output block predicted at once and chunk shape of the output; the network reads it with its
        halo. The paper's depth-4 net wants blocks of 848+ pixels (a warning names the size when the halo
        costs more than 1.5x).
    output_dtype : {"uint8", "float16", "float32"}
        Type of the stored probabilities; uint8 maps [0, 1] to 0-255.
    tta : bool
        Test-time augmentation: the mean of the predictions of the 8 flips and rotations of each block.
    device : str
        ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:<index>``.
    bf16 : bool
        bfloat16 autocast where the hardware computes it: CUDA GPUs and CPUs with AMX units or
        AVX512-BF16 (`model.native_bf16`); other CPUs compute in float32, where bfloat16 is emulated.
    channels_last : bool
        NHWC memory layout: faster convolutions on tensor cores and in oneDNN's CPU kernels.
    compile : bool
        torch.compile the network (pays off on long runs; border blocks of other shapes recompile).
    prefetch : int
        Blocks read ahead while one is computed and two are written (threads of this process), >= 1.
    scheduler : str
        A running dask.distributed cluster to predict on: its scheduler's address (tcp://host:8786) or
        scheduler file; empty: threads of this process. The output is the same either way.
    match_pixel_size : bool
        Predict a volume whose pixel size differs from the training data's on the training pixel grid,
        resampled in Y and X, and resample the probabilities back (`unet_core.pixel_size`). Needs both
        pixel sizes with their units; otherwise the volume is predicted on its own grid.
    """

    block_shape: tuple[int, int, int] = (1, 512, 512)
    output_dtype: str = "uint8"
    tta: bool = False
    device: str = "auto"
    bf16: bool = True
    channels_last: bool = True
    compile: bool = False
    prefetch: int = 2
    scheduler: str = ""
    match_pixel_size: bool = True

    def __post_init__(self) -> None:
        if self.prefetch < 1:
            raise ValueError(f"prefetch must be >= 1 block, got {self.prefetch}")
        if self.output_dtype not in OUTPUT_DTYPES:
            raise ValueError(f"output_dtype must be one of {OUTPUT_DTYPES}, got {self.output_dtype!r}")
        if len(self.block_shape) != 3 or min(self.block_shape) < 1:
            raise ValueError(f"block_shape must be 3 positive ints (z, y, x), got {self.block_shape}")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError as err:
        raise ValueError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from err
    if not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= I < N")
    return index, count


def shard_blocks(blocks: list[Block], shard: tuple[int, int]) -> list[Block]:
    """The ``i``-th of ``n`` contiguous, disjoint runs of blocks (contiguous runs share halo reads)."""
    index, count = shard
    return blocks[len(blocks) * index // count : len(blocks) * (index + 1) // count]


def fingerprint(
    model: UNet | Ensemble,
    normalization: tuple[float, float],
    volume: io.Volume,
    options: PredictOptions,
    device: torch.device,
    zoom: Sequence[float] | None = None,
) -> str:
    """Identity of everything that decides the output's values: a resumed run may reuse chunks only when
    it matches (another model or other options invalidate old chunks instead of mixing them). The model
    counts by its weights, not its file, whose training log differs between otherwise equal runs."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    identity = {
        "model": model.config.to_dict(),
        "normalization": normalization,
        "input": os.path.abspath(volume.path),
        "input_files": _modification_stamp(volume.path),
        "shape": volume.shape,
        "dtype": str(volume.dtype),
        "metadata": (volume.voxel_size, volume.unit),  # written when the work store is created
        "options": dataclasses.asdict(options) | {"device": device.type, "prefetch": None, "scheduler": None},
        "zoom": zoom,  # the training pixel size is the checkpoints', not the weights'
    }
    digest.update(json.dumps(identity, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _modification_stamp(volume_path: str) -> list[tuple[str, int, int]]:
    """Name, size and modification time of the input file, or of a folder and its metadata files (a Zarr
    store) or its slices: a volume written anew at the same path makes the old chunks stale. (Chunks of a
    Zarr store rewritten in place leave its metadata alone and go unnoticed.)"""
    hdf5 = io.HDF5_PATH.match(volume_path)
    root = Path(hdf5["file"] if hdf5 else volume_path)
    entries = [root]
    if root.is_dir():
        metadata = [root / level / name for level in ("", "0") for name in (*io.ZARR_MARKERS, ".zattrs")]
        entries += [p for p in metadata if p.exists()] or sorted(root.iterdir())
    stats = [(os.fspath(p), p.stat()) for p in entries]
    return [(name, stat.st_size, stat.st_mtime_ns) for name, stat in stats]


class PredictionStore:
    """The resumable work store behind one output OME-Zarr.

    Shards write disjoint chunks into ``.<name>.work`` beside the output and drop an empty marker file per
    chunk in ``.done/`` only after the chunk is stored (zarr writes each chunk file atomically). A killed
    shard re-run skips marked chunks; `finish` checks every chunk is marked and renames the store into
    place, so the output path only ever holds a complete prediction.
    """

    def __init__(self, output_path: str | Path) -> None:
        self.output = Path(output_path)
        self.work = self.output.parent / f".{self.output.name}.work"
        self.done = self.work / ".done"
        self.complete = False  # every chunk written: `finish` began, and may have removed the markers

    def open(self, *, volume: io.Volume, options: PredictOptions, key: str, n_blocks: int) -> zarr.Array:
        """The work array, created afresh unless an earlier run with the same fingerprint left one."""
        self.output.parent.mkdir(parents=True, exist_ok=True)
        with open(self.output.parent / f".{self.output.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # shards starting together create the store once
            io.sweep_leftovers(self.work)  # a stale store whose deletion was killed
            if self.work.exists():
                attrs = _work_attributes(self.work)
                if attrs.get("fingerprint") == key:
                    self.complete = attrs.get("complete", False)
                    return zarr.open_group(store=str(self.work), mode="r+")["0"]
                log.warning(
                    "%s belongs to another model or options, or is damaged: starting afresh", self.work
                )
                io.discard(self.work)
            root = zarr.open_group(store=str(self.work), mode="w", zarr_format=3)
            self.done.mkdir()
            target = io.create_image(
                root,
                "",
                shape=volume.shape,
                dtype=options.output_dtype,
                chunks=options.block_shape,
                voxel_size=volume.voxel_size,
                unit=volume.unit,
                compression_level=PROBABILITY_COMPRESSION_LEVEL,
            )
            root.attrs["unet_core"] = {
                "content": "probability of cell interior",
                "fingerprint": key,
                "chunks_total": n_blocks,
            }
            return target

    def is_done(self, block: Block) -> bool:
        return self.complete or (self.done / str(block.block_id)).exists()

    def mark_done(self, block: Block) -> None:
        (self.done / str(block.block_id)).touch()

    def finish(self) -> None:
        """Check that every chunk is written, then move the store to the output path."""
        attrs = _work_attributes(self.work) if self.work.exists() else {}
        if not attrs:
            raise ValueError(f"{self.work}: no prediction in progress; run the predict shards first")
        root = zarr.open_group(store=str(self.work), mode="r+")
        if not attrs.get("complete") and "fingerprint" in attrs:  # without: killed just before the rename
            total = attrs["chunks_total"]
            missing = sorted(set(range(total)) - {int(p.name) for p in self.done.iterdir()})
            if missing:
                raise ValueError(
                    f"{self.output}: {len(missing)} of {total} chunks are not written yet (block ids "
                    f"{missing[:10]}...); run the remaining shards, then gather again"
                )
            # Recorded before the markers go: a run killed from here on finds the store complete.
            root.attrs["unet_core"] = attrs | {"complete": True}
        shutil.rmtree(self.done, ignore_errors=True)
        for leftover in self.work.rglob("*.partial"):  # zarr's temp file of a chunk write that was killed
            leftover.unlink()
        # The output records what it holds, not how it was made (that is in the work store and the logs):
        # equal predictions are equal bytes, wherever and however they ran.
        root.attrs["unet_core"] = {"content": "probability of cell interior"}
        io.move_into_place(self.work, self.output)  # a previous prediction stays readable until replaced


def _work_attributes(work: Path) -> dict:
    """The work store's own record; empty when a kill left the folder without its root metadata (while it
    was being created or deleted)."""
    try:
        return dict(zarr.open_group(store=str(work), mode="r").attrs).get("unet_core", {})
    except zarr.errors.GroupNotFoundError:
        return {}


def predict_file(
    model_path: str | Path | Sequence[str | Path],
    input_path: str | Path,
    output_path: str | Path,
    *,
    options: PredictOptions,
    shard: tuple[int, int] | None = None,
    voxel_size: Sequence[float] | None = None,
    unit: str | None = None,
) -> float:
    """Predict a volume into an OME-Zarr of cell probability; returns output voxels/s.

    The output records ``voxel_size`` and ``unit`` where given (a sheet's column for a file that lacks
    them), else the input's.

    Without ``shard`` the whole volume is predicted and the output appears when complete. With
    ``shard=(i, n)`` only that shard's chunks are written into the work store; `gather_prediction`
    then publishes the output. Either way a re-run after a kill continues with the missing chunks.
    Several checkpoints predict as an `Ensemble`: the mean of their probabilities.
    """
    handle = ModelHandle.create(model_path, **model_options(options))
    predictor, _ = handle.load()
    volume = with_metadata(io.open_volume(input_path), voxel_size, unit)
    io.check_real(volume, "input")
    refuse_overwriting_input(output_path, input_path)
    if Path(output_path).exists() and not Path(output_path).is_dir():  # found now, not after the work
        raise ValueError(f"{output_path}: a file, not an OME-Zarr folder; remove it or choose another output")
    blocks = plan_blocks(volume.shape, options.block_shape)
    _warn_if_halo_dominates(options.block_shape, volume.shape, predictor.depth)
    _warn_if_blocks_change_the_output(predictor.model, options.block_shape, volume.shape, model_path)
    zoom = zoom_for(handle.checkpoints, volume) if options.match_pixel_size else None
    source = VolumeReference(os.fspath(input_path), volume)
    store = PredictionStore(output_path)
    key = fingerprint(
        predictor.model, (predictor.low, predictor.high), volume, options, predictor.device, zoom
    )
    target = store.open(volume=volume, options=options, key=key, n_blocks=len(blocks))
    todo = [b for b in (shard_blocks(blocks, shard) if shard else blocks) if not store.is_done(b)]
    log.info(
        "predicting %s %s: %d of %d chunks to do on %s",
        input_path,
        volume.shape,
        len(todo),
        len(blocks),
        predictor.device,
    )
    start = time.perf_counter()
    write_blocks(
        handle,
        source if zoom is None else ResampledSource(source, zoom),
        todo,
        ChunkWriter(target, store),
        options=options,
        depth=predictor.depth,
        name=str(input_path),
        key=key,
    )
    rate = sum(math.prod(b.write_roi.shape) for b in todo) / max(time.perf_counter() - start, 1e-9)
    if shard is None:
        store.finish()
    log.info("wrote %s at %.2f Mvox/s", output_path, rate / 1e6)
    return rate


def with_metadata(volume: io.Volume, voxel_size: Sequence[float] | None, unit: str | None) -> io.Volume:
    """``volume`` with ``voxel_size`` and ``unit`` where given (a sheet column for a file without them)."""
    if voxel_size is None and unit is None:
        return volume
    voxel_size = tuple(float(v) for v in voxel_size) if voxel_size is not None else volume.voxel_size
    if len(voxel_size) != 3 or not all(v > 0 for v in voxel_size):
        raise ValueError(f"voxel_size must be 3 positive numbers (z, y, x), got {voxel_size}")
    return dataclasses.replace(volume, voxel_size=voxel_size, unit=unit or volume.unit)


@dataclass(frozen=True)
class ChunkWriter:
    """Stores a computed block into the work store and marks it done: the last step of a block task."""

    target: zarr.Array
    store: PredictionStore

    def __call__(self, block: Block, values: np.ndarray) -> None:
        self.target[block.write_roi.to_slices()] = values
        self.store.mark_done(block)


def write_blocks(
    handle: ModelHandle,
    source: Any,
    blocks: Sequence[Block],
    writer: Callable[[Block, np.ndarray], None],
    *,
    options: PredictOptions,
    depth: int,
    name: str,
    key: str,
) -> None:
    """Predict ``blocks`` of ``source`` and hand each to ``writer``: one dask graph, one task per block
    (`blockwise.block_tasks`, the tasks `predict_dask` is made of, each followed by its write), run on
    ``options.scheduler`` or on this process's threads: ``options.prefetch`` blocks read ahead while one
    is computed and two are written (as many threads as the readers and writers around the model before)."""
    graph, tasks, _ = block_tasks(
        handle, source, blocks, dtype=options.output_dtype, name=name, depth=depth, source_key=f"source-{key}"
    )
    writes = {(f"write-{key}", b.block_id): (writer, b, tasks[b.block_id]) for b in blocks}
    graph.update(writes)
    with tqdm(total=len(blocks), unit="chunk", mininterval=2.0, desc="predict") as bar:
        run_graph(
            graph,
            list(writes),
            scheduler=options.scheduler,
            threads=options.prefetch + 3,
            on_done=lambda: bar.update(1),
        )


def _warn_if_halo_dominates(block_shape: Sequence[int], shape: Sequence[int], depth: int) -> None:
    """Blocks smaller than the slices yet not much larger than the network's context recompute their halo
    more than they compute output (the paper's depth-4 net needs blocks of about 1000 pixels)."""
    block_yx = [min(b, s) for b, s in zip(block_shape[1:], shape[1:], strict=True)]
    overhead = halo_overhead(block_yx, depth)
    if overhead > HALO_LIMIT and any(b < s for b, s in zip(block_yx, shape[1:], strict=True)):
        log.warning(
            "blocks of %s pixels compute %.2f input voxels per output voxel with a depth-%d U-Net; "
            "block_shape (1, %d, %d) or larger keeps that <= %.1f",
            tuple(block_yx), overhead, depth, *[block_side_for_overhead(depth, HALO_LIMIT)] * 2, HALO_LIMIT,
        )  # fmt: skip


def _warn_if_blocks_change_the_output(
    model: torch.nn.Module, block_shape: Sequence[int], shape: Sequence[int], model_path: Any
) -> None:
    """GroupNorm normalises by each block's own statistics, so a block's output depends on the block:
    smaller blocks than the slices show seams at their borders (README: group normalisation)."""
    group_norm = any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    if group_norm and any(b < s for b, s in zip(block_shape[1:], shape[1:], strict=True)):
        log.warning(
            "%s: the model uses group normalisation, whose output changes with the block: blocks of %s "
            "pixels will show seams in slices of %s; predict whole slices (block_shape (1, %d, %d)) or "
            "train with norm: batch",
            model_path, tuple(block_shape[1:]), tuple(shape[1:]), *shape[1:],
        )  # fmt: skip


def shard_resources(
    input_path: str | Path,
    *,
    shards: int,
    block_shape: tuple[int, int, int],
    mvox_per_minute: float,
    attempt: int = 1,
    models: Sequence[str | Path] = (),
    voxel_size: Sequence[float] | None = None,
    unit: str | None = None,
    match_pixel_size: bool = True,
) -> dict[str, int]:
    """Scheduler requests of one predict shard: runtime scales with the voxels the network computes for
    the shard (the volume's, times the zoom's area where ``models`` were trained at another pixel size:
    2.25x for a 6 nm volume and a 4 nm model), memory with the block size (blocks stream, so the
    volume's size does not matter); both grow with the retry attempt."""
    volume = with_metadata(io.open_volume(input_path), voxel_size, unit)
    zoom = zoom_for(models, volume, quiet=True) if match_pixel_size and models else None
    voxels = float(np.prod(volume.shape)) * (math.prod(zoom) if zoom else 1.0) / shards
    block_mb = float(np.prod(block_shape)) * 4 * 16 / 1e6  # input, halo, probabilities, prefetch queue
    return {
        "runtime": int(attempt * (15 + 2 * voxels / 1e6 / mvox_per_minute)),
        "mem_mb": int(attempt * (4000 + block_mb)),
    }


def gather_prediction(output_path: str | Path) -> None:
    """Publish a sharded prediction once every shard has written its chunks."""
    PredictionStore(output_path).finish()
