"""Reading Zarr arrays (v2 or v3) and OME-Zarr images without loading them.

A Zarr array is read as it is; an OME-Zarr group is read at level 0 of its first multiscale, with the
voxel size and unit its metadata records. Leading axes of length 1 (OME-Zarr's t and c) are dropped;
a channel or time axis longer than 1 is refused.
"""

from __future__ import annotations

from pathlib import Path

import zarr

from .stack import DEFAULT_VOXEL_SIZE, Volume, VolumeError, _as_zyx, _check_shape

ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")


def open_zarr(path: Path, key: str | None) -> Volume:
    """Open a Zarr array or an OME-Zarr image for reading without loading it.

    Parameters
    ----------
    path : pathlib.Path
        The store.
    key : str or None
        The sub-group or array to read in a store that holds several (``"labels/cells"``).

    Returns
    -------
    Volume
        The array as (Z, Y, X), with the voxel size and unit of its OME-Zarr metadata where present.

    Raises
    ------
    VolumeError
        If ``path`` is not a Zarr store, ``key`` is not in it, a group has no NGFF metadata naming an
        existing level-0 array, or the image has several channels or time points.
    """
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
