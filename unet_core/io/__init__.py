"""Reading EM volumes (TIFF, slice folders, HDF5, Zarr, OME-Zarr) and writing OME-Zarr (NGFF 0.5, zarr v3).

Every volume is handled as (Z, Y, X); a 2D image is one slice. Readers never load a whole volume: a
multi-page TIFF, a folder of slices or a 2D/5D array is wrapped as a `LazyStack` that reads only the
slices asked for, so callers can stream stacks larger than memory slab by slab. Writers are atomic at
directory level: a store is built under a hidden temporary name beside its destination and renamed into
place only when complete, so a killed job never leaves a store that looks finished; the next writer of the
same path removes what the killed one left (`sweep_leftovers`).

Modules: `volume` (`open_volume` and the reading helpers), one reader per format (`tiff`, `slices`,
`hdf5`, `zarr_store`), `frames` (images paired with their masks frame by frame, plain or in the Cell
Tracking Challenge's layout), `stack` (`Volume`, `LazyStack`, the (Z, Y, X) rules), `ngff` (the OME-Zarr
writer) and `atomic` (temp-and-rename writes and their locks, used by every writer of the package).
"""

from .atomic import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_text,
    discard,
    move_into_place,
    sweep_leftovers,
)
from .frames import FramePairs, is_frame_folder, open_frame_pairs
from .hdf5 import HDF5_PATH, HDF5_SUFFIXES
from .ngff import AXES, NGFF_VERSION, compressor, create_image, ngff_image_attrs, write_image
from .slices import SLICE_SUFFIXES
from .stack import DEFAULT_VOXEL_SIZE, NANOMETERS, LazyStack, Volume, VolumeError, ngff_unit
from .tiff import TIFF_SUFFIXES
from .volume import check_real, open_volume, read_slices, read_volume
from .zarr_store import ZARR_MARKERS

__all__ = [
    "AXES",
    "DEFAULT_VOXEL_SIZE",
    "FramePairs",
    "HDF5_PATH",
    "HDF5_SUFFIXES",
    "NANOMETERS",
    "NGFF_VERSION",
    "SLICE_SUFFIXES",
    "TIFF_SUFFIXES",
    "ZARR_MARKERS",
    "LazyStack",
    "Volume",
    "VolumeError",
    "atomic_directory",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_real",
    "compressor",
    "create_image",
    "discard",
    "is_frame_folder",
    "move_into_place",
    "ngff_image_attrs",
    "ngff_unit",
    "open_frame_pairs",
    "open_volume",
    "read_slices",
    "read_volume",
    "sweep_leftovers",
    "write_image",
]
