"""Reading EM volumes (TIFF, HDF5, Zarr, OME-Zarr) and writing OME-Zarr (NGFF 0.5, zarr v3).

Every volume is handled as (Z, Y, X); a 2D image is one slice. Writers are atomic at directory level:
a store is built under a hidden temporary name beside its destination and renamed into place only when
complete, so a killed job never leaves a store that looks finished.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

log = logging.getLogger(__name__)

NGFF_VERSION = "0.5"
DEFAULT_VOXEL_SIZE = (1.0, 1.0, 1.0)
TIFF_SUFFIXES = (".tif", ".tiff")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
HDF5_PATH = re.compile(r"^(?P<file>.+\.(?:h5|hdf5|hdf)):(?P<key>.+)$", re.IGNORECASE)


class VolumeError(ValueError):
    """A user-supplied volume cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class Volume:
    """A (Z, Y, X) array-like (numpy or zarr, indexable without loading everything) and its metadata."""

    array: Any
    path: str
    voxel_size: tuple[float, float, float] = DEFAULT_VOXEL_SIZE
    unit: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)


def open_volume(path: str | os.PathLike, *, key: str | None = None) -> Volume:
    """Open a volume for reading without loading it (Zarr, OME-Zarr, HDF5) or load it (TIFF).

    Parameters
    ----------
    path : str or path-like
        A multi-page TIFF, ``file.h5:/dataset`` for HDF5, a Zarr (v2 or v3) array, or an OME-Zarr image
        (level 0 of its first multiscale is read).
    key : str, optional
        For OME-Zarr stores holding several images, the sub-group to read (``"labels/cells"``).

    Returns
    -------
    Volume
        The array as (Z, Y, X), with voxel size and unit where the file records them.
    """
    text = os.fspath(path)
    hdf5 = HDF5_PATH.match(text)
    if hdf5:
        return _open_hdf5(hdf5["file"], hdf5["key"])
    p = Path(text)
    if not p.exists():
        raise VolumeError(f"{text}: no such file or directory; check the path in your config or volumes.tsv")
    if p.suffix.lower() in TIFF_SUFFIXES:
        return _open_tiff(p)
    if p.suffix.lower() in HDF5_SUFFIXES:
        raise VolumeError(f"{text}: HDF5 needs the dataset path, written as '{text}:/path/to/dataset'")
    return _open_zarr(p, key)


def read_volume(path: str | os.PathLike, *, key: str | None = None) -> np.ndarray:
    """Read a whole volume into memory as a (Z, Y, X) numpy array (see `open_volume`)."""
    return np.asarray(open_volume(path, key=key).array[...])


def _as_zyx(array: Any, path: str) -> Any:
    if array.ndim == 2:
        return array[None] if isinstance(array, np.ndarray) else np.asarray(array)[None]
    if array.ndim != 3:
        raise VolumeError(
            f"{path}: expected a 2D image or a 3D (Z, Y, X) stack, got shape {tuple(array.shape)}; "
            "give one channel of a single time point"
        )
    return array


def _open_tiff(path: Path) -> Volume:
    import tifffile

    try:
        data = tifffile.imread(path)
    except Exception as err:  # tifffile raises many types for damaged files
        raise VolumeError(f"{path}: not a readable TIFF ({err}); re-export the stack") from err
    if data.size == 0:
        raise VolumeError(f"{path}: not a readable TIFF (no image data); re-export the stack")
    return Volume(_as_zyx(data, str(path)), str(path))


def _open_hdf5(path: str, key: str) -> Volume:
    import h5py

    if not Path(path).exists():
        raise VolumeError(f"{path}: no such HDF5 file; check the path in your config or volumes.tsv")
    handle = h5py.File(path, "r")
    if key not in handle or not isinstance(handle[key], h5py.Dataset):
        names: list[str] = []
        handle.visit(lambda n: names.append(n) if isinstance(handle[n], h5py.Dataset) else None)
        raise VolumeError(f"{path}: no dataset '{key}'; datasets in the file: {names}")
    return Volume(_as_zyx(handle[key], f"{path}:{key}"), f"{path}:{key}")


def _open_zarr(path: Path, key: str | None) -> Volume:
    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as err:
        raise VolumeError(
            f"{path}: not a TIFF, HDF5 or Zarr volume ({err}); convert it to one of these"
        ) from err
    if key:
        node = node[key]
    if isinstance(node, zarr.Array):
        return Volume(_as_zyx(node, str(path)), str(path))
    multiscales = _ngff_attrs(node).get("multiscales")
    if not multiscales:
        raise VolumeError(
            f"{path}: a Zarr group without OME-NGFF 'multiscales' metadata; "
            "point to the array inside it instead"
        )
    level0 = multiscales[0]["datasets"][0]
    voxel_size, unit = DEFAULT_VOXEL_SIZE, None
    for transform in level0.get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            voxel_size = tuple(float(s) for s in transform["scale"][-3:])
    axes = multiscales[0].get("axes", [])
    if axes and isinstance(axes[-1], dict):
        unit = axes[-1].get("unit")
    array = node[level0["path"]]
    return Volume(_as_zyx(array, str(path)), str(path), voxel_size, unit)


def _ngff_attrs(group: zarr.Group) -> dict:
    attrs = dict(group.attrs)
    return attrs.get("ome", attrs)  # NGFF 0.5 nests under "ome"; 0.4 did not


def ngff_image_attrs(
    name: str, *, voxel_size: Sequence[float] = DEFAULT_VOXEL_SIZE, unit: str | None = None
) -> dict:
    """NGFF 0.5 attributes of a single-scale (Z, Y, X) image whose level 0 is the array ``"0"``."""
    axes = [{"name": ax, "type": "space"} | ({"unit": unit} if unit else {}) for ax in "zyx"]
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


def compressor(level: int = 5) -> BloscCodec:
    """The chunk codec of every store written here: Blosc zstd with bit shuffling."""
    return BloscCodec(cname="zstd", clevel=level, shuffle="bitshuffle")


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
) -> zarr.Array:
    """Create an NGFF image (or label image) ``name`` inside ``group`` and return its level-0 array.

    ``name = ""`` makes ``group`` itself the image.
    """
    image = group if not name else group.require_group(name)
    attrs = ngff_image_attrs(name or "image", voxel_size=voxel_size, unit=unit)
    if label:
        attrs["ome"]["image-label"] = {"version": NGFF_VERSION}
    image.attrs.update(attrs)
    chunks = tuple(min(int(c), int(s)) or 1 for c, s in zip(chunks, shape, strict=True))
    return image.create_array(
        "0", shape=tuple(shape), dtype=dtype, chunks=chunks, compressors=compressor(), fill_value=0
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
    """Write a (Z, Y, X) array as a single-image OME-Zarr store, atomically."""
    data = _as_zyx(np.asarray(data), os.fspath(path))
    with atomic_directory(path) as tmp:
        root = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
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


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; rename it to ``path`` only if the block succeeds.

    A previous ``path`` is replaced only after the new one is complete; on failure the temporary directory
    is removed and ``path`` is left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write a file via temp + rename so readers never see a partial file."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_bytes(payload)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Text version of `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())
