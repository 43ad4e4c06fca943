"""The prepared training store ``data.ome.zarr`` and training tiles sampled from it.

Layout written by ``unet-core prepare`` (every image NGFF 0.5, level 0 at ``"0"``)::

    data.ome.zarr/0                   raw (Z, Y, X), dtype of the source
    data.ome.zarr/labels/cells/0      binary labels, ISBI convention: 0 = membrane, 255 = cell
    data.ome.zarr/labels/instances/0  4-connected cells per slice (int32, 0 = membrane)
    data.ome.zarr/weights/0           the paper's weight map w(x) (float32)
    attrs["unet_core"]["split"]       {"train": [z0, z1], "val": [z0, z1], "test": [z0, z1]}
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import zarr

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


def open_store(path: str | os.PathLike) -> zarr.Group:
    """Open a prepared store read-only, with a clear error when it is not one."""
    try:
        root = zarr.open_group(store=str(path), mode="r")
        root["0"], root["labels/cells/0"], root["weights/0"]  # noqa: B018 - existence check
    except Exception as err:
        raise ValueError(
            f"{path}: not a prepared training store ({err}); create it with `unet-core prepare`"
        ) from err
    return root


def read_split(root: zarr.Group) -> Split:
    """The train/val/test split recorded by ``prepare``."""
    split = dict(root.attrs)["unet_core"]["split"]
    return Split(**{name: tuple(split[name]) for name in SPLITS})


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
