"""Writing OME-Zarr images: NGFF 0.5 metadata on Zarr v3 arrays, Blosc zstd chunks.

Every image written here is single-scale (Z, Y, X) with its level 0 in the array ``"0"``; labels are
marked as NGFF label images. `write_image` writes a whole array as a store, atomically; `create_image`
makes an image inside a store that its caller fills slab by slab within its own `atomic_directory`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from .atomic import atomic_directory
from .stack import DEFAULT_VOXEL_SIZE, _as_zyx, _is_int

NGFF_VERSION = "0.5"
AXES = "zyx"  # every image here is a (z, y, x) volume


def ngff_image_attrs(
    name: str, *, voxel_size: Sequence[float] = DEFAULT_VOXEL_SIZE, unit: str | None = None
) -> dict:
    """NGFF 0.5 attributes of a single-scale (Z, Y, X) image whose level 0 is the array ``"0"``."""
    axes = [{"name": ax, "type": "space"} | ({"unit": unit} if unit else {}) for ax in AXES]
    scale = [float(s) for s in voxel_size]
    return {
        "ome": {
            "version": NGFF_VERSION,
            "multiscales": [
                {
                    "name": name,
                    "axes": axes,
                    "datasets": [
                        {
                            "path": "0",
                            "coordinateTransformations": [{"type": "scale", "scale": scale}],
                        }
                    ],
                }
            ],
        }
    }


def compressor(level: int = 5, *, shuffle: str = "bitshuffle") -> BloscCodec:
    """The chunk codec of every store written here: Blosc zstd, by default with bit shuffling.

    ``level`` runs from 0 (stored uncompressed, fastest) to 9 (smallest, slowest). ``shuffle``
    (``bitshuffle``, ``shuffle`` for bytes, ``noshuffle``) is the filter before zstd: which one compresses
    best, and fastest, depends on the data (see `unet_core.prepare.SHUFFLE`).
    """
    if not _is_int(level) or not 0 <= level <= 9:
        raise ValueError(f"compression level must be an integer from 0 to 9, got {level!r}")
    return BloscCodec(cname="zstd", clevel=level, shuffle=shuffle)


def create_image(
    group: zarr.Group,
    name: str,
    *,
    shape: Sequence[int],
    dtype: Any,
    chunks: Sequence[int],
    voxel_size: Sequence[float] = DEFAULT_VOXEL_SIZE,
    unit: str | None = None,
    label: bool = False,
    compression_level: int = 5,
    shuffle: str = "bitshuffle",
    shard_slices: int = 0,
    flat_keys: bool = False,
) -> zarr.Array:
    """Create an NGFF image (or label image) ``name`` inside ``group`` and return its level-0 array.

    ``name = ""`` makes ``group`` itself the image; ``compression_level`` and ``shuffle`` go to `compressor`.
    ``shard_slices > 0`` stores ``chunks`` inside shards of that many whole slices (a multiple of the chunk
    depth): one file per shard, which must be written whole to avoid rewriting it. ``flat_keys`` names
    chunk files ``c.z.y.x`` instead of ``c/z/y/x``, so writing them creates no folders. Both are recorded in
    ``zarr.json``; any Zarr v3 reader follows them (OME-Zarr 0.5 allows every Zarr v3 feature).
    """
    image = group if not name else group.require_group(name)
    attrs = ngff_image_attrs(name or "image", voxel_size=voxel_size, unit=unit)
    if label:
        attrs["ome"]["image-label"] = {"version": NGFF_VERSION}
    image.attrs.update(attrs)
    chunks = tuple(min(int(c), int(s)) or 1 for c, s in zip(chunks, shape, strict=True))
    shards = None
    if shard_slices:
        if shard_slices % chunks[0]:
            raise ValueError(f"shard_slices={shard_slices} is not a multiple of the chunk depth {chunks[0]}")
        shards = (shard_slices, *(-(-int(s) // c) * c for s, c in zip(shape[1:], chunks[1:], strict=True)))
    return image.create_array(
        "0",
        shape=tuple(shape),
        dtype=dtype,
        chunks=chunks,
        shards=shards,
        dimension_names=tuple(AXES),  # NGFF 0.5: must match the axes of the multiscales metadata
        chunk_key_encoding={"name": "default", "separator": "." if flat_keys else "/"},
        compressors=compressor(compression_level, shuffle=shuffle),
        fill_value=0,
    )


def write_image(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    chunks: Sequence[int] = (1, 512, 512),
    voxel_size: Sequence[float] = DEFAULT_VOXEL_SIZE,
    unit: str | None = None,
    label: bool = False,
    attrs: dict | None = None,
) -> None:
    """Write a (Z, Y, X) array as a single-image OME-Zarr store, atomically.

    Parameters
    ----------
    path : str or path-like
        The store to write; a previous store at ``path`` is replaced once the new one is complete.
    data : ndarray
        A (Z, Y, X) array, or a 2D image (written as one slice).
    chunks : sequence of 3 int
        Chunk shape, clipped to the array's shape.
    voxel_size, unit
        Recorded in the NGFF scale and axes (see `ngff_image_attrs`).
    label : bool
        Mark the image as an NGFF label image.
    attrs : dict, optional
        More attributes of the root group, beside ``"ome"``.

    Raises
    ------
    VolumeError
        If ``data`` is not 2D or (Z, Y, X).
    """
    data = _as_zyx(np.asarray(data), os.fspath(path))
    with atomic_directory(path) as tmp:
        root = zarr.open_group(store=str(tmp), mode="w-", zarr_format=3)  # w- keeps the locked folder
        array = create_image(
            root,
            "",
            shape=data.shape,
            dtype=data.dtype,
            chunks=chunks,
            voxel_size=voxel_size,
            unit=unit,
            label=label,
        )
        array[...] = data
        if attrs:
            root.attrs.update(attrs)
