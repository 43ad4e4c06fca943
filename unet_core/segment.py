"""Probabilities to instance labels: threshold + 4-connected components, or a seeded watershed on the
probability or on the distance transform of the thresholded map.

Cells are labelled slice by slice (ssTEM sections are much thicker than a pixel, and the ISBI metrics
score 2D components), with ids unique over the volume.

``components`` works block by block on the input's chunk grid, so memory is bounded by a few blocks and
the lookup table, whatever the size of a slice. Pass 1 labels each block on its own and records, per
provisional label, its size and first pixel, and which provisional labels touch across each block face
(a foreground pixel on both sides of the border, face to face: 4-connectivity). The touching pairs join
provisional labels into cells (connected components of a graph); cells are numbered 1..N in raster order
(z, y, x) of their first pixel, which is the numbering a whole-slice labelling gives, so the output does
not depend on the chunking; cells smaller than ``min_size`` (summed over their blocks) become 0. Pass 2
labels each block again and maps it through the lookup table. One slice cut into four blocks::

    1 1 0 | 3 3    provisional ids: block (0, 0) holds 1, 2; (0, 1) holds 3; (1, 0) 4; (1, 1) 5
    1 0 2 | 3 0    touching across the x border: (2, 3); across the y border: (1, 4)
    ------+----    cells: {1, 4} -> 1, {2, 3} -> 2 (first pixel: the 3 in row 0), {5} -> 3
    4 0 0 | 0 5

``watershed`` is not local (a basin can flood across a whole slice) and works on whole slices: it needs
one slab of slices (the input's z-chunk) in memory. So does ``distance``, for touching cells whose border
the map blurs (cells of light microscopy): the distance of each pixel of P(cell) > threshold to the
background peaks once per cell, and a watershed of it from its h-maxima cuts cells apart at their necks::

    P > threshold      distance        h-maxima (seeds)   cells
    . # # . # # .      . 1 1 . 1 1 .   . . . . . . .      . 1 1 . 2 2 .
    # # # # # # #      1 2 2 1 2 2 1   . a a . b b .      1 1 1 1 2 2 2
    . # # . # # .      . 1 1 . 1 1 .   . . . . . . .      . 1 1 . 2 2 .
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np
import zarr
from scipy import ndimage
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components as graph_components
from skimage.measure import label as connected_components
from skimage.morphology import local_maxima, reconstruction, remove_small_objects
from skimage.segmentation import relabel_sequential, watershed
from tqdm import tqdm

from . import io
from .inference import decode
from .parallel import finished_tasks, usable_cpus
from .paths import refuse_overwriting_input
from .tiling import Block, Roi, plan_blocks

log = logging.getLogger(__name__)

Method = Literal["components", "watershed", "distance"]
METHODS: tuple[str, ...] = get_args(Method)
#: The most cells an int32 label volume holds.
MAX_CELLS = int(np.iinfo(np.int32).max)
#: 4-connectivity within each slice of a (Z, Y, X) block, none across slices.
IN_PLANE = ndimage.generate_binary_structure(2, 1)[None] * np.array([0, 1, 0], bool)[:, None, None]


@dataclasses.dataclass(frozen=True)
class SegmentOptions:
    """How `segment_file` cuts a probability map into cells; the options of ``unet-core segment``.

    Attributes
    ----------
    method : {"components", "watershed", "distance"}
        ``components``: the 4-connected regions of P(cell) > ``threshold``, block by block, for slices
        too large for memory. ``watershed``: one basin per region of P(cell) > ``seed_threshold``, grown
        over 1 - P(cell) through every pixel above ``threshold``; keeps cells apart that touch through a
        faint membrane gap, and holds one z-chunk of whole slices in memory. ``distance``: a watershed of
        the distance transform of P(cell) > ``threshold``, seeded at its maxima that rise ``seed_height``
        above their surroundings; cuts touching cells apart at their necks (whole slices too).
    threshold : float
        P(cell) above which a pixel belongs to a cell, in [0, 1).
    seed_threshold : float
        P(cell) above which a pixel seeds a watershed basin, in [0, 1) (``watershed`` only).
    seed_min_size : int
        Seed regions of fewer pixels seed no basin: the neighbouring seeds flood their pixels, or these
        stay boundary where none reaches them (``watershed`` only; 0: every region seeds). A speck above
        ``seed_threshold`` inside a cell otherwise cuts it with a line of its own.
    seed_height : float
        Pixels by which a maximum of the distance transform must rise above the saddle to a higher one to
        seed a cell of its own, > 0 (``distance`` only: larger merges more).
    min_size : int
        Cells of fewer pixels become boundary (0: keep every cell).
    """

    method: Method = "components"
    threshold: float = 0.5
    seed_threshold: float = 0.9
    seed_min_size: int = 0
    seed_height: float = 2.0
    min_size: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        for name in ("threshold", "seed_threshold"):
            value = getattr(self, name)
            if not 0 <= value < 1:  # a probability at 1 or above leaves no cell: an empty segmentation
                raise ValueError(f"{name} must be a probability in [0, 1), got {value}")
        sizes = (("min_size", "keep every cell"), ("seed_min_size", "every seed region seeds"))
        for name, zero_means in sizes:
            if (size := getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0 pixels (0: {zero_means}), got {size}")
        if not 0 < self.seed_height < math.inf:
            raise ValueError(f"seed_height must be a finite number of pixels > 0, got {self.seed_height}")


def segment_slice(
    prob: np.ndarray,
    *,
    threshold: float = SegmentOptions.threshold,
    method: str = SegmentOptions.method,
    seed_threshold: float = SegmentOptions.seed_threshold,
    seed_min_size: int = SegmentOptions.seed_min_size,
    seed_height: float = SegmentOptions.seed_height,
    min_size: int = SegmentOptions.min_size,
) -> np.ndarray:
    """Instance labels (int32, 0 = boundary) of one 2D probability-of-cell map in [0, 1].

    ``components`` labels the 4-connected regions of ``prob > threshold``. ``watershed`` seeds one basin
    per 4-connected region of ``prob > seed_threshold`` of at least ``seed_min_size`` pixels and floods
    ``1 - prob`` within ``prob > threshold``, which keeps cells apart that touch through a faint membrane
    gap. ``distance`` floods the negated distance transform of ``prob > threshold`` from its maxima of
    height ``seed_height`` (h-maxima), which cuts touching cells apart at their necks.
    """
    if prob.ndim != 2:
        raise ValueError(f"prob must be a 2D slice, got shape {prob.shape}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    mask = prob > threshold
    if method == "components":
        labels = connected_components(mask, connectivity=1)
    elif method == "watershed":
        markers = connected_components(prob > seed_threshold, connectivity=1)
        if seed_min_size > 1:
            markers = remove_small_objects(markers, max_size=seed_min_size - 1)
        labels = watershed(1.0 - prob, markers, mask=mask, connectivity=1)
    else:
        distance = ndimage.distance_transform_edt(mask)
        # The h-maxima transform: each dome lowered by seed_height, so that peaks joined by a saddle less
        # than that below them (equal ones too) become one plateau, one seed.
        domes = reconstruction(distance - seed_height, distance)
        markers = connected_components(local_maxima(domes, connectivity=2) & mask, connectivity=2)
        labels = watershed(-distance, markers, mask=mask, connectivity=1)
    if min_size > 1:
        labels = remove_small_objects(labels, max_size=min_size - 1)
    return labels.astype(np.int32)


def cell_map(labels: np.ndarray) -> np.ndarray:
    """The ISBI view of instance labels (..., Y, X): True inside cells, False on boundary pixels (label 0)
    and on a 1-px line where two cells touch.

    A watershed lets cells touch; the ISBI metrics read cells as 4-connected components of a binary map,
    so each pixel whose right or lower neighbour belongs to another cell becomes boundary: no two
    unmarked 4-neighbours then carry different labels (of two touching cells, the upper or left one
    gives up the pixels along the contact).
    """
    cells = labels > 0
    inner = cells.copy()
    before, after = (..., slice(None, -1)), (..., slice(1, None))  # x neighbours, then y neighbours
    for a, b in ((before, after), ((*before, slice(None)), (*after, slice(None)))):
        inner[a] &= ~(cells[a] & cells[b] & (labels[a] != labels[b]))
    return inner


def segment_file(
    prob_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    options: SegmentOptions | None = None,
    block_shape: Sequence[int] | None = None,
    n_workers: int | None = None,
) -> int:
    """Segment a probability OME-Zarr (`inference.decode`) into a label OME-Zarr; returns #cells.

    Labels are int32, 1..N over the volume in raster order of each cell's first pixel, 0 = boundary;
    the output has the input's chunks. ``options`` default to ``SegmentOptions()``. ``block_shape``
    (``components`` only; default: the input's chunk shape) must be a multiple of the input's chunks,
    or cover the volume, in each axis. ``n_workers`` threads (default: all usable cores) label the
    blocks; the output is the same for any number.

    Raises `io.VolumeError` for unreadable or damaged input and for NaN/inf or non-real probabilities,
    and ValueError for an ``out_path`` that would overwrite the input; no output is left on failure.
    """
    options = options or SegmentOptions()
    method = options.method
    if n_workers is not None and n_workers < 1:
        raise ValueError(f"n_workers must be a positive number of threads, got {n_workers}")
    if block_shape is not None and method != "components":
        raise ValueError(f"block_shape is for method 'components'; {method!r} works on whole slices")
    refuse_overwriting_input(out_path, prob_path)
    volume = io.open_volume(prob_path)
    io.check_real(volume, "probabilities")
    chunks = _chunk_shape(volume)
    blocks = _check_block_shape(block_shape, chunks, volume.shape) if block_shape is not None else chunks
    with io.atomic_directory(out_path) as tmp:
        root = zarr.open_group(store=str(tmp), mode="w-", zarr_format=3)  # w- keeps the locked folder
        target = io.create_image(
            root,
            "",
            shape=volume.shape,
            dtype="int32",
            chunks=chunks,
            voxel_size=volume.voxel_size,
            unit=volume.unit,
            label=True,
        )
        if method == "components":
            cells = _segment_components(volume, target, blocks, options, workers=n_workers or usable_cpus())
        else:
            cells = _segment_watershed(volume, target, chunks[0], options)
        root.attrs["unet_core"] = {"content": "cell instances", "cells": cells, "method": method}
    log.info("segmented %s: %d cells", prob_path, cells)
    return cells


def _chunk_shape(volume: io.Volume) -> tuple[int, int, int]:
    """The input's chunk shape, clipped to the volume; whole slices for unchunked arrays."""
    chunks = getattr(volume.array, "chunks", None) or (1, *volume.shape[1:])  # h5py: None if contiguous
    return tuple(max(1, min(int(c), s)) for c, s in zip(chunks, volume.shape, strict=True))


def _check_block_shape(block_shape: Sequence[int], chunks: Sequence[int], shape: Sequence[int]) -> tuple:
    """``block_shape`` clipped to the volume, if each block writes whole output chunks: blocks written by
    different threads must not share a chunk."""
    blocks = tuple(int(b) for b in block_shape)
    aligned = len(blocks) == 3 and all(
        b >= 1 and (b % c == 0 or b >= s) for b, c, s in zip(blocks, chunks, shape, strict=True)
    )
    if not aligned:
        raise ValueError(
            f"block_shape must be 3 positive multiples of the input's chunks {tuple(chunks)} (or cover the "
            f"volume {tuple(shape)}) in (Z, Y, X), got {tuple(block_shape)}"
        )
    return tuple(min(b, s) for b, s in zip(blocks, shape, strict=True))


def _first_nonfinite(prob: np.ndarray) -> int | None:
    """Index of the first slice of ``prob`` holding NaN or inf, None if none."""
    finite = np.isfinite(prob).reshape(len(prob), -1).all(axis=1)
    return None if finite.all() else int(np.flatnonzero(~finite)[0])


def _raise_nonfinite(path: str, z: int) -> None:
    raise io.VolumeError(f"{path}: slice {z} contains NaN or inf; predict it again")


# --- components, block by block --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Window:
    """The (Y, X) window ``yx`` of a (Z, Y, X) array, indexed by z: lets `io.read_slices` read a block (and
    name the file and slices when a chunk is damaged)."""

    array: Any
    yx: tuple[slice, slice]

    def __getitem__(self, z: slice) -> np.ndarray:
        return self.array[(z, *self.yx)]


@dataclasses.dataclass(frozen=True)
class _Labeller:
    """Labels one block of a probability volume: 4-connected components of ``prob > threshold`` per slice."""

    volume: io.Volume
    threshold: float

    def __call__(self, roi: Roi) -> tuple[np.ndarray, int | None]:
        """int32 labels 1..n of ``roi``, numbered in raster order of their first pixel (scipy's labelling
        order), and the first slice of ``roi`` holding NaN or inf (None if none)."""
        z, y, x = roi.to_slices()
        data = io.read_slices(
            dataclasses.replace(self.volume, array=_Window(self.volume.array, (y, x))), z.start, z.stop
        )
        prob = decode(data)
        bad = _first_nonfinite(prob) if data.dtype.kind == "f" else None
        labels, _ = ndimage.label(prob > self.threshold, structure=IN_PLANE)
        return labels, None if bad is None else z.start + bad


@dataclasses.dataclass(frozen=True)
class _Summary:
    """What pass 1 keeps of a block: size and first pixel (raster index in the volume) of each provisional
    label, the labels on its top, bottom, left and right faces, and its first slice with NaN or inf."""

    sizes: np.ndarray
    first: np.ndarray
    faces: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    bad_slice: int | None


def _summarise(labeller: _Labeller, roi: Roi) -> _Summary:
    labels, bad = labeller(roi)
    flat = labels.ravel()
    sizes = np.bincount(flat)[1:]
    starts = _first_pixels(flat)
    first = np.ravel_multi_index(
        tuple(i + b for i, b in zip(np.unravel_index(starts, labels.shape), roi.begin, strict=True)),
        labeller.volume.shape,
    )
    faces = (labels[:, 0].copy(), labels[:, -1].copy(), labels[:, :, 0].copy(), labels[:, :, -1].copy())
    return _Summary(sizes, first.astype(np.int64), faces, bad)


def _first_pixels(flat: np.ndarray) -> np.ndarray:
    """Index of the first pixel of each label 1..n of ``flat``, whose labels come in raster order.

    A label's first pixel begins a run of equal values, and the run's value exceeds those of all earlier
    runs; looking at run beginnings only is much cheaper than a running maximum over every pixel.
    """
    begins = np.concatenate([np.zeros(1, np.intp), np.flatnonzero(flat[1:] != flat[:-1]) + 1])
    values = flat[begins]
    seen = np.concatenate([np.zeros(1, values.dtype), np.maximum.accumulate(values)[:-1]])
    return begins[values > seen]


def _touching(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Distinct pairs of labels face to face across a block border (both sides foreground), as rows."""
    both = (before > 0) & (after > 0)
    return np.unique(np.stack([before[both], after[both]], axis=1), axis=0)


def _pair_row(
    summaries: list[_Summary], columns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One z-row of blocks (raster order, ``columns`` blocks per y-row): provisional ids numbered on
    through the row, their sizes and first pixels, the pairs touching across the row's inner faces, and
    the count per block. Cells are 2D, so blocks of different z-rows never touch."""
    counts = np.array([len(s.sizes) for s in summaries], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    faces = [
        [np.where(f > 0, f.astype(np.int64) + offsets[k], 0) for f in summary.faces]
        for k, summary in enumerate(summaries)
    ]
    pairs = [np.zeros((0, 2), np.int64)]
    for k in range(len(summaries)):
        top, _, left, _ = faces[k]
        if k >= columns:  # the block above: its bottom face against this top face
            pairs.append(_touching(faces[k - columns][1], top))
        if k % columns:  # the block to the left: its right face against this left face
            pairs.append(_touching(faces[k - 1][3], left))
    sizes = np.concatenate([s.sizes for s in summaries]).astype(np.int64)
    first = np.concatenate([s.first for s in summaries]).astype(np.int64)
    return counts, sizes, first, np.concatenate(pairs)


def _row_bad_slice(summaries: list[_Summary]) -> int | None:
    bad = [s.bad_slice for s in summaries if s.bad_slice is not None]
    return min(bad) if bad else None


def _join_rows(
    rows: list[tuple], bad: list[int | None], min_size: int, path: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """The lookup table of every provisional id (`_lookup_table`), the provisional ids where each block's
    begin, and the number of cells, from the z-rows in order; the first slice with NaN or inf, if any,
    raises."""
    if any(z is not None for z in bad):
        _raise_nonfinite(path, min(z for z in bad if z is not None))
    shift = np.concatenate([[0], np.cumsum([len(sizes) for _, sizes, _, _ in rows])])
    counts = np.concatenate([row[0] for row in rows])
    sizes, first = (np.concatenate([row[i] for row in rows]) for i in (1, 2))
    pairs = np.concatenate([row[3] + k for row, k in zip(rows, shift, strict=False)])
    lut, cells = _lookup_table(sizes, first, pairs, min_size=min_size, path=path)
    return lut, np.concatenate([[0], np.cumsum(counts)]), cells


def _lookup_table(
    sizes: np.ndarray, first: np.ndarray, pairs: np.ndarray, *, min_size: int, path: str
) -> tuple[np.ndarray, int]:
    """Final id of each provisional id (index 0: background) and the number of cells.

    Touching provisional labels form one cell; cells of at least ``min_size`` pixels are numbered 1..N in
    raster order of their first pixel, the others become 0.
    """
    n = len(sizes)
    if n == 0:
        return np.zeros(1, np.int32), 0
    graph = coo_array((np.ones(len(pairs), np.int32), (pairs[:, 0] - 1, pairs[:, 1] - 1)), shape=(n, n))
    n_cells, cell = graph_components(graph, directed=False)
    keep = np.bincount(cell, weights=sizes, minlength=n_cells) >= min_size
    start = np.full(n_cells, np.iinfo(np.int64).max)
    np.minimum.at(start, cell, first)
    order = np.flatnonzero(keep)[np.argsort(start[keep])]
    if len(order) > MAX_CELLS:
        raise io.VolumeError(
            f"{path}: {len(order)} cells do not fit int32 labels (at most {MAX_CELLS}); raise min_size or "
            "segment a smaller region"
        )
    final = np.zeros(n_cells, np.int32)
    final[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return np.concatenate([np.zeros(1, np.int32), final[cell]]), len(order)


def _segment_components(
    volume: io.Volume,
    target: zarr.Array,
    block_shape: Sequence[int],
    options: SegmentOptions,
    *,
    workers: int,
) -> int:
    """Pass 1, lookup table, pass 2 (see the module's docstring) as one dask graph run on ``workers``
    threads; returns the number of cells.

    Pass 1 is a task per block, their faces are paired by one task per z-row of blocks, and one task
    joins the rows into the lookup table; pass 2 is a task per block again. Pass 2 labels each block
    again rather than reading provisional labels back from a scratch array: thresholding and labelling
    a block costs less than encoding, writing, reading and decoding an int32 copy of it, and needs no
    scratch disk the size of the output.
    """
    from dask.threaded import get

    labeller = _Labeller(volume, options.threshold)
    blocks = plan_blocks(volume.shape, block_shape)
    counts = [math.ceil(s / b) for s, b in zip(volume.shape, block_shape, strict=True)]
    per_row = counts[1] * counts[2]
    graph: dict[Any, Any] = {("summary", b.block_id): (_summarise, labeller, b.write_roi) for b in blocks}
    for iz in range(counts[0]):
        row = [("summary", k) for k in range(iz * per_row, (iz + 1) * per_row)]
        graph["row", iz] = (_pair_row, row, counts[2])
        graph["bad", iz] = (_row_bad_slice, row)
    graph["table"] = (
        _join_rows,
        [("row", iz) for iz in range(counts[0])],
        [("bad", iz) for iz in range(counts[0])],
        options.min_size,
        volume.path,
    )
    writes = [("write", b.block_id) for b in blocks]
    graph.update(
        {key: (_write_labels, labeller, target, b, "table") for key, b in zip(writes, blocks, strict=True)}
    )
    with tqdm(total=len(blocks), desc="segment", unit="block", mininterval=2) as bar:
        with finished_tasks(lambda key: key[0] == "write" and bar.update(1)):
            (_, _, cells), *_ = get(graph, ["table", *writes], num_workers=workers)
    return cells


def _write_labels(labeller: _Labeller, target: zarr.Array, block: Block, table: tuple) -> None:
    """Pass 2 of a block: label it again and store its cells' final ids."""
    lut, first_ids, _ = table
    labels, _ = labeller(block.write_roi)
    b = block.block_id
    ids = lut[first_ids[b] : first_ids[b + 1] + 1].copy()
    ids[0] = 0
    target[block.write_roi.to_slices()] = ids[labels]


# --- watershed, slice by slice ---------------------------------------------------------------------------


def _segment_watershed(
    volume: io.Volume, target: zarr.Array, slab_depth: int, options: SegmentOptions
) -> int:
    """``watershed`` or ``distance``: whole slices, ``slab_depth`` slices at a time; each slice's cells get
    the next ids. Returns the number of cells."""
    next_id = 0
    for z0 in tqdm(range(0, volume.shape[0], slab_depth), desc="segment", unit="slab", mininterval=2):
        slab = decode(io.read_slices(volume, z0, z0 + slab_depth))
        if (bad := _first_nonfinite(slab)) is not None:
            _raise_nonfinite(volume.path, z0 + bad)
        out = np.zeros(slab.shape, dtype=np.int32)
        for i, prob in enumerate(slab):
            labels = segment_slice(prob, **dataclasses.asdict(options))
            labels = relabel_sequential(labels)[0]  # ids 1..n once small cells are gone
            out[i] = np.where(labels > 0, labels + next_id, 0)
            next_id += int(labels.max())
        target[z0 : z0 + len(slab)] = out
    return next_id
