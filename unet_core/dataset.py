"""The prepared training store ``data.ome.zarr`` and training tiles sampled from it.

`TrainingStore` writes (for ``unet-core prepare``) and reads this layout; no other module names its keys.
Every image is NGFF 0.5, level 0 at ``"0"``::

    data.ome.zarr/0                   raw (Z, Y, X), dtype of the source
    data.ome.zarr/labels/cells/0      binary labels, ISBI convention: 0 = membrane, 255 = cell
    data.ome.zarr/labels/instances/0  4-connected cells per slice (int32, 0 = membrane)
    data.ome.zarr/weights/0           the paper's weight map w(x) (float32)
    labels attrs["ome"]               {"version": "0.5", "labels": ["cells", "instances"]}
    attrs["unet_core"]                {"format_version": 1, "source": raw's path, "labels": labels' path,
                                       "split": {"train": [z0, z1], "val": [z0, z1], "test": [z0, z1]},
                                       "weights": {"w0": w0, "sigma": sigma, "class_weights": [wm, wc]}}

Stores of instance labels (cells of light microscopy) hold the labels' own ids as ``instances`` and, as
``cells``, the cells less the separation borders between touching cells (0 = background or border); their
record adds ``"labels_kind": "instances"``, the ``"partial_slices"`` whose labels annotate only some cells
(when there are any) and the paired ``"frames"``' names (when paired from folders of frames). A record
without ``labels_kind`` is a store of binary membrane labels, as every store written before it existed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from . import io
from .data.augment import AugmentConfig, augment
from .model import context, output_size
from .tiling import Roi, read_mirrored

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Half-open slice ranges of the prepared volume."""

    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]

    def slices(self, name: str) -> slice:
        if name not in SPLITS:
            raise ValueError(f"split name must be one of {SPLITS}, got {name!r}")
        return slice(*getattr(self, name))

    def to_dict(self) -> dict[str, list[int]]:
        return {name: list(getattr(self, name)) for name in SPLITS}


#: The store's images by array name: their group (``""``: the root) and dtype (None: the source's).
IMAGES: dict[str, tuple[str, type | None]] = {
    "raw": ("", None),
    "cells": ("labels/cells", np.uint8),
    "instances": ("labels/instances", np.int32),
    "weights": ("weights", np.float32),
}
LABELS = ("cells", "instances")
FORMAT_VERSION = 1


class TrainingStore:
    """The prepared training store: its arrays, split and weight-map parameters by name.

    `create` lays out a new store; `open` reads a prepared one, and `find` any store that holds cell
    labels where a prepared one does (evaluation and the report take those too).
    """

    def __init__(self, root: zarr.Group, path: str | os.PathLike) -> None:
        self.root, self.path = root, path

    @classmethod
    def create(
        cls,
        root: zarr.Group,
        *,
        raw_dtype: np.dtype,
        shuffle: Mapping[str, str],
        source: str,
        labels: str,
        split: Split,
        w0: float,
        sigma: float,
        class_weights: Sequence[float],
        labels_kind: str = "binary",
        partial_slices: Sequence[int] = (),
        frames: Sequence[str] = (),
        **image_options: Any,
    ) -> dict[str, zarr.Array]:
        """Lay out a new store in the empty group ``root``: the four images and the record.

        Parameters
        ----------
        root : zarr.Group
            The empty Zarr v3 group that becomes the store.
        raw_dtype : numpy dtype
            Raw's dtype; the other arrays have the layout's fixed types.
        shuffle : mapping
            The Blosc shuffle of each array (`io.compressor`), by array name.
        source, labels : str
            The paths raw and labels were read from, for the record.
        split : Split
            The train/val/test slice ranges.
        w0, sigma, class_weights : float, float, sequence of float
            The weight map's parameters (`unet_core.data.weights`), class weights of (membrane, cell).
        labels_kind : {"binary", "instances"}, optional
            What the labels were: membranes or cell ids (recorded for instances only).
        partial_slices : sequence of int, optional
            Slices whose labels annotate only some cells.
        frames : sequence of str, optional
            The names of the slices when they were paired frame by frame from files.
        **image_options
            `io.create_image`'s storage options, the same for every array (``shape``, ``chunks``, ...).

        Returns
        -------
        dict of zarr.Array
            The empty arrays by name (``raw``, ``cells``, ``instances``, ``weights``), to be written.
        """
        arrays = {
            name: io.create_image(
                root,
                group,
                dtype=dtype or raw_dtype,
                label=name in LABELS,
                shuffle=shuffle[name],
                **image_options,
            )
            for name, (group, dtype) in IMAGES.items()
        }
        root.require_group("labels").attrs["ome"] = {"version": io.NGFF_VERSION, "labels": list(LABELS)}
        root.attrs["unet_core"] = {
            "format_version": FORMAT_VERSION,
            "source": source,
            "labels": labels,
            "split": split.to_dict(),
            "weights": {"w0": w0, "sigma": sigma, "class_weights": list(class_weights)},
            # only where there is something to say: a membrane store's record stays as it always was
            **({"labels_kind": labels_kind} if labels_kind != "binary" else {}),
            **({"partial_slices": list(partial_slices)} if partial_slices else {}),
            **({"frames": list(frames)} if frames else {}),
        }
        return arrays

    @classmethod
    def open(cls, path: str | os.PathLike) -> TrainingStore:
        """Open a prepared store read-only; a ValueError naming ``path`` and the fix when it is not one."""
        try:
            store = cls(zarr.open_group(store=str(path), mode="r"), path)
            store.raw, store.cells, store.weights  # noqa: B018 - existence check
            if store.split is None:
                raise ValueError("it records no train/val/test split")
        except Exception as err:
            raise ValueError(
                f"{path}: not a prepared training store ({err}); create it with `unet-core prepare`"
            ) from err
        return store

    @classmethod
    def find(cls, path: str | os.PathLike) -> TrainingStore | None:
        """The store at ``path`` if it is a Zarr group with cell labels where a prepared store has them,
        else None (a label volume of another kind, say)."""
        node = zarr.open(store=os.fspath(path), mode="r") if Path(path).is_dir() else None
        if isinstance(node, zarr.Group) and _level0("cells") in node:
            return cls(node, path)
        return None

    @property
    def raw(self) -> zarr.Array:
        """Raw intensities, the source's dtype."""
        return self.root[_level0("raw")]

    @property
    def cells(self) -> zarr.Array:
        """Binary labels: 0 = membrane, 255 = cell."""
        return self.root[_level0("cells")]

    @property
    def instances(self) -> zarr.Array:
        """Cell ids (int32), 0 = membrane."""
        return self.root[_level0("instances")]

    @property
    def weights(self) -> zarr.Array:
        """The weight map w(x) (float32)."""
        return self.root[_level0("weights")]

    @property
    def split(self) -> Split | None:
        """The train/val/test split ``prepare`` recorded; None when the store records none."""
        split = self.record.get("split")
        return None if split is None else Split(**{name: tuple(split[name]) for name in SPLITS})

    @property
    def weight_parameters(self) -> dict[str, Any]:
        """``w0``, ``sigma`` and ``class_weights`` (membrane, cell) of the stored weight map."""
        return self.record["weights"]

    @property
    def labels_kind(self) -> str:
        """``binary`` (membranes against cells, scored by the ISBI errors) or ``instances`` (cell ids,
        scored by SEG)."""
        return self.record.get("labels_kind", "binary")

    @property
    def partial_slices(self) -> tuple[int, ...]:
        """Slices whose instance labels annotate only some cells (none: every slice is complete)."""
        return tuple(self.record.get("partial_slices", ()))

    @property
    def frames(self) -> tuple[str, ...]:
        """The slices' names when they were paired from files, frame by frame; else empty."""
        return tuple(self.record.get("frames", ()))

    @property
    def record(self) -> dict[str, Any]:
        """What ``prepare`` recorded: format version, the source and labels paths, split, weights."""
        return dict(self.root.attrs).get("unet_core", {})


def _level0(name: str) -> str:
    group = IMAGES[name][0]
    return f"{group}/0" if group else "0"


def held_out(split: Split) -> slice:
    """Slices scored by evaluation: the test range when it is non-empty, else validation."""
    test = split.slices("test")
    return test if test.stop > test.start else split.slices("val")


def intensity_range(image: np.ndarray) -> tuple[float, float]:
    """The intensities that scaling maps to 0 and 1: the 0.5 and 99.5 percentiles of ``image``.

    The network's input normalisation (of the training raw data), the intensity-threshold baseline of
    `unet_core.evaluate` and the contrast of raw data in the report's figures all scale by it.

    Parameters
    ----------
    image : ndarray
        Intensities of any shape and real dtype.

    Returns
    -------
    low, high : float
        The two percentiles, ``high`` raised to ``low + 1e-6`` if need be, so that dividing by
        ``high - low`` is safe on nearly constant data.

    Examples
    --------
    >>> intensity_range(np.arange(1001.0))
    (5.0, 995.0)
    >>> intensity_range(np.zeros(4))
    (0.0, 1e-06)
    """
    low, high = np.percentile(image, [0.5, 99.5])
    return float(low), float(max(high, low + 1e-6))


class TileDataset(torch.utils.data.Dataset):
    """Random augmented training tiles; item ``k`` depends only on ``(seed, k)``.

    Seeding each item by its index makes the stream identical with any number of loader workers and lets
    a resumed run continue exactly where it stopped, without saving sampler state.
    """

    def __init__(
        self,
        raw: np.ndarray,
        labels: np.ndarray,
        weights: np.ndarray,
        *,
        input_size: int,
        depth: int,
        normalization: tuple[float, float],
        seed: int,
        augment_config: AugmentConfig | None,
        length: int,
    ) -> None:
        self.output = output_size(input_size, depth)
        self.input_size, self.halo = input_size, context(depth) // 2
        low, high = normalization
        self.raw = ((raw.astype(np.float32) - low) / (high - low)).astype(np.float32)
        self.labels = (labels > 0).astype(np.uint8)  # 1 byte per pixel to pass between processes
        self.weights = weights.astype(np.float32)
        self.seed, self.augment_config, self.length = seed, augment_config, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, k])
        z = int(rng.integers(self.raw.shape[0]))
        begin = [
            int(rng.integers(min(0, size - self.output), max(0, size - self.output) + 1))
            for size in self.raw.shape[1:]
        ]
        roi = Roi((z, begin[0] - self.halo, begin[1] - self.halo), (1, self.input_size, self.input_size))
        raw, labels, weights = (read_mirrored(a, roi)[0] for a in (self.raw, self.labels, self.weights))
        if self.augment_config is not None:
            raw, labels, weights = augment(raw, labels, weights, rng=rng, config=self.augment_config)
        crop = slice(self.halo, self.halo + self.output)
        return (
            torch.from_numpy(np.ascontiguousarray(raw[None], dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(labels[crop, crop])),
            torch.from_numpy(np.ascontiguousarray(weights[crop, crop], dtype=np.float32)),
        )
