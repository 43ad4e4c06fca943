"""Overlap-tile prediction as a dask graph: one task per output block.

`predict_dask` makes any (Z, Y, X) volume a lazy dask array of cell probabilities whose chunks are the
output blocks; ``unet-core predict`` runs the same block tasks and writes each chunk as it is computed
(`unet_core.predict`). A block task reads its input box with the network's halo, real neighbouring data
inside the volume and mirrored data only outside it (`tiling.read_mirrored`), and applies the network
(`inference.TilePredictor`); the values therefore do not depend on how the input is chunked::

    input          [ a ][ b ][ c ][ d ]         any chunking, or none (numpy, zarr, a file)
    block task       [h[  block 1  ]h]          reads block + halo h, mirrored outside the volume
    output         [ block 0 ][ block 1 ]       chunks = PredictOptions.block_shape

A process loads a model once (`ModelHandle`) and runs one block at a time through it: a GPU then holds
one block's activations, and on a CPU one block already keeps every core busy. The other threads of a
scheduler meanwhile read and decode the next blocks and store finished ones, so one task per block is the
whole pipeline and the scheduler's cost is one task per block.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import uuid
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import io
from .parallel import finished_tasks
from .paths import volume_file
from .pixel_size import ResampledSource, back_to_input, model_block, zoom_for
from .tiling import Block, mirror_plan, network_input, plan_blocks, read_mirrored, unfold

log = logging.getLogger(__name__)

#: Models kept loaded per process; more would hold memory for models no longer used.
CACHED_MODELS = 2


@dataclass(frozen=True)
class ModelHandle:
    """A reference to trained checkpoints that a process loads once and reuses for every block.

    It is small and picklable, so it travels in task graphs to worker processes; it names its checkpoint
    files with their sizes and modification times, so a checkpoint written anew at the same path is
    loaded anew.
    """

    checkpoints: tuple[str, ...]
    stamps: tuple[tuple[int, int], ...]
    device: str = "auto"
    tta: bool = False
    bf16: bool = True
    channels_last: bool = True
    compile: bool = False

    @classmethod
    def create(
        cls, checkpoints: str | os.PathLike | Sequence[str | os.PathLike], **options: Any
    ) -> ModelHandle:
        """A handle of one checkpoint, or of several (an ensemble: the mean of their probabilities)."""
        paths = [checkpoints] if isinstance(checkpoints, str | os.PathLike) else list(checkpoints)
        if not paths:
            raise ValueError("checkpoints: give at least one trained model (best.pt)")
        paths = [os.path.abspath(p) for p in paths]
        stamps = tuple(stamp for stamp in map(_stamp, paths) if stamp is not None)
        return cls(tuple(paths), stamps, **options)

    def load(self) -> tuple[Any, threading.Lock]:
        """This process's `inference.TilePredictor` of the checkpoints, and the lock that lets one block
        at a time through it."""
        with _LOADING:
            if self not in _LOADED:
                _LOADED[self] = (self._build(), threading.Lock())
                while len(_LOADED) > CACHED_MODELS:
                    _LOADED.popitem(last=False)
            else:
                _LOADED.move_to_end(self)
            return _LOADED[self]

    def _build(self) -> Any:
        from .checkpoint import load_models
        from .inference import TilePredictor, resolve_device

        device = resolve_device(self.device)
        model, normalization = load_models(self.checkpoints, device=device)
        return TilePredictor(
            model,
            normalization=normalization,
            device=device,
            tta=self.tta,
            bf16=self.bf16,
            channels_last=self.channels_last,
            compile=self.compile,
        )


_LOADED: collections.OrderedDict[ModelHandle, tuple[Any, threading.Lock]] = collections.OrderedDict()
_LOADING = threading.Lock()


def loaded_models() -> int:
    """How many models this process holds loaded (at most `CACHED_MODELS`)."""
    return len(_LOADED)


def _stat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:  # load_models names the missing file
        return None


@dataclass
class VolumeReference:
    """A volume file opened on first use in each process: a graph carries the path, not the open file
    (an open TIFF or HDF5 handle does not travel to worker processes)."""

    path: str
    _volume: io.Volume | None = field(default=None, repr=False, compare=False)

    @property
    def volume(self) -> io.Volume:
        if self._volume is None:
            self._volume = io.open_volume(self.path)
        return self._volume

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.volume.shape

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.volume.array[key]

    def __getstate__(self) -> dict:
        return {"path": self.path, "_volume": None}


def read_block_input(
    source: Any, block: Block, depth: int, name: str
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The network's input tile of ``block`` read from ``source`` and the crop of its output that is the
    block; a damaged chunk or NaN/inf becomes one `io.VolumeError` naming ``name``."""
    roi, crop = network_input(block.write_roi, depth)
    try:
        data = read_mirrored(source, roi)
    except Exception as err:
        raise io.VolumeError(
            f"{name}: cannot read chunk {block.grid_index} ({type(err).__name__}: {err}); the file is "
            "damaged: restore it from a copy or convert it again"
        ) from err
    return _checked(data, block, name), crop


def _checked(data: np.ndarray, block: Block, name: str) -> np.ndarray:
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise io.VolumeError(f"{name}: chunk {block.grid_index} contains NaN or inf; fix the input volume")
    return data


def apply_model(
    handle: ModelHandle, tile: np.ndarray, crop: tuple[slice, ...], block: Block, dtype: str
) -> np.ndarray:
    """The stored values (`inference.encode` as ``dtype``) of ``block`` from its input ``tile``."""
    predictor, lock = handle.load()
    try:
        with lock:
            return predictor.block(tile, crop, dtype)
    except Exception as err:
        raise RuntimeError(f"prediction of chunk {block.grid_index} failed: {err}") from err


def predict_block(
    handle: ModelHandle, source: Any, block: Block, dtype: str, name: str, depth: int
) -> np.ndarray:
    """One block task: read ``block``'s input box from ``source`` (for a network of ``depth``) and apply
    the model."""
    tile, crop = read_block_input(source, block, depth, name)
    return apply_model(handle, tile, crop, block, dtype)


def predict_resampled_block(
    handle: ModelHandle, source: ResampledSource, block: Block, dtype: str, name: str, depth: int
) -> np.ndarray:
    """A block task on the model's pixel grid (`unet_core.pixel_size`): the probabilities of the model-grid
    block around ``block``, resampled onto ``block``."""
    from .inference import encode

    computed = model_block(block, source)
    tile, crop = read_block_input(source, computed, depth, name)
    prob = apply_model(handle, tile, crop, computed, "float32")
    return encode(back_to_input(prob, block, computed, source), dtype)


def _predict_from_parts(
    handle: ModelHandle,
    parts: list,
    inner: tuple[slice, ...],
    take: list[np.ndarray],
    crop: tuple[slice, ...],
    block: Block,
    dtype: str,
    name: str,
) -> np.ndarray:
    """A block task over a dask input: its input chunks arrive as ``parts`` (nested as the chunk grid),
    ``inner`` cuts the box of real data out of them and ``take`` mirrors it (`tiling.mirror_plan`)."""
    tile = _checked(unfold(np.block(parts)[inner], take), block, name)
    return apply_model(handle, tile, crop, block, dtype)


def output_chunks(shape: Sequence[int], block_shape: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """Dask chunks of a volume of ``shape`` cut into ``block_shape`` blocks (smaller at the far ends)."""
    return tuple(
        tuple(min(b, s - o) for o in range(0, s, b)) for s, b in zip(shape, block_shape, strict=True)
    )


def block_tasks(
    handle: ModelHandle,
    source: Any,
    blocks: Sequence[Block],
    *,
    dtype: str,
    name: str,
    depth: int,
    source_key: str,
) -> tuple[dict[Hashable, Any], dict[int, Any], list]:
    """The tasks that compute ``blocks``: a graph of the shared inputs, each block's task by block id, and
    the dask collections the graph depends on.

    A numpy, zarr, file-backed or resampled ``source`` is one node of the graph (``source_key``) that every
    block reads its box from; a dask array's own chunks are the inputs of each block task instead."""
    import dask.array as da

    if isinstance(source, da.Array):
        return {}, _dask_input_tasks(handle, source, blocks, dtype, name, depth), [source]
    task = predict_resampled_block if isinstance(source, ResampledSource) else predict_block
    tasks = {b.block_id: (task, handle, source_key, b, dtype, name, depth) for b in blocks}
    return {source_key: source}, tasks, []


def _dask_input_tasks(
    handle: ModelHandle, source: Any, blocks: Sequence[Block], dtype: str, name: str, depth: int
) -> dict[int, Any]:
    starts = [np.concatenate([[0], np.cumsum(c)]) for c in source.chunks]
    tasks = {}
    for block in blocks:
        roi, crop = network_input(block.write_roi, depth)
        box, take = mirror_plan(roi, source.shape)
        # the input chunks overlapping the box, and the box's place inside them
        spans = [
            range(int(np.searchsorted(s, b.start, "right")) - 1, int(np.searchsorted(s, b.stop, "left")))
            for s, b in zip(starts, box, strict=True)
        ]
        inner = tuple(
            slice(b.start - int(s[r[0]]), b.stop - int(s[r[0]]))
            for s, b, r in zip(starts, box, spans, strict=True)
        )
        parts = _nested(
            [(source.name, *index) for index in itertools.product(*spans)], [len(r) for r in spans]
        )
        tasks[block.block_id] = (_predict_from_parts, handle, parts, inner, take, crop, block, dtype, name)
    return tasks


def _nested(keys: list, counts: list[int]) -> list:
    """A flat C-order list of chunk keys as nested lists of the chunk grid (what np.block takes)."""
    if len(counts) == 1:
        return list(keys)
    step = len(keys) // counts[0]
    return [_nested(keys[i * step : (i + 1) * step], counts[1:]) for i in range(counts[0])]


def as_volume(volume: Any) -> Any:
    """What `predict_dask` reads: a (Z, Y, X) numpy, zarr or dask array (a 2D image becomes one slice),
    an `io.Volume`, or a path that `io.open_volume` opens (read on first use in each worker)."""
    import dask.array as da

    if isinstance(volume, str | os.PathLike):
        reference = VolumeReference(os.fspath(volume))
        io.check_real(reference.volume, "input")
        return reference
    if isinstance(volume, io.Volume):
        io.check_real(volume, "input")
        return volume.array
    if not all(hasattr(volume, a) for a in ("shape", "dtype", "__getitem__")):
        volume = np.asarray(volume)
    if len(volume.shape) == 2:
        volume = volume[None]
    if len(volume.shape) != 3:
        raise ValueError(f"volume must be a 2D image or a (Z, Y, X) stack, got shape {tuple(volume.shape)}")
    if np.dtype(volume.dtype).kind not in "biuf":
        raise ValueError(f"volume must hold real numbers (integer or float), got dtype {volume.dtype}")
    if isinstance(volume, da.Array) and any(np.isnan(size) for sizes in volume.chunks for size in sizes):
        raise ValueError("volume: a dask array of unknown chunk sizes; call .compute_chunk_sizes() first")
    return volume


def predict_dask(
    checkpoints: str | os.PathLike | Sequence[str | os.PathLike],
    volume: Any,
    *,
    options: Any = None,
) -> Any:
    """Cell probabilities of ``volume`` as a lazy dask array, one chunk per output block.

    Parameters
    ----------
    checkpoints : path or sequence of paths
        One trained model (``best.pt``), or several, whose probabilities are averaged (an ensemble), as
        ``unet-core predict`` takes them.
    volume : array-like, dask array, `io.Volume` or path
        A (Z, Y, X) stack or a 2D image: numpy, zarr, dask (e.g. ``da.from_zarr``), or any file
        `io.open_volume` reads (TIFF, folder of slices, ``file.h5:/dataset``, Zarr, OME-Zarr). A file or
        `io.Volume` of another pixel size than the training data's is predicted at the training pixel
        size and resampled back (``options.match_pixel_size``, `unet_core.pixel_size`).
    options : `unet_core.predict.PredictOptions`, optional
        ``block_shape`` (the output's chunks), ``output_dtype``, test-time augmentation and device.

    Returns
    -------
    dask.array.Array
        Of the volume's (Z, Y, X) shape and ``options.output_dtype`` (uint8: probability x 255).
        Computing it gives what ``unet-core predict`` stores with the same options, value for value,
        whatever the chunking of the input. Each worker process loads the model once.

    Examples
    --------
    >>> prob = predict_dask("results/isbi2012/model/best.pt", "test-volume.tif")  # doctest: +SKIP
    >>> prob[5].compute()  # one slice: only the blocks it needs  # doctest: +SKIP
    >>> prob.to_zarr("prob.zarr")  # doctest: +SKIP
    """
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    from .predict import PredictOptions

    options = options or PredictOptions()
    handle = ModelHandle.create(checkpoints, **model_options(options))
    predictor, _ = handle.load()  # a checkpoint that cannot be used fails here, not inside a task
    source = as_volume(volume)
    shape = tuple(int(s) for s in source.shape)
    metadata = source.volume if isinstance(source, VolumeReference) else volume
    metadata = metadata if isinstance(metadata, io.Volume) else None  # arrays record no pixel size
    zoom = zoom_for(handle.checkpoints, metadata) if options.match_pixel_size and metadata else None
    if zoom is not None:
        source = ResampledSource(source, zoom)
    blocks = plan_blocks(shape, options.block_shape)
    output = f"unet-predict-{tokenize(handle, options, _source_token(source), shape)}"
    inputs, tasks, dependencies = block_tasks(
        handle,
        source,
        blocks,
        dtype=options.output_dtype,
        name=_volume_name(volume),
        depth=predictor.depth,
        source_key=f"{output}-source",
    )
    layer = dict(inputs)
    layer.update({(output, *b.grid_index): tasks[b.block_id] for b in blocks})
    graph = HighLevelGraph.from_collections(output, layer, dependencies=dependencies)
    chunks = output_chunks(shape, [min(b, s) for b, s in zip(options.block_shape, shape, strict=True)])
    return da.Array(graph, output, chunks=chunks, dtype=options.output_dtype)


def model_options(options: Any) -> dict[str, Any]:
    """The `ModelHandle` settings of a `PredictOptions`."""
    names = ("device", "tta", "bf16", "channels_last", "compile")
    return {n: getattr(options, n) for n in names}


def _volume_name(volume: Any) -> str:
    if isinstance(volume, str | os.PathLike):
        return os.fspath(volume)
    return getattr(volume, "path", None) or getattr(volume, "name", None) or "input volume"


def _source_token(source: Any) -> Any:
    """What names a source's content in the output's name: a dask array's name, a file's path and stamp,
    a numpy array's bytes (hashed by dask); any other array (zarr, h5py) gets a name of its own, since
    its name or path need not tell two contents apart."""
    import dask.array as da

    if isinstance(source, da.Array):
        return source.name
    if isinstance(source, ResampledSource):
        return source.zoom, _source_token(source.source)
    if isinstance(source, VolumeReference):
        return source.path, _stamp(volume_file(source.path))
    return source if isinstance(source, np.ndarray) else uuid.uuid4().hex


def _stamp(path: str) -> tuple[int, int] | None:
    stat = _stat_or_none(path)
    return None if stat is None else (stat.st_size, stat.st_mtime_ns)


def run_graph(
    graph: Mapping[Hashable, Any],
    keys: list,
    *,
    scheduler: str = "",
    threads: int = 3,
    on_done: Callable[[], None] | None = None,
) -> None:
    """Compute ``keys`` of ``graph``: on a dask.distributed cluster when ``scheduler`` names one (its
    address, or a scheduler file), else on ``threads`` threads of this process. ``on_done()`` runs after
    each finished key."""
    if scheduler:
        _run_distributed(graph, keys, scheduler, on_done)
        return
    from dask.threaded import get

    wanted = set(keys)
    # Ready tasks go to the threads in batches of up to 8: a hand-over per task slowed host-bound runs (a
    # model fast next to reading and writing; README, Benchmarks). Each thread still gets at least two
    # batches, so reading, computing and writing overlap from the start to the end.
    chunksize = max(1, min(8, len(keys) // (2 * threads)))
    with finished_tasks(lambda key: on_done is not None and key in wanted and on_done()):
        get(dict(graph), keys, num_workers=threads, chunksize=chunksize)


def _run_distributed(
    graph: Mapping[Hashable, Any], keys: list, scheduler: str, on_done: Callable[[], None] | None
) -> None:
    from distributed import as_completed

    client = connect(scheduler)
    try:
        futures = client.get(dict(graph), keys, sync=False)
        for future in as_completed(futures):
            future.result()  # raises the task's error here
            if on_done is not None:
                on_done()
    finally:
        client.close()


def connect(scheduler: str) -> Any:
    """A `distributed.Client` of a running cluster: a scheduler file (written by ``dask scheduler
    --scheduler-file`` or dask-jobqueue) or an address such as ``tcp://host:8786``."""
    try:
        from distributed import Client
    except ImportError as err:
        raise ValueError(
            f"--scheduler {scheduler}: dask.distributed is not installed; pip install distributed"
        ) from err
    try:
        if Path(scheduler).is_file():
            return Client(scheduler_file=scheduler, timeout=10)
        return Client(scheduler, timeout=10)
    except (OSError, TimeoutError, ValueError) as err:
        raise ValueError(
            f"--scheduler {scheduler}: no dask scheduler answers there ({err}); start one or give its "
            "address (tcp://host:port) or scheduler file"
        ) from err
