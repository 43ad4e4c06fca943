"""Blockwise geometry for overlap-tile inference: regions of interest, blocks, mirrored reads.

The U-Net is 2D and works slice by slice, so blocks grow context only in Y and X. Every block reads its
input with a halo of real neighbouring data; only where the halo leaves the volume is the data mirrored
(the paper's overlap-tile strategy). All coordinates are voxels.

Tiling of one slice into blocks of the write grid (``b`` = block side, ``h`` = halo)::

    volume  0         b         2b        Y
            |---------|---------|-----|
    write    [ blk 0 ][ blk 1 ][blk2]          disjoint, cover the volume exactly
    read   [h[ blk 0 ]h]                        grows by the halo, mirrored outside [0, Y)
                    [h[ blk 1 ]h]
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .mirror import symmetric_indices
from .model import context, valid_output_size


@dataclass(frozen=True)
class Roi:
    """A box ``[begin, begin + shape)`` in voxels; frozen and hashable."""

    begin: tuple[int, ...]
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.begin) != len(self.shape):
            raise ValueError(f"Roi begin {self.begin} and shape {self.shape} differ in dimensions")
        if any(s < 0 for s in self.shape):
            raise ValueError(f"Roi shape must be non-negative, got {self.shape}")

    @property
    def end(self) -> tuple[int, ...]:
        return tuple(b + s for b, s in zip(self.begin, self.shape, strict=True))

    def to_slices(self) -> tuple[slice, ...]:
        return tuple(slice(b, e) for b, e in zip(self.begin, self.end, strict=True))


@dataclass(frozen=True)
class Block:
    """A unit of work: ``write_roi`` of the output, identified by its position in the write grid."""

    block_id: int
    grid_index: tuple[int, ...]
    write_roi: Roi


def plan_blocks(shape: Sequence[int], block_shape: Sequence[int]) -> list[Block]:
    """Cut a volume into disjoint blocks of ``block_shape`` (smaller at the far borders).

    Block ids enumerate the write grid in C order, so they are the same in every run.
    """
    if len(shape) != len(block_shape) or any(int(b) < 1 for b in block_shape):
        raise ValueError(f"block_shape must have {len(shape)} positive entries, got {tuple(block_shape)}")
    counts = [-(-int(s) // int(b)) for s, b in zip(shape, block_shape, strict=True)]
    blocks = []
    for block_id, index in enumerate(itertools.product(*(range(c) for c in counts))):
        begin = tuple(i * int(b) for i, b in zip(index, block_shape, strict=True))
        size = tuple(min(int(b), int(s) - o) for b, s, o in zip(block_shape, shape, begin, strict=True))
        blocks.append(Block(block_id, tuple(index), Roi(begin, size)))
    return blocks


def mirror_plan(roi: Roi, shape: Sequence[int]) -> tuple[tuple[slice, ...], list[np.ndarray]]:
    """How to read ``roi`` from a volume of ``shape``: one bounding box of real data, and per axis the
    indices (relative to that box) that unfold it into the mirrored roi, edge pixels repeated
    (`unet_core.mirror.symmetric_indices`)."""
    indices = [
        symmetric_indices(np.arange(b, e), s) for b, e, s in zip(roi.begin, roi.end, shape, strict=True)
    ]
    lo = [int(i.min()) for i in indices]
    box = tuple(slice(a, int(i.max()) + 1) for a, i in zip(lo, indices, strict=True))
    return box, [i - a for i, a in zip(indices, lo, strict=True)]


def unfold(box_data: np.ndarray, take: list[np.ndarray]) -> np.ndarray:
    """Apply the indices of `mirror_plan` to the data read from its bounding box."""
    data = np.asarray(box_data)
    for axis, indices in enumerate(take):  # one gather per mirrored axis: cheaper than np.ix_
        if len(indices) != data.shape[axis] or (indices != np.arange(len(indices))).any():
            data = np.take(data, indices, axis=axis)
    return data  # not copied when fully inside the volume


def read_mirrored(array: Any, roi: Roi) -> np.ndarray:
    """Read ``roi`` from ``array``: real data inside the volume, mirrored data outside it."""
    box, take = mirror_plan(roi, array.shape)
    return unfold(np.asarray(array[box]), take)


def input_range_1d(write_begin: int, write_size: int, depth: int) -> tuple[int, int, int]:
    """``(input_begin, input_size, crop)`` of the network input, along one axis, that covers the output
    range ``[write_begin, write_begin + write_size)``.

    The computed output starts at a multiple of ``2**depth`` so that the max-pool grid lines up with that of
    a whole-image prediction: tiled and whole-image outputs then compute the same function of the same
    pixels (equal up to float rounding, which differs between input shapes: about 1e-6, rarely one step
    of uint8). ``crop`` is the offset of the wanted output inside the computed one.
    """
    step = 2**depth
    aligned = (write_begin // step) * step
    crop = write_begin - aligned
    out = valid_output_size(crop + write_size, depth)
    halo = context(depth) // 2
    return aligned - halo, out + context(depth), crop


def network_input(write_roi: Roi, depth: int) -> tuple[Roi, tuple[slice, ...]]:
    """Input roi (z, y, x) of the network for a block, and the slices cutting the block from its output."""
    (z0, y0, x0), (nz, ny, nx) = write_roi.begin, write_roi.shape
    iy, sy, cy = input_range_1d(y0, ny, depth)
    ix, sx, cx = input_range_1d(x0, nx, depth)
    crop = (slice(0, nz), slice(cy, cy + ny), slice(cx, cx + nx))
    return Roi((z0, iy, ix), (nz, sy, sx)), crop


def halo_overhead(block_yx: Sequence[int], depth: int) -> float:
    """Input voxels the network computes per output voxel for a block of ``block_yx`` on the pooling grid."""
    sizes = [input_range_1d(0, int(n), depth)[1] for n in block_yx]
    return float(np.prod(sizes) / np.prod([int(n) for n in block_yx]))


def block_side_for_overhead(depth: int, limit: float = 1.5) -> int:
    """The smallest square block side (a multiple of ``2**depth``) with a halo overhead <= ``limit``."""
    side = 2**depth
    while halo_overhead((side, side), depth) > limit:
        side += 2**depth
    return side
