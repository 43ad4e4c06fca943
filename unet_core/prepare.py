"""Turn an EM stack and its labels (or the built-in synthetic volume) into the canonical training store.

See `unet_core.dataset` for the layout of ``data.ome.zarr``. The conversion streams slabs of slices, so a
stack larger than memory converts with memory bounded by `PrepareConfig.slab_mb`:

1. metadata checks: paths, shapes, dtypes, the split (nothing read yet);
2. a checking pass over raw and labels: NaN/inf, blank raw slices, label values, empty label slices,
   and the class counts that the weight map's class balance needs;
3. the writing pass: raw, cells, instances and weights, slab by slab; the slices of a slab
   are converted on one thread per CPU while the slab before it is written (`_write`).

Every error is raised before step 3, and the store appears atomically (`io.atomic_directory`), so a
failed or killed prepare leaves no store behind.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from scipy import ndimage
from tqdm import tqdm

from . import io
from .data.synthetic import generate_volume
from .data.touching import separated_cells, split_cells
from .data.weights import border_band, class_weights_from_counts, weight_map
from .dataset import Split, TrainingStore
from .parallel import usable_cpus
from .paths import refuse_overwriting_input

log = logging.getLogger(__name__)

LABEL_KINDS = ("binary", "instances")
#: Bytes per pixel of one slice's weight-map temporaries (float64 distances, ids), per worker thread.
SLICE_WORK_BYTES = 64
#: Bytes per pixel of the slab's outputs and their temporaries: cells (uint8), a mask (bool),
#: instances (int32), weights (float32).
OUTPUT_BYTES = 10
#: Slabs in memory at once: the one being converted and the one being written behind it.
SLABS_IN_FLIGHT = 2
#: Blosc filter before zstd, per array, chosen on ISBI slices: bit shuffling packs the 0/255 cells best;
#: plain zstd suits the int32 instances and float32 weights (bit shuffling packed the instances and the
#: weights with the border term worse, the others better only at a higher cost); EM raw barely compresses
#: and bit shuffling makes it worse (byte shuffling leaves uint8 alone).
SHUFFLE = {"raw": "shuffle", "cells": "bitshuffle", "instances": "noshuffle", "weights": "noshuffle"}
#: Pixels per shard (of each array): shards of whole slices, 32 slices of 512 x 512, so that a slab is
#: one file per array instead of one per chunk (a file per chunk cost more CPU time).
SHARD_PIXELS = 32 * 512 * 512
INT32_MAX = np.iinfo(np.int32).max
FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class PrepareConfig:
    """Where the data comes from and how to store it; empty ``raw`` means the synthetic volume.

    Attributes
    ----------
    raw, labels : str
        The stack and its labels, both or neither (see `io.open_volume` for the formats); relative
        paths are resolved against ``data_dir``.
    data_dir : str
        Folder that relative ``raw`` and ``labels`` paths are in (empty: the working directory), so one
        key moves a dataset.
    labels_kind : {"binary", "instances"}
        ``binary``: two values, membranes = ``membrane_value``, cells = the other value.
        ``instances``: integer cell ids, 0 = boundary or background; cells that touch are parted by
        separation borders in the training target (`data.touching`), and evaluation scores cells with the
        Cell Tracking Challenge's SEG. Two folders of 2D files are paired frame by frame (`io.frames`).
    membrane_value : int
        Membrane value of binary labels: 0 for ISBI (255 = cell), 255 (or 1) for the other polarity.
    synthetic_shape, seed : tuple of int, int
        Shape and seed of the built-in synthetic volume.
    train_slices, val_slices, test_slices : (start, stop), optional
        Half-open slice ranges; default: first 80 % train, the rest validation, no test.
    partial_slices : tuple of int
        Slices whose instance labels annotate only some of the cells: never trained on (their unannotated
        cells would be taught as background), scored by SEG only, which scores annotated cells.
    voxel_size : (z, y, x) float, optional
        Voxel size written to the NGFF metadata; default: the input's (OME-Zarr), else 1.
    unit : str
        Unit of ``voxel_size`` (``nanometer``); default: the input's, if any.
    w0, sigma : float
        Border term of the weight map (`unet_core.data.weights`); ``w0 = 0`` keeps only the class
        balance and skips the per-cell distance transforms, by far the slowest part of prepare.
    class_balance : float
        How far the weight map balances the class frequencies, 0 to 1: w_k = (N / (2 N_k)) ** class_balance
        (`data.weights.class_weights`); 1 is the paper's balance, 0 weighs membrane and cell pixels alike.
    chunks : (z, y, x) int
        Chunk shape of every array of the store; the chunks are stored in shards of whole slices, one
        file each (`shard_slices`).
    compression_level : int
        Blosc zstd level of every array, 0 (uncompressed, fastest) to 9 (smallest); the shuffle filter
        before zstd suits each array (`SHUFFLE`). Level 1 packs labels and weights well at several times
        the speed of level 5; EM raw hardly compresses at any level.
    slab_mb : int
        Memory for the slices in flight (raw, labels and all outputs of the slab being converted and of
        the one being written behind it) and, at most half of it, the converting threads' temporaries;
        sets how many slices are converted at once (a multiple of ``chunks[0]``, at least one chunk).
    """

    raw: str = ""
    labels: str = ""
    data_dir: str = ""
    labels_kind: str = "binary"
    membrane_value: int = 0
    synthetic_shape: tuple[int, int, int] = (24, 256, 256)
    seed: int = 0
    train_slices: tuple[int, int] | None = None
    val_slices: tuple[int, int] | None = None
    test_slices: tuple[int, int] | None = None
    partial_slices: tuple[int, ...] = ()
    voxel_size: tuple[float, float, float] | None = None
    unit: str = ""
    w0: float = 10.0
    sigma: float = 5.0
    class_balance: float = 1.0
    chunks: tuple[int, int, int] = (1, 512, 512)
    compression_level: int = 1
    slab_mb: int = 256

    def __post_init__(self) -> None:
        if self.labels_kind not in LABEL_KINDS:
            raise ValueError(f"labels_kind must be one of {LABEL_KINDS}, got {self.labels_kind!r}")
        if bool(self.raw) != bool(self.labels):
            raise ValueError("give both raw and labels (or neither, for the synthetic volume)")
        if self.partial_slices and self.labels_kind != "instances":
            raise ValueError(
                f"partial_slices {list(self.partial_slices)} mark partly annotated cells: they need "
                "labels_kind: instances"
            )
        for name in ("chunks", "synthetic_shape"):
            value = tuple(getattr(self, name))
            if len(value) != 3 or not all(isinstance(v, int) and v >= 1 for v in value):
                raise ValueError(f"{name} must be 3 positive integers (z, y, x), got {value!r}")
        if self.voxel_size is not None and (
            len(self.voxel_size) != 3 or not all(math.isfinite(v) and v > 0 for v in self.voxel_size)
        ):
            raise ValueError(f"voxel_size must be 3 finite numbers > 0 (z, y, x), got {self.voxel_size!r}")
        if not isinstance(self.slab_mb, int) or self.slab_mb < 1:
            raise ValueError(f"slab_mb must be a positive integer (MiB), got {self.slab_mb!r}")
        io.compressor(self.compression_level)  # validates the level
        border_band(w0=self.w0, sigma=self.sigma)  # validates w0 and sigma
        class_weights_from_counts(1, 1, self.class_balance)  # validates the balance

    def path(self, name: str) -> str:
        """``raw`` or ``labels`` resolved against ``data_dir`` (absolute paths stay as they are)."""
        value = getattr(self, name)
        return os.path.join(self.data_dir, value) if value and self.data_dir else value


def make_split(cfg: PrepareConfig, n_slices: int, source: str) -> Split:
    """The configured split, or the first 80% of slices for training and the rest for validation."""
    n_train = max(1, int(round(0.8 * n_slices))) if n_slices > 1 else 1
    train = cfg.train_slices or (0, n_train)
    test = cfg.test_slices or (n_slices, n_slices)
    val = cfg.val_slices or (train[1], test[0] if test[1] > test[0] >= train[1] else n_slices)
    ranges = {"train": tuple(train), "val": tuple(val), "test": tuple(test)}
    given = {"train": cfg.train_slices, "val": cfg.val_slices, "test": cfg.test_slices}

    def named(name: str) -> str:  # a range the user did not set is named as the default it is
        return f"{name}_slices {list(ranges[name])}{'' if given[name] else ' (the default)'}"

    for name, (a, b) in ranges.items():
        if not 0 <= a <= b <= n_slices:
            raise ValueError(
                f"{source}: {named(name)} must satisfy 0 <= start <= stop <= {n_slices} "
                "(the stack's slice count); fix the split in your config"
            )
    if ranges["train"][0] == ranges["train"][1]:
        raise ValueError(f"{source}: {named('train')} is empty; give training at least one slice")
    for z in cfg.partial_slices:  # a partial reference teaches its unannotated cells as background
        if not 0 <= z < n_slices or train[0] <= z < train[1]:
            raise ValueError(
                f"{source}: partial slice {z} must be a slice of the stack outside {named('train')}; "
                "score partly annotated slices, do not train on them: move them to val or test"
            )
    occupied = sorted((a, b, n) for n, (a, b) in ranges.items() if b > a)
    for (_, b1, n1), (a2, _, n2) in zip(occupied, occupied[1:], strict=False):
        if a2 < b1:
            raise ValueError(
                f"{source}: {named(n1)} and {named(n2)} overlap; make the ranges disjoint (set each "
                "range yourself when you move one)"
            )
    return Split(**ranges)


@dataclass(frozen=True)
class _Source:
    """Raw and labels as (Z, Y, X) array-likes, with the names used in messages."""

    raw: io.Volume
    labels: io.Volume
    raw_name: str
    labels_name: str
    frames: tuple[str, ...] = ()  # paired frames: their names, and their label files for messages
    label_files: tuple[str, ...] = ()

    def label_slice(self, z: int) -> str:
        """Where labels' slice ``z`` comes from, for messages."""
        return self.label_files[z] if self.label_files else f"{self.labels_name} slice {z}"


def _open_sources(cfg: PrepareConfig) -> _Source:
    if not cfg.raw:
        raw, labels = generate_volume(tuple(cfg.synthetic_shape), seed=cfg.seed)
        return _Source(io.Volume(raw, "synthetic"), io.Volume(labels, "synthetic"), "synthetic", "synthetic")
    raw_name, labels_name = cfg.path("raw"), cfg.path("labels")
    if cfg.labels_kind == "instances" and io.is_frame_folder(raw_name) and io.is_frame_folder(labels_name):
        pairs = io.open_frame_pairs(raw_name, labels_name)
        frames, files = pairs.names, tuple(map(str, pairs.mask_files))
        raw, labels = pairs.images, pairs.masks
    else:
        raw, labels, frames, files = io.open_volume(raw_name), io.open_volume(labels_name), (), ()
    if raw.shape != labels.shape:
        raise io.VolumeError(
            f"{labels_name}: labels shape {labels.shape} differs from raw {raw_name} shape {raw.shape}; "
            "give labels for exactly the raw slices"
        )
    if 0 in raw.shape:
        raise io.VolumeError(f"{raw_name}: empty stack of shape {raw.shape}; check the export")
    _check_dtype(raw.dtype, raw_name, kinds="iuf", what="raw")
    kinds = "biuf" if cfg.labels_kind == "binary" else "iu"
    _check_dtype(labels.dtype, labels_name, kinds=kinds, what=f"{cfg.labels_kind} labels")
    for volume in (raw, labels):
        _warn_unstored_chunks(volume)
    return _Source(raw, labels, raw_name, labels_name, frames, files)


def _warn_unstored_chunks(volume: io.Volume) -> None:
    """Zarr reads a chunk that is not stored as the fill value: after an incomplete copy that is silent data
    loss, but writers also skip chunks equal to the fill value, so this warns instead of refusing."""
    array = volume.array
    on_disk = isinstance(array, zarr.Array) and isinstance(array.store, zarr.storage.LocalStore)
    if on_disk and array.nchunks_initialized < array.nchunks:  # not a TIFF's zarr view: it lists no keys
        log.warning(
            "%s: %d of %d chunks are not stored and read as %s; if the store was copied or written "
            "incompletely, copy it again",
            volume.path,
            array.nchunks - array.nchunks_initialized,
            array.nchunks,
            array.fill_value,
        )


def _check_dtype(dtype: np.dtype, name: str, *, kinds: str, what: str) -> None:
    """Refuse dtypes outside ``kinds`` (numpy kind codes) and long doubles that Zarr cannot store."""
    if dtype.kind not in kinds or dtype.itemsize > 8:
        allowed = {"b": "bool", "i": "signed integer", "u": "unsigned integer", "f": "float"}
        raise io.VolumeError(
            f"{name}: unsupported dtype {dtype} for {what}; convert to "
            f"{' or '.join(allowed[k] for k in kinds)} (at most 64 bits)"
        )


def _worker_count(plane: int, cfg: PrepareConfig, threads: int | None) -> int:
    """Threads that convert slices: ``threads`` (default one per CPU), as many as half of ``slab_mb``
    holds the slice temporaries of (the other half holds the slabs)."""
    wanted = threads or usable_cpus()
    return max(1, min(wanted, cfg.slab_mb * 2**20 // 2 // (plane * SLICE_WORK_BYTES)))


def shard_slices(shape: tuple[int, int, int], chunks: tuple[int, int, int]) -> int:
    """Slices per shard of every array of the store: whole chunks along z holding about ``SHARD_PIXELS``
    pixels of whole slices, at most the stack. Depends on the shapes only, so the store's files do not
    depend on ``slab_mb`` or the thread count."""
    depth = min(chunks[0], shape[0])
    n = max(1, SHARD_PIXELS // (shape[1] * shape[2]) // depth) * depth
    return min(n, max(depth, shape[0] // depth * depth))


def _slab_slices(shape: tuple[int, int, int], itemsize: int, cfg: PrepareConfig, workers: int) -> int:
    """Slices per slab: ``SLABS_IN_FLIGHT`` slabs and each worker's slice temporaries fill ``slab_mb``,
    with whole shards along z (each shard file written once), else whole chunks (writes never straddle a
    chunk, but each shard file is then rewritten once per slab)."""
    plane = shape[1] * shape[2]
    per_slice = SLABS_IN_FLIGHT * plane * (itemsize + OUTPUT_BYTES)
    room = cfg.slab_mb * 2**20 - workers * plane * SLICE_WORK_BYTES
    depth, shard = min(cfg.chunks[0], shape[0]), shard_slices(shape, cfg.chunks)
    unit = shard if room >= per_slice * shard else depth
    n = max(depth, room // per_slice // unit * unit)
    if room < per_slice * depth:
        log.warning(
            "slab_mb=%d holds less than one chunk of %d slices; converting one chunk at a time",
            cfg.slab_mb,
            depth,
        )
    elif unit < shard:
        log.info(
            "slab_mb=%d holds less than one shard of %d slices: shards are rewritten", cfg.slab_mb, shard
        )
    return int(n)


def _slabs(n_slices: int, step: int, desc: str) -> Iterator[tuple[int, int]]:
    bar = tqdm(total=n_slices, desc=desc, unit="slice", mininterval=2.0)
    for z0 in range(0, n_slices, step):
        z1 = min(z0 + step, n_slices)
        yield z0, z1
        bar.update(z1 - z0)
    bar.close()


@dataclass
class _Counts:
    """What the checking pass learns: class counts (for class weights) and the binary cell value."""

    membrane: int = 0
    cells: int = 0
    cell_value: Any = None


def _check_raw(raw: np.ndarray, z0: int, name: str) -> None:
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        z = z0 + int(np.flatnonzero(~np.isfinite(raw).reshape(len(raw), -1).all(axis=1))[0])
        raise io.VolumeError(f"{name}: slice {z} contains NaN or inf; replace them before preparing")
    flat = raw.reshape(len(raw), -1)
    constant = np.flatnonzero(flat.min(axis=1) == flat.max(axis=1))
    if constant.size:
        z = z0 + int(constant[0])
        raise io.VolumeError(
            f"{name}: slice {z} is constant (every pixel {flat[constant[0], 0]}): a blank or missing "
            "section? remove it (and its label slice) from the stack"
        )


def _check_labels(labels: np.ndarray, z0: int, name: str, cfg: PrepareConfig, counts: _Counts) -> None:
    """Check one slab of labels and add its class counts to ``counts``."""
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise io.VolumeError(f"{name}: labels contain NaN or inf; labels must be finite")
    if cfg.labels_kind == "instances" and (labels.min() < 0 or labels.max() > INT32_MAX):
        raise io.VolumeError(
            f"{name}: instance labels must be cell ids from 0 (boundary) to {INT32_MAX}, found "
            f"{labels.min()} to {labels.max()}; relabel the cells"
        )
    if cfg.labels_kind == "binary":
        cell = labels != cfg.membrane_value
    else:
        cell = np.stack([separated_cells(plane) for plane in labels])  # the training target's cells
    per_slice = np.count_nonzero(cell.reshape(len(cell), -1), axis=1)
    if cfg.labels_kind == "binary":
        _check_cell_value(labels, int(per_slice.sum()), name, cfg, counts)
    if (per_slice == 0).any():
        z = z0 + int(np.flatnonzero(per_slice == 0)[0])
        raise io.VolumeError(
            f"{name}: label slice {z} has no cell pixels (all membrane/background): an unlabelled "
            "section? label it or leave it out of raw and labels"
        )
    counts.cells += int(per_slice.sum())
    counts.membrane += cell.size - int(per_slice.sum())


def _check_cell_value(
    labels: np.ndarray, n_cells: int, name: str, cfg: PrepareConfig, counts: _Counts
) -> None:
    """Binary labels have one value besides the membrane value, the same in every slab: the slab's extreme
    values other than the membrane value, and all ``n_cells`` non-membrane pixels equal to it."""
    values = {labels.min().item(), labels.max().item()} - {cfg.membrane_value}
    values |= set() if counts.cell_value is None else {counts.cell_value}
    if len(values) > 1 or (values and np.count_nonzero(labels == next(iter(values))) < n_cells):
        found = np.unique(labels).tolist()[:10]
        raise io.VolumeError(
            f"{name}: binary labels expected with membrane = {cfg.membrane_value} and one cell value, "
            f"found values {found}; set labels_kind: instances or fix membrane_value"
        )
    counts.cell_value = next(iter(values), counts.cell_value)


def _check_cells(instances: np.ndarray, name: str) -> None:
    """Instance labels of one slice: one id in several parts is a binary mask when it is the only id
    (refused), else kept as one cell, as the reference has it, with a warning."""
    split = split_cells(instances)
    if not split:
        return
    (first, sizes), *_ = split.items()
    if len(split) == 1 and np.unique(instances[instances > 0]).size == 1:
        raise io.VolumeError(
            f"{name}: one label value ({first}) in {len(sizes)} separate regions: a binary mask given as "
            "instances? label each cell with its own id (its connected component), or set labels_kind: "
            "binary for membrane labels"
        )
    log.warning(
        "%s: %s: each kept as one cell, as the reference has it (SEG scores it so); give the parts their "
        "own ids if they are different cells",
        name,
        "; ".join(
            f"cell {cell} is in {len(parts)} parts ({', '.join(map(str, parts))} px)"
            for cell, parts in split.items()
        ),
    )


def _check_content(source: _Source, cfg: PrepareConfig, step: int) -> _Counts:
    """The checking pass: every slab of raw and labels, before anything is written."""
    counts = _Counts()
    for z0, z1 in _slabs(source.raw.shape[0], step, "check"):
        _check_raw(io.read_slices(source.raw, z0, z1), z0, source.raw_name)
        labels = io.read_slices(source.labels, z0, z1)
        _check_labels(labels, z0, source.labels_name, cfg, counts)
        if cfg.labels_kind == "instances":
            for z, plane in enumerate(labels, start=z0):
                _check_cells(plane, source.label_slice(z))
    if counts.membrane == 0:
        raise io.VolumeError(
            f"{source.labels_name}: no membrane pixels (value {cfg.membrane_value}) anywhere; "
            "fix membrane_value (the label value of membranes) or labels_kind"
        )
    if counts.membrane > counts.cells and cfg.labels_kind == "binary":
        log.warning(
            "%s: %.0f %% of pixels are membrane (value %s); EM membranes are usually a minority: is "
            "membrane_value the right polarity?",
            source.labels_name,
            100 * counts.membrane / (counts.membrane + counts.cells),
            cfg.membrane_value,
        )
    return counts


def _convert(
    labels: np.ndarray, cfg: PrepareConfig, balance: tuple[float, float], last_id: int, pool: Executor
) -> tuple[dict[str, np.ndarray], int]:
    """Cells (0/255), int32 instances and weights of a slab, one slice per task on ``pool``; returns them
    and the last instance id so far.

    Instance labels keep their ids; their cells lose the separation borders between touching cells
    (`data.touching`), and so do the ids the weight map is computed from.
    Binary labels get the 4-connected cells of each slice (as `weights.instances_from_binary`), numbered
    on from ``last_id`` so that ids stay unique over the volume. A slice is labelled 1, 2, ... on its own
    (so slices run in parallel) and gets its weights from those ids (the weight map depends on which
    pixels share an id, not on the ids); the offsets follow from the counts once every slice is done.
    """
    binary = cfg.labels_kind == "binary"
    cells = np.empty(labels.shape, np.uint8)
    instances = np.empty(labels.shape, np.int32)
    weights = np.empty(labels.shape, np.float32)

    def convert_slice(z: int) -> int:
        cell = labels[z] != cfg.membrane_value if binary else separated_cells(labels[z])
        np.multiply(cell, np.uint8(255), out=cells[z])
        count = 0
        if binary:
            count = ndimage.label(cell, structure=FOUR_CONNECTED, output=instances[z])
            separated = instances[z]
        else:
            instances[z] = labels[z]  # ids checked to fit int32; kept whole for scoring
            separated = np.where(cell, instances[z], 0)  # the weight map sees the gap between touching cells
        weights[z] = weight_map(separated, w0=cfg.w0, sigma=cfg.sigma, class_weight=balance)
        return count

    counts = np.fromiter(pool.map(convert_slice, range(len(labels))), np.int64, len(labels))
    if binary:
        offsets = (last_id + np.cumsum(counts) - counts).tolist()

        def renumber(z: int) -> None:
            np.add(instances[z], offsets[z], out=instances[z], where=instances[z] > 0)

        list(pool.map(renumber, range(len(labels))))
        last_id += int(counts.sum())
    return {"cells": cells, "instances": instances, "weights": weights}, last_id


def _store(arrays: dict[str, zarr.Array], z0: int, slab: dict[str, np.ndarray]) -> float:
    """Write a slab into every array; returns the seconds it took. Zarr encodes its chunks concurrently."""
    start = time.perf_counter()
    for name, data in slab.items():
        arrays[name][z0 : z0 + len(data)] = data
    return time.perf_counter() - start


class _Timer(Counter):
    """Seconds spent per stage, for the closing log line."""

    def __call__(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        self[stage] += now - start
        return now


def _create_store(
    root: zarr.Group, source: _Source, cfg: PrepareConfig, split: Split, balance: tuple[float, float]
) -> dict[str, zarr.Array]:
    """The store's empty arrays by name, with its record (`TrainingStore.create`)."""
    shape = source.raw.shape
    arrays = TrainingStore.create(
        root,
        raw_dtype=source.raw.dtype.newbyteorder("="),
        shuffle=SHUFFLE,
        source=source.raw_name,
        labels=source.labels_name,
        split=split,
        w0=cfg.w0,
        sigma=cfg.sigma,
        class_weights=balance,
        shape=shape,
        chunks=cfg.chunks,
        voxel_size=cfg.voxel_size or source.raw.voxel_size,
        unit=cfg.unit or source.raw.unit,
        compression_level=cfg.compression_level,
        shard_slices=shard_slices(shape, cfg.chunks),
        labels_kind=cfg.labels_kind,
        partial_slices=cfg.partial_slices,
        frames=source.frames,
        flat_keys=True,  # c.z.0.0, no folders c/z/0 per shard: folders cost up to a fifth of write CPU
    )
    # Store every chunk, unlike zarr by default: no chunk-wide compare with the fill value.
    return {name: array.with_config({"write_empty_chunks": True}) for name, array in arrays.items()}


def _write(
    arrays: dict[str, zarr.Array],
    source: _Source,
    cfg: PrepareConfig,
    step: int,
    balance: tuple[float, float],
    workers: int,
) -> None:
    """The writing pass: read and convert slab k + 1 while slab k is written in the background; waiting
    for that write before handing over the next keeps ``SLABS_IN_FLIGHT`` = 2 slabs in memory."""
    shape, raw_dtype = source.raw.shape, source.raw.dtype.newbyteorder("=")
    timer, last_id, writing = _Timer(), 0, None

    def wait_for_write() -> None:  # raises the write's error, if any
        start = time.perf_counter()
        if writing is not None:
            timer["write (behind)"] += writing.result()
        timer("wait for write", start)

    with ThreadPoolExecutor(workers) as pool, ThreadPoolExecutor(1) as writer:
        for z0, z1 in _slabs(shape[0], step, "convert"):
            start = time.perf_counter()
            raw = np.asarray(io.read_slices(source.raw, z0, z1), dtype=raw_dtype)
            labels = io.read_slices(source.labels, z0, z1)
            start = timer("read", start)
            outputs, last_id = _convert(labels, cfg, balance, last_id, pool)
            del labels  # not stored: free it before the next slab is read
            timer("convert", start)
            wait_for_write()
            writing = writer.submit(_store, arrays, z0, {"raw": raw, **outputs})
            del raw, outputs  # the writer holds the only references: freed once written
        wait_for_write()
    log.info("convert time per stage (s): %s", {k: round(v, 2) for k, v in timer.items()})


def prepare(out_path: str | os.PathLike, cfg: PrepareConfig, *, threads: int | None = None) -> Split:
    """Write ``data.ome.zarr`` (raw, binary labels, instances, weight maps, split); returns the split.

    Parameters
    ----------
    out_path : str or path-like
        The store to write; an existing one is replaced only once the new one is complete.
    cfg : PrepareConfig
        Inputs, split and storage options.
    threads : int, optional
        Threads converting slices (default: every CPU this process may use); the store is the same.

    Returns
    -------
    Split
        The train/val/test slice ranges recorded in the store (`TrainingStore.split`).

    Raises
    ------
    io.VolumeError
        A path, shape, dtype or value problem of raw or labels, naming the file (and slice) and the fix.
    ValueError
        A split that overlaps or runs past the stack, or ``out_path`` that would overwrite an input.
    """
    started = time.perf_counter()
    if not cfg.raw:  # the synthetic labels are ISBI-style whatever the config says about user labels
        cfg = dataclasses.replace(cfg, labels_kind="binary", membrane_value=0)
    if cfg.raw:
        refuse_overwriting_input(out_path, cfg.path("raw"), cfg.path("labels"))
    source = _open_sources(cfg)
    shape = source.raw.shape
    split = make_split(cfg, shape[0], source.raw_name)
    workers = _worker_count(shape[1] * shape[2], cfg, threads)
    step = _slab_slices(shape, source.raw.dtype.itemsize + source.labels.dtype.itemsize, cfg, workers)
    log.info(
        "preparing %s: raw %s %s, %d slices per slab, %d threads",
        source.raw_name,
        shape,
        source.raw.dtype,
        step,
        workers,
    )
    counts = _check_content(source, cfg, step)
    log.info(
        "checked %s and %s in %.1f s", source.raw_name, source.labels_name, time.perf_counter() - started
    )
    balance = class_weights_from_counts(counts.membrane, counts.cells, cfg.class_balance)
    with io.atomic_directory(out_path) as tmp:
        root = zarr.open_group(store=str(tmp), mode="w-", zarr_format=3)  # w- keeps the locked folder
        _write(_create_store(root, source, cfg, split, balance), source, cfg, step, balance, workers)
    seconds = time.perf_counter() - started
    megabytes = math.prod(shape) * source.raw.dtype.itemsize / 1e6
    log.info(
        "prepared %s in %.1f s (%.1f MB/s of raw), split %s",
        out_path,
        seconds,
        megabytes / seconds,
        split.to_dict(),
    )
    return split
