"""Reading a dataset of an HDF5 file, addressed as ``file.h5:/path/to/dataset``, without loading it.

h5py datasets index like numpy, so a 3D dataset is used as it is and a 2D or 5D one through a
(Z, Y, X) view. A missing dataset is reported with the names of those the file holds.
"""

from __future__ import annotations

import re
from pathlib import Path

from .stack import Volume, VolumeError, _as_zyx

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
HDF5_PATH = re.compile(r"^(?P<file>.+\.(?:h5|hdf5|hdf)):(?P<key>.+)$", re.IGNORECASE)


def open_hdf5(path: str, key: str) -> Volume:
    """Open dataset ``key`` of the HDF5 file ``path`` for reading without loading it.

    Parameters
    ----------
    path : str
        The HDF5 file.
    key : str
        The dataset inside it (``/volumes/raw``).

    Returns
    -------
    Volume
        The dataset as (Z, Y, X), named ``path:key`` in messages.

    Raises
    ------
    VolumeError
        If the file is missing or unreadable, or ``key`` is not a dataset of it.
    """
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
