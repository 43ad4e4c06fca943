"""Turn an EM stack and its labels (or the built-in synthetic volume) into the canonical training store.

See `unet_core.dataset` for the layout of ``data.ome.zarr``. Everything is checked before anything is
written, and the store appears atomically, so a failed or killed prepare leaves no store behind.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import zarr

from . import io
from .data.synthetic import generate_volume
from .data.weights import instances_from_binary, weight_volume
from .dataset import Split

log = logging.getLogger(__name__)

LABEL_KINDS = ("binary", "instances")


@dataclass(frozen=True)
class PrepareConfig:
    """Where the data comes from and how to store it; empty ``raw`` means the synthetic volume."""

    raw: str = ""
    labels: str = ""
    labels_kind: str = "binary"
    membrane_value: int = 0
    synthetic_shape: tuple[int, int, int] = (24, 256, 256)
    seed: int = 0
    train_slices: tuple[int, int] | None = None
    val_slices: tuple[int, int] | None = None
    test_slices: tuple[int, int] | None = None
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    unit: str = ""
    w0: float = 10.0
    sigma: float = 5.0
    chunks: tuple[int, int, int] = (1, 512, 512)

    def __post_init__(self) -> None:
        if self.labels_kind not in LABEL_KINDS:
            raise ValueError(f"labels_kind must be one of {LABEL_KINDS}, got {self.labels_kind!r}")
        if bool(self.raw) != bool(self.labels):
            raise ValueError("give both raw and labels (or neither, for the synthetic volume)")


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


def _load(cfg: PrepareConfig) -> tuple[np.ndarray, np.ndarray, str]:
    if not cfg.raw:
        raw, labels = generate_volume(tuple(cfg.synthetic_shape), seed=cfg.seed)
        return raw, labels, "synthetic"
    raw, labels = io.read_volume(cfg.raw), io.read_volume(cfg.labels)
    if raw.shape != labels.shape:
        raise io.VolumeError(
            f"{cfg.labels}: labels shape {labels.shape} differs from raw {cfg.raw} shape {raw.shape}; "
            "give labels for exactly the raw slices"
        )
    if not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)):
        raise io.VolumeError(f"{cfg.raw}: unsupported dtype {raw.dtype}; convert to an integer or float type")
    if np.issubdtype(raw.dtype, np.floating) and not np.isfinite(raw).all():
        raise io.VolumeError(f"{cfg.raw}: contains NaN or inf; replace them before preparing")
    if cfg.labels_kind == "binary":
        values = np.unique(labels)
        if len(values) > 2 or cfg.membrane_value not in values:
            raise io.VolumeError(
                f"{cfg.labels}: binary labels expected with membrane = {cfg.membrane_value}, found values "
                f"{values[:10].tolist()}; set labels_kind: instances or fix membrane_value"
            )
        labels = np.where(labels == cfg.membrane_value, 0, 255).astype(np.uint8)
    return raw, labels, cfg.raw


def prepare(out_path: str | os.PathLike, cfg: PrepareConfig) -> Split:
    """Write ``data.ome.zarr`` (raw, binary labels, instances, weight maps, split); returns the split."""
    raw, labels, source = _load(cfg)
    split = make_split(cfg, raw.shape[0], source)
    if cfg.labels_kind == "instances" and cfg.raw:
        instances = np.where(labels > 0, labels, 0).astype(np.int32)
        labels = np.where(labels > 0, 255, 0).astype(np.uint8)
    else:
        instances = instances_from_binary(labels)
    weights = weight_volume(instances, w0=cfg.w0, sigma=cfg.sigma)
    log.info("prepared %s: raw %s %s, split %s", source, raw.shape, raw.dtype, split.to_dict())
    common = {"voxel_size": cfg.voxel_size, "unit": cfg.unit or None}
    with io.atomic_directory(out_path) as tmp:
        root = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
        chunks = cfg.chunks
        io.create_image(root, "", shape=raw.shape, dtype=raw.dtype, chunks=chunks, **common)[...] = raw
        for name, data in (("labels/cells", labels), ("labels/instances", instances)):
            io.create_image(
                root, name, shape=data.shape, dtype=data.dtype, chunks=chunks, label=True, **common
            )[...] = data
        io.create_image(root, "weights", shape=weights.shape, dtype=weights.dtype, chunks=chunks, **common)[
            ...
        ] = weights
        root.require_group("labels").attrs["ome"] = {
            "version": io.NGFF_VERSION,
            "labels": ["cells", "instances"],
        }
        root.attrs["unet_core"] = {
            "format_version": 1,
            "source": source,
            "split": split.to_dict(),
            "weights": {"w0": cfg.w0, "sigma": cfg.sigma},
        }
    return split
