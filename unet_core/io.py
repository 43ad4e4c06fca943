"""Reading EM volumes (TIFF, slice folders, HDF5, Zarr, OME-Zarr) and writing OME-Zarr (NGFF 0.5, zarr v3).

Every volume is handled as (Z, Y, X); a 2D image is one slice. Readers never load a whole volume: a
multi-page TIFF, a folder of slices or a 2D/5D array is wrapped as a `LazyStack` that reads only the
slices asked for, so callers can stream stacks larger than memory slab by slab. Writers are atomic at
directory level: a store is built under a hidden temporary name beside its destination and renamed into
place only when complete, so a killed job never leaves a store that looks finished; the next writer of the
same path removes what the killed one left (`sweep_leftovers`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import operator
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

log = logging.getLogger(__name__)

NGFF_VERSION = "0.5"
AXES = "zyx"  # every image here is a (z, y, x) volume
DEFAULT_VOXEL_SIZE = (1.0, 1.0, 1.0)
TIFF_SUFFIXES = (".tif", ".tiff")
SLICE_SUFFIXES = (".png", *TIFF_SUFFIXES)
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
HDF5_PATH = re.compile(r"^(?P<file>.+\.(?:h5|hdf5|hdf)):(?P<key>.+)$", re.IGNORECASE)
ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")


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


class LazyStack:
    """A read-only (Z, Y, X) array whose slices are read on demand.

    Supports numpy basic indexing (integers, slices, ``...``) and ``np.asarray``; only the slices in the
    index are read. Used for TIFF stacks, folders of slices and arrays that need a view to become
    (Z, Y, X).

    Parameters
    ----------
    read : callable
        ``read(z0, z1)`` returns slices ``z0:z1`` as a numpy array of shape ``(z1 - z0, Y, X)``.
    shape : tuple of 3 int
        ``(Z, Y, X)``.
    dtype : numpy dtype
        Dtype of what ``read`` returns.
    path : str
        The source, for messages.
    """

    def __init__(
        self, read: Callable[[int, int], np.ndarray], shape: Sequence[int], dtype: Any, *, path: str
    ) -> None:
        self._read = read
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.path = path
        self.chunks = (1, *self.shape[1:])

    ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyStack({self.path!r}, shape={self.shape}, dtype={self.dtype})"

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        zkey, rest = _split_key(key, self.shape[0])
        if isinstance(zkey, int):
            return self._read(zkey, zkey + 1)[(0, *rest)]
        start, stop, step = zkey.indices(self.shape[0])
        if step == 1:
            data = self._read(start, max(start, stop))
        else:
            picks = range(start, stop, step)
            data = np.empty((len(picks), *self.shape[1:]), self.dtype)
            for i, z in enumerate(picks):
                data[i] = self._read(z, z + 1)[0]
        return data[(slice(None), *rest)]


def _split_key(key: Any, n_slices: int) -> tuple[int | slice, tuple]:
    """Basic index -> (z index or slice, index of the remaining (Y, X) axes)."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:at] + (slice(None),) * (4 - len(key)) + key[at + 1 :]
    if len(key) > 3 or not all(isinstance(k, slice) or _is_int(k) for k in key):
        raise TypeError(f"index must be integers, slices or ... over (Z, Y, X), got {key!r}")
    key = key + (slice(None),) * (3 - len(key))
    zkey = key[0]
    if _is_int(zkey):
        z = operator.index(zkey)
        z = z + n_slices if z < 0 else z
        if not 0 <= z < n_slices:
            raise IndexError(f"slice index {operator.index(zkey)} out of range for {n_slices} slices")
        zkey = z
    return zkey, key[1:]


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def open_volume(path: str | os.PathLike, *, key: str | None = None) -> Volume:
    """Open a volume for reading without loading it.

    Parameters
    ----------
    path : str or path-like
        A TIFF (one page per slice), a PNG, a folder of 2D PNG or TIFF slices (stacked in natural order
        of file names: ``s2.png`` before ``s10.png``), ``file.h5:/dataset`` for HDF5, a Zarr (v2 or v3)
        array, or an OME-Zarr image (level 0 of its first multiscale is read).
    key : str, optional
        For OME-Zarr stores holding several images, the sub-group to read (``"labels/cells"``).

    Returns
    -------
    Volume
        The array as (Z, Y, X), with voxel size and unit where the file records them. A 2D image is one
        slice; leading axes of length 1 (OME-Zarr's t and c) are dropped.

    Raises
    ------
    VolumeError
        If the path does not exist, is not a readable volume, or holds RGB / multi-channel data.
    """
    text = os.fspath(path)
    hdf5 = HDF5_PATH.match(text)
    if hdf5:
        return _open_hdf5(hdf5["file"], hdf5["key"])
    p = Path(text)
    if not p.exists():
        raise VolumeError(f"{text}: no such file or directory; check the path in your config or volumes.tsv")
    if p.suffix.lower() in TIFF_SUFFIXES and p.is_file():
        return _open_tiff(p)
    if p.suffix.lower() == ".png" and p.is_file():
        return Volume(_read_slice_file(p)[None], text)
    if p.suffix.lower() in HDF5_SUFFIXES:
        raise VolumeError(f"{text}: HDF5 needs the dataset path, written as '{text}:/path/to/dataset'")
    if p.is_dir() and not any((p / marker).exists() for marker in ZARR_MARKERS):
        return _open_slice_folder(p)
    return _open_zarr(p, key)


def read_volume(path: str | os.PathLike, *, key: str | None = None) -> np.ndarray:
    """Read a whole volume into memory as a (Z, Y, X) numpy array (see `open_volume`)."""
    return np.asarray(open_volume(path, key=key).array[...])


def read_slices(volume: Volume, z0: int, z1: int) -> np.ndarray:
    """Slices ``z0:z1`` of ``volume`` as numpy; a damaged file becomes one `VolumeError` that names it.

    Codecs and file readers fail with many exception types (a corrupt Zarr chunk raises a RuntimeError
    from Blosc); they all mean the same to a user: the stored data cannot be read back.
    """
    try:
        return np.asarray(volume.array[z0:z1])
    except VolumeError:
        raise
    except Exception as err:
        raise VolumeError(
            f"{volume.path}: cannot read slices {z0}:{z1} ({type(err).__name__}: {err}); the file is "
            "damaged (a corrupt or truncated chunk?): copy or export it again"
        ) from err


def as_probability(volume: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Stored probabilities (an integer type's 0 to its maximum, uint8 0-255 as predict writes, or float)
    as ``dtype`` in [0, 1]. Scoring wants float64: in float32 uint8 51 (exactly 0.2) reads as 0.2000000030,
    above a float64 threshold of 0.2."""
    if np.issubdtype(volume.dtype, np.integer):
        return volume.astype(dtype) / dtype(np.iinfo(volume.dtype).max)
    return volume.astype(dtype)


def check_real(volume: Volume, what: str) -> None:
    """Refuse data that is not real numbers (complex, strings, objects): casting would drop information."""
    if volume.dtype.kind not in "biuf":
        raise VolumeError(
            f"{volume.path}: unsupported dtype {volume.dtype} for {what}; convert to integer or float numbers"
        )


def _check_shape(shape: tuple[int, ...], path: str, axes: str = "") -> None:
    """Refuse what is not (Z, Y, X) after dropping leading 1s; ``axes`` (one letter per axis: C or S =
    channel, T = time) catches a single RGB image, which is 3D as well."""
    extra = [size for size, ax in zip(shape, axes, strict=False) if ax in "CST" and size > 1]
    if extra or len(shape) < 2 or any(s != 1 for s in shape[:-3]):
        raise VolumeError(
            f"{path}: expected a 2D image or a 3D (Z, Y, X) stack, got shape {shape}; RGB and "
            "multi-channel data are not supported: save one grayscale channel of one time point"
        )
    if 0 in shape:
        raise VolumeError(f"{path}: empty stack of shape {shape}: no slices or no pixels; check the export")


def _as_zyx(array: Any, path: str) -> Any:
    """``array`` itself when 3D, else a (Z, Y, X) view: a 2D image is one slice, leading 1s are dropped."""
    shape = tuple(int(s) for s in array.shape)
    _check_shape(shape, path)
    if len(shape) == 3:
        return array
    lead = (0,) * max(len(shape) - 3, 0)
    if isinstance(array, np.ndarray):
        return array[lead] if lead else array[None]
    if lead:
        return LazyStack(
            lambda z0, z1: np.asarray(array[(*lead, slice(z0, z1))]), shape[-3:], array.dtype, path=path
        )
    return LazyStack(lambda z0, z1: np.asarray(array[...])[None][z0:z1], (1, *shape), array.dtype, path=path)


def _open_tiff(path: Path) -> Volume:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
        if len(tif.series) > 1 and tif.is_shaped:  # written page by page: tifffile makes each a series
            tif.close()
            tif = tifffile.TiffFile(path, is_shaped=False)  # pages of one shape form one series
        series = tif.series[0]
        shape, offset, axes = tuple(series.shape), series.dataoffset, series.axes
        # Pages decoded one by one must all be there; a contiguous block is checked by its size below.
        complete = offset is not None or _holds_every_page(tif, series, path.stat().st_size)
    except Exception as err:  # tifffile raises many types for damaged files
        raise VolumeError(f"{path}: not a readable TIFF ({err}); re-export the stack") from err
    if not shape or 0 in shape:
        raise VolumeError(f"{path}: not a readable TIFF (no image data); re-export the stack")
    if len(tif.series) > 1:
        shapes = [tuple(s.shape) for s in tif.series]
        raise VolumeError(
            f"{path}: pages of different shapes or types ({len(shapes)} image series, {shapes[:4]}); "
            "export a stack whose slices all have one shape and type"
        )
    if not complete:  # found at open, before anything is written
        raise VolumeError(
            f"{path}: the stack does not hold every page of the file, or its data runs past the end "
            "(truncated or damaged?); re-export the stack"
        )
    if "Z" not in axes:  # ImageJ often saves a z-stack as frames (T)
        axes = axes.replace("T", "Z")
    if offset is None:  # compressed or tiled: tifffile's zarr view decodes page by page
        _check_shape(shape, str(path), axes)
        return Volume(_as_zyx(zarr.open(tif.aszarr(series=0, level=0), mode="r"), str(path)), str(path))
    stored = series.dtype.newbyteorder(tif.byteorder)
    tif.close()
    _check_shape(shape, str(path), axes)
    shape3 = shape if len(shape) == 3 else (1, *shape)
    plane_bytes = int(np.prod(shape3[1:])) * stored.itemsize
    complete = (path.stat().st_size - offset) // plane_bytes
    if complete < shape3[0]:  # found at open, before any stage writes a thing
        raise VolumeError(f"{path}: file ends inside slice {complete} (truncated?); re-export the stack")
    return Volume(_contiguous_stack(path, offset, shape3, stored), str(path))


def _holds_every_page(tif: Any, series: Any, file_size: int) -> bool:
    """Whether ``series`` covers every page of ``tif`` and no page's data runs past ``file_size``: a
    truncated file loses pages (tifffile then falls back on a shorter series) or the end of the last."""
    pages = [page for page in series.pages if page]
    ends = (o + c for page in pages for o, c in zip(page.dataoffsets, page.databytecounts, strict=True))
    return len(pages) == len(tif.pages) and max(ends, default=0) <= file_size


def _contiguous_stack(path: Path, offset: int, shape: tuple[int, ...], stored: np.dtype) -> LazyStack:
    """Uncompressed TIFF data stored as one block: a slab is one seek and one read."""
    plane = int(np.prod(shape[1:]))
    native = stored.newbyteorder("=")

    def read(z0: int, z1: int) -> np.ndarray:
        with open(path, "rb") as handle:
            handle.seek(offset + z0 * plane * stored.itemsize)
            data = np.fromfile(handle, dtype=stored, count=(z1 - z0) * plane)
        if data.size != (z1 - z0) * plane:
            raise VolumeError(
                f"{path}: file ends inside slice {z0 + data.size // plane} (truncated?); re-export the stack"
            )
        return data.reshape(z1 - z0, *shape[1:]).astype(native, copy=False)

    return LazyStack(read, shape, native, path=str(path))


def _natural_key(path: Path) -> list:
    """Sort key of file names that orders embedded numbers by value (``s2`` before ``s10``)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _read_slice_file(path: Path) -> np.ndarray:
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        try:
            image = tifffile.imread(path)
        except Exception as err:
            raise VolumeError(f"{path}: not a readable TIFF ({err}); re-export the slice") from err
    else:
        from PIL import Image

        try:
            with Image.open(path) as handle:
                image = np.asarray(handle.convert("L") if handle.mode == "1" else _depalette(handle))
        except Exception as err:
            raise VolumeError(f"{path}: not a readable PNG ({err}); re-export the slice") from err
    if image.size == 0:
        raise VolumeError(f"{path}: not a readable TIFF (no image data); re-export the slice")
    if image.ndim != 2:
        raise VolumeError(
            f"{path}: a slice of a folder must be one 2D grayscale image, got shape {image.shape}; "
            "save single-channel 2D slices"
        )
    return image


def _depalette(image: Any) -> Any:
    """A palette image as the values its palette maps to: gray when every entry is gray, else RGB (refused
    as not 2D). Other modes unchanged."""
    if image.mode not in ("P", "PA"):
        return image
    rgb = np.asarray(image.convert("RGB"))
    return rgb[..., 0] if (rgb[..., :1] == rgb[..., 1:]).all() else rgb


def _open_slice_folder(folder: Path) -> Volume:
    files = sorted(
        (f for f in folder.iterdir() if f.suffix.lower() in SLICE_SUFFIXES and not f.name.startswith(".")),
        key=_natural_key,
    )
    if not files:
        raise VolumeError(
            f"{folder}: a folder that is neither a Zarr store nor holds PNG or TIFF slices; "
            "point to a stack, a Zarr/OME-Zarr store or a folder of 2D slices"
        )
    first = _read_slice_file(files[0])

    def read(z0: int, z1: int) -> np.ndarray:
        out = np.empty((z1 - z0, *first.shape), first.dtype)
        for i, name in enumerate(files[z0:z1]):
            image = _read_slice_file(name)
            if image.shape != first.shape or image.dtype != first.dtype:
                raise VolumeError(
                    f"{name}: slice {z0 + i} is {image.shape} {image.dtype} but {files[0].name} is "
                    f"{first.shape} {first.dtype}; every slice of the folder must match"
                )
            out[i] = image
        return out

    log.info("%s: %d slices, %s to %s", folder, len(files), files[0].name, files[-1].name)
    return Volume(LazyStack(read, (len(files), *first.shape), first.dtype, path=str(folder)), str(folder))


def _open_hdf5(path: str, key: str) -> Volume:
    import h5py

    if not Path(path).exists():
        raise VolumeError(f"{path}: no such HDF5 file; check the path in your config or volumes.tsv")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise VolumeError(f"{path}: not a readable HDF5 file ({err}); re-export it") from err
    try:
        dataset = handle[key] if key in handle else None
    except (KeyError, OSError) as err:  # a soft or external link whose target is gone
        raise VolumeError(
            f"{path}: cannot open '{key}' ({err}): a broken link? point to the data itself"
        ) from err
    if not isinstance(dataset, h5py.Dataset):
        names: list[str] = []
        handle.visititems(lambda name, node: names.append(name) if isinstance(node, h5py.Dataset) else None)
        raise VolumeError(
            f"{path}: no dataset '{key}'; datasets in the file: {names}; write it as '{path}:/<dataset>'"
        )
    return Volume(_as_zyx(dataset, f"{path}:{key}"), f"{path}:{key}")


def _open_zarr(path: Path, key: str | None) -> Volume:
    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as err:
        raise VolumeError(
            f"{path}: not a TIFF, HDF5 or Zarr volume ({err}); convert it to one of these"
        ) from err
    if key:
        if key not in node:
            raise VolumeError(f"{path}: no image '{key}' in the store; check the name")
        node = node[key]
    if isinstance(node, zarr.Array):
        return Volume(_as_zyx(node, str(path)), str(path))
    multiscales = _ngff_attrs(node).get("multiscales")
    if not multiscales:
        raise VolumeError(
            f"{path}: a Zarr group without OME-NGFF 'multiscales' metadata; "
            "point to the array inside it instead"
        )
    try:
        level0 = multiscales[0]["datasets"][0]
        array = node[level0["path"]]
    except (KeyError, IndexError, TypeError):
        array = None
    if not isinstance(array, zarr.Array):
        raise VolumeError(
            f"{path}: its OME-NGFF metadata names no level-0 array that exists (an incomplete copy?); "
            "copy or export the store again"
        )
    voxel_size, unit = DEFAULT_VOXEL_SIZE, None
    for transform in level0.get("coordinateTransformations", []):
        if transform.get("type") == "scale":  # a 2D image keeps the default z spacing
            scale = [float(s) for s in transform["scale"]][-3:]
            voxel_size = (*DEFAULT_VOXEL_SIZE[: 3 - len(scale)], *scale)
    axes = multiscales[0].get("axes", [])
    if axes and isinstance(axes[-1], dict):
        unit = axes[-1].get("unit")
    _check_shape(tuple(array.shape), str(path), _axis_letters(axes, array.ndim))
    return Volume(_as_zyx(array, str(path)), str(path), voxel_size, unit)


def _axis_letters(axes: list, ndim: int) -> str:
    """One letter per NGFF axis for `_check_shape`: C (channel), T (time), else "-"; by the axis type,
    or by its name where the type is missing (NGFF 0.3 axes are plain names, 0.4 types are optional)."""
    kinds, names = {"channel": "C", "time": "T"}, {"c": "C", "t": "T"}
    letters = "".join(
        kinds.get(a.get("type"), "-") if isinstance(a, dict) and a.get("type") else
        names.get(str(a.get("name") if isinstance(a, dict) else a).lower(), "-")
        for a in axes
    )  # fmt: skip
    return letters if len(letters) == ndim else ""


def _ngff_attrs(group: zarr.Group) -> dict:
    attrs = dict(group.attrs)
    return attrs.get("ome", attrs)  # NGFF 0.5 nests under "ome"; 0.4 did not


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
    """Write a (Z, Y, X) array as a single-image OME-Zarr store, atomically."""
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


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; rename it to ``path`` only if the block succeeds.

    A previous ``path`` is replaced only after the new one is complete; on failure the temporary directory
    is removed and ``path`` is left as it was. What a killed writer left beside ``path`` is removed first
    (`sweep_leftovers`).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(final)
    tmp, handle = _claim_temporary(final, directory=True)
    try:
        yield tmp
        _move_into_place(tmp, final)
    finally:
        if tmp.exists():
            _remove_settled(tmp)
        os.close(handle)


def _remove_settled(path: Path, *, settle: float = 0.05, timeout: float = 5.0) -> None:
    """Remove ``path`` and keep removing until nothing recreates it: when one chunk write fails (a full
    disk), Zarr's event loop still runs its sibling writes, whose ``mkdir`` brings folders back."""
    deadline = time.monotonic() + timeout
    while True:
        shutil.rmtree(path, ignore_errors=True)
        time.sleep(settle)
        if not path.exists() or time.monotonic() > deadline:
            return


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``, first moving a previous ``final`` aside; when writers of the same output
    race, each move succeeds and the last one's copy stays."""
    olds = []
    while True:
        try:
            os.replace(tmp, final)
            break
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
        old = _aside(final)
        with contextlib.suppress(FileNotFoundError):  # another writer moved it first
            os.replace(final, old)
            olds.append(old)
    for old in olds:
        _remove(old)


def discard(path: str | os.PathLike) -> None:
    """Remove a file or folder at once: it is renamed to ``.<name>.old-*`` first, so a kill during a long
    deletion leaves no half-deleted ``path`` (only the ``.old-`` copy, which `sweep_leftovers` removes)."""
    final = Path(path)
    old = _aside(final)
    os.replace(final, old)
    _remove(old)


def _aside(final: Path) -> Path:
    return final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write a file via temp + rename so readers never see a partial file."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(final)
    tmp, handle = _claim_temporary(final, directory=False)
    try:
        with os.fdopen(os.dup(handle), "wb") as out:
            out.write(payload)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(handle)


def _lock(handle: int, *, wait: bool) -> bool | None:
    """``flock`` an open file or directory: True if held, False if a live process holds it, None where the
    file system has no such locks (then nothing is swept)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def _claim_temporary(final: Path, *, directory: bool) -> tuple[Path, int]:
    """A new ``.<name>.tmp-<hex>`` beside ``final`` and an open, locked handle on it; the lock (released by
    the kernel when the process dies) tells `sweep_leftovers` that its writer is alive."""
    while True:
        tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
        if directory:
            tmp.mkdir()
            try:
                handle = os.open(tmp, os.O_RDONLY)
            except FileNotFoundError:  # swept before we could open and lock it: take another name
                continue
        else:
            handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        _lock(handle, wait=True)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(tmp).st_ino == os.fstat(handle).st_ino:  # still ours, not swept before the lock
                return tmp, handle
        os.close(handle)  # swept between creation and lock: take another name


def sweep_leftovers(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary copies of ``path`` that killed writers left beside it; returns them.

    ``.<name>.tmp-*`` entries are removed only when no live process holds their lock (so a concurrent
    writer of the same path keeps its copy), ``.<name>.old-*`` (a replaced output) always.
    """
    final = Path(path)
    pattern = re.compile(rf"\.{re.escape(final.name)}\.(tmp|old)-[0-9a-f]{{8}}")
    try:
        entries = [(e.path, m[1]) for e in os.scandir(final.parent) if (m := pattern.fullmatch(e.name))]
    except FileNotFoundError:
        return []
    removed = []
    for name, kind in entries:
        leftover = Path(name)
        try:
            handle = os.open(leftover, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone already, a link, or not ours to open
        try:
            if kind == "old" or _lock(handle, wait=False):
                _remove(leftover)
                removed.append(leftover)
        finally:
            os.close(handle)
    if removed:
        log.info("removed %d leftovers of killed writers of %s", len(removed), final)
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Text version of `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())
