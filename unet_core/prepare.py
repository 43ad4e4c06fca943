"""Turn an EM stack and its labels (or the built-in synthetic volume) into the canonical training store.

See `unet_core.dataset` for the layout of ``data.ome.zarr``. The conversion streams slabs of slices, so a
stack larger than memory converts with memory bounded by `PrepareConfig.slab_mb`:

1. metadata checks: paths, shapes, dtypes, the split (nothing read yet);
2. a checking pass over raw and labels: NaN/inf, blank raw slices, label values, empty label slices,
   and the class counts that the weight map's class balance needs;
3. the writing pass: raw, labels/cells, labels/instances and weights, slab by slab.

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
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from scipy import ndimage
from tqdm import tqdm

from . import io
from .data.synthetic import generate_volume
from .data.weights import border_band, class_weights_from_counts, weight_map
from .dataset import Split
from .paths import refuse_overwriting_input

log = logging.getLogger(__name__)

LABEL_KINDS = ("binary", "instances")
#: Bytes per pixel of one slice's weight-map temporaries (float64 distances, ids), beside the slab.
SLICE_WORK_BYTES = 64
#: Bytes per pixel of the slab's outputs and their temporaries: cells (uint8), a mask (bool),
#: instances (int32), weights (float32).
OUTPUT_BYTES = 10
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
        ``instances``: integer cell ids, 0 = boundary or background.
    membrane_value : int
        Membrane value of binary labels: 0 for ISBI (255 = cell), 255 (or 1) for the other polarity.
    synthetic_shape, seed : tuple of int, int
        Shape and seed of the built-in synthetic volume.
    train_slices, val_slices, test_slices : (start, stop), optional
        Half-open slice ranges; default: first 80 % train, the rest validation, no test.
    voxel_size : (z, y, x) float, optional
        Voxel size written to the NGFF metadata; default: the input's (OME-Zarr), else 1.
    unit : str
        Unit of ``voxel_size`` (``nanometer``); default: the input's, if any.
    w0, sigma : float
        Border term of the weight map (`unet_core.data.weights`); ``w0 = 0`` keeps only the class
        balance and skips the per-cell distance transforms, by far the slowest part of prepare.
    chunks : (z, y, x) int
        Chunk shape of every array of the store.
    compression_level : int
        Blosc zstd level, 0 (uncompressed, fastest) to 9 (smallest). Level 1 compresses labels and
        weights about as well as 5 (20x or more) at 3-4x the speed.
    slab_mb : int
        Memory for one slab of slices in flight (raw, labels and all outputs); sets how many slices are
        converted at once (a multiple of ``chunks[0]``, at least one chunk).
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
    voxel_size: tuple[float, float, float] | None = None
    unit: str = ""
    w0: float = 10.0
    sigma: float = 5.0
    chunks: tuple[int, int, int] = (1, 512, 512)
    compression_level: int = 1
    slab_mb: int = 256

    def __post_init__(self) -> None:
        if self.labels_kind not in LABEL_KINDS:
            raise ValueError(f"labels_kind must be one of {LABEL_KINDS}, got {self.labels_kind!r}")
        if bool(self.raw) != bool(self.labels):
            raise ValueError("give both raw and labels (or neither, for the synthetic volume)")
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
    for name, (a, b) in ranges.items():
        if not 0 <= a <= b <= n_slices:
            raise ValueError(
                f"{source}: {name}_slices {[a, b]} must satisfy 0 <= start <= stop <= {n_slices} "
                "(the stack's slice count); fix the split in your config"
            )
    occupied = sorted((a, b, n) for n, (a, b) in ranges.items() if b > a)
    for (_, b1, n1), (a2, _, n2) in zip(occupied, occupied[1:], strict=False):
        if a2 < b1:
            raise ValueError(f"{source}: {n1}_slices and {n2}_slices overlap; make the ranges disjoint")
    return Split(**ranges)


@dataclass(frozen=True)
class _Source:
    """Raw and labels as (Z, Y, X) array-likes, with the names used in messages."""

    raw: io.Volume
    labels: io.Volume
    raw_name: str
    labels_name: str


def _open_sources(cfg: PrepareConfig) -> _Source:
    if not cfg.raw:
        raw, labels = generate_volume(tuple(cfg.synthetic_shape), seed=cfg.seed)
        return _Source(io.Volume(raw, "synthetic"), io.Volume(labels, "synthetic"), "synthetic", "synthetic")
    raw_name, labels_name = cfg.path("raw"), cfg.path("labels")
    raw, labels = io.open_volume(raw_name), io.open_volume(labels_name)
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
    return _Source(raw, labels, raw_name, labels_name)


def _warn_unstored_chunks(volume: io.Volume) -> None:
    """Zarr reads a chunk that is not stored as the fill value: after an incomplete copy that is silent data
    loss, but writers also skip chunks equal to the fill value, so this warns instead of refusing."""
    array = volume.array
    if isinstance(array, zarr.Array) and array.nchunks_initialized < array.nchunks:
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


def _slab_slices(shape: tuple[int, int, int], itemsize: int, cfg: PrepareConfig) -> int:
    """Slices per slab: fill ``slab_mb`` with whole chunks along z (writes never straddle a chunk)."""
    plane = shape[1] * shape[2]
    per_slice = plane * (itemsize + OUTPUT_BYTES)
    room = cfg.slab_mb * 2**20 - plane * SLICE_WORK_BYTES
    depth = min(cfg.chunks[0], shape[0])
    n = max(depth, room // per_slice // depth * depth)
    if room < per_slice * depth:
        log.warning(
            "slab_mb=%d holds less than one chunk of %d slices; converting one chunk at a time",
            cfg.slab_mb,
            depth,
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
    if cfg.labels_kind == "binary":
        cell = labels != cfg.membrane_value
        others = labels[cell]
        values = set() if others.size == 0 else {others.min().item(), others.max().item()}
        values |= set() if counts.cell_value is None else {counts.cell_value}
        if len(values) > 1:
            found = sorted({cfg.membrane_value, *values, *np.unique(others).tolist()})[:10]
            raise io.VolumeError(
                f"{name}: binary labels expected with membrane = {cfg.membrane_value} and one cell value, "
                f"found values {found}; set labels_kind: instances or fix membrane_value"
            )
        counts.cell_value = next(iter(values), counts.cell_value)
    else:
        if labels.min() < 0 or labels.max() > INT32_MAX:
            raise io.VolumeError(
                f"{name}: instance labels must be cell ids from 0 (boundary) to {INT32_MAX}, found "
                f"{labels.min()} to {labels.max()}; relabel the cells"
            )
        cell = labels > 0
    per_slice = cell.reshape(len(cell), -1).sum(axis=1)
    if (per_slice == 0).any():
        z = z0 + int(np.flatnonzero(per_slice == 0)[0])
        raise io.VolumeError(
            f"{name}: label slice {z} has no cell pixels (all membrane/background): an unlabelled "
            "section? label it or leave it out of raw and labels"
        )
    counts.cells += int(per_slice.sum())
    counts.membrane += cell.size - int(per_slice.sum())


def _check_content(source: _Source, cfg: PrepareConfig, step: int) -> _Counts:
    """The checking pass: every slab of raw and labels, before anything is written."""
    counts = _Counts()
    for z0, z1 in _slabs(source.raw.shape[0], step, "check"):
        _check_raw(io.read_slices(source.raw, z0, z1), z0, source.raw_name)
        _check_labels(io.read_slices(source.labels, z0, z1), z0, source.labels_name, cfg, counts)
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


def _label_outputs(labels: np.ndarray, cfg: PrepareConfig, first_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Binary cells (0/255) and int32 instances of a slab; binary labels get the 4-connected cells of
    each slice (as `weights.instances_from_binary`), numbered from ``first_id + 1`` on so that ids stay
    unique over the volume."""
    cell = labels > 0 if cfg.labels_kind == "instances" else labels != cfg.membrane_value
    cells = cell.view(np.uint8) * np.uint8(255)
    if cfg.labels_kind == "instances":
        return cells, labels.astype(np.int32)
    instances = np.zeros(labels.shape, np.int32)
    for plane, out in zip(cell, instances, strict=True):
        count = ndimage.label(plane, structure=FOUR_CONNECTED, output=out)
        np.add(out, first_id, out=out, where=out > 0)  # a masked add: 5x faster than out[out > 0] += ...
        first_id += count
    return cells, instances


class _Timer(Counter):
    """Seconds spent per stage, for the closing log line."""

    def __call__(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        self[stage] += now - start
        return now


def _write(
    root: zarr.Group, source: _Source, cfg: PrepareConfig, step: int, balance: tuple[float, float]
) -> None:
    shape, raw_dtype = source.raw.shape, source.raw.dtype.newbyteorder("=")
    voxel_size = cfg.voxel_size or source.raw.voxel_size
    common = {
        "shape": shape,
        "chunks": cfg.chunks,
        "voxel_size": voxel_size,
        "unit": cfg.unit or source.raw.unit,
        "compression_level": cfg.compression_level,
    }
    arrays = {
        "raw": io.create_image(root, "", dtype=raw_dtype, **common),
        "cells": io.create_image(root, "labels/cells", dtype=np.uint8, label=True, **common),
        "instances": io.create_image(root, "labels/instances", dtype=np.int32, label=True, **common),
        "weights": io.create_image(root, "weights", dtype=np.float32, **common),
    }
    timer, last_id = _Timer(), 0
    for z0, z1 in _slabs(shape[0], step, "convert"):
        start = time.perf_counter()
        raw = np.asarray(io.read_slices(source.raw, z0, z1), dtype=raw_dtype)
        labels = io.read_slices(source.labels, z0, z1)
        start = timer("read", start)
        cells, instances = _label_outputs(labels, cfg, last_id)
        last_id = max(last_id, int(instances.max(initial=0)))
        start = timer("labels", start)
        weights = np.empty(instances.shape, np.float32)
        for i, plane in enumerate(instances):
            weights[i] = weight_map(plane, w0=cfg.w0, sigma=cfg.sigma, class_weight=balance)
        start = timer("weights", start)
        for name, data in (("raw", raw), ("cells", cells), ("instances", instances), ("weights", weights)):
            arrays[name][z0:z1] = data
        timer("write", start)
    log.info("convert time per stage (s): %s", {k: round(v, 2) for k, v in timer.items()})


def prepare(out_path: str | os.PathLike, cfg: PrepareConfig) -> Split:
    """Write ``data.ome.zarr`` (raw, binary labels, instances, weight maps, split); returns the split.

    Parameters
    ----------
    out_path : str or path-like
        The store to write; an existing one is replaced only once the new one is complete.
    cfg : PrepareConfig
        Inputs, split and storage options.

    Returns
    -------
    Split
        The train/val/test slice ranges written to ``attrs["unet_core"]["split"]``.

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
    step = _slab_slices(shape, source.raw.dtype.itemsize + source.labels.dtype.itemsize, cfg)
    log.info("preparing %s: raw %s %s, %d slices per slab", source.raw_name, shape, source.raw.dtype, step)
    counts = _check_content(source, cfg, step)
    log.info(
        "checked %s and %s in %.1f s", source.raw_name, source.labels_name, time.perf_counter() - started
    )
    balance = class_weights_from_counts(counts.membrane, counts.cells)
    with io.atomic_directory(out_path) as tmp:
        root = zarr.open_group(store=str(tmp), mode="w-", zarr_format=3)  # w- keeps the locked folder
        _write(root, source, cfg, step, balance)
        root.require_group("labels").attrs["ome"] = {
            "version": io.NGFF_VERSION,
            "labels": ["cells", "instances"],
        }
        root.attrs["unet_core"] = {
            "format_version": 1,
            "source": source.raw_name,
            "labels": source.labels_name,
            "split": split.to_dict(),
            "weights": {"w0": cfg.w0, "sigma": cfg.sigma, "class_weights": list(balance)},
        }
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
