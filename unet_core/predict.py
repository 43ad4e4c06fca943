"""Overlap-tile prediction of cell-interior probability over whole volumes (Zarr in, OME-Zarr out).

Output chunks are the unit of work. Each block reads its input with the network's halo of real
neighbouring data (mirrored only outside the volume, `tiling.read_mirrored`), so the tiled result equals a
whole-image prediction. Reading and decoding the next blocks overlaps with compute on the current one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from tqdm import tqdm

from . import io
from .checkpoint import load_model
from .model import UNet
from .tiling import Block, Roi, network_input, plan_blocks, read_mirrored

log = logging.getLogger(__name__)

OUTPUT_DTYPES = ("uint8", "float16", "float32")


@dataclass(frozen=True)
class PredictOptions:
    """How to run inference; ``block_shape`` is also the output's chunk shape."""

    block_shape: tuple[int, int, int] = (1, 512, 512)
    output_dtype: str = "uint8"
    tta: bool = False
    device: str = "auto"
    bf16: bool = True
    prefetch: int = 2

    def __post_init__(self) -> None:
        if self.output_dtype not in OUTPUT_DTYPES:
            raise ValueError(f"output_dtype must be one of {OUTPUT_DTYPES}, got {self.output_dtype!r}")
        if len(self.block_shape) != 3 or min(self.block_shape) < 1:
            raise ValueError(f"block_shape must be 3 positive ints (z, y, x), got {self.block_shape}")


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TilePredictor:
    """Applies a model to (Z, Y, X) input tiles and returns cell probabilities of the output region."""

    def __init__(
        self,
        model: UNet,
        *,
        normalization: tuple[float, float] = (0.0, 255.0),
        device: torch.device | str = "cpu",
        tta: bool = False,
        bf16: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.depth = model.config.depth
        self.low, self.high = normalization
        self.tta = tta
        use_bf16 = bf16 and self.device.type == "cuda"
        self._autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()

    def region(self, source: Any, write_roi: Roi) -> np.ndarray:
        """Cell probability (float32) of ``write_roi`` (z, y, x) computed from ``source``."""
        roi, crop = network_input(write_roi, self.depth)
        return self.tiles(read_mirrored(source, roi))[crop]

    @torch.inference_mode()
    def tiles(self, tile: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of valid-size input slices (Z, Y, X) -> (Z, Y', X')."""
        x = torch.from_numpy(np.ascontiguousarray(tile, dtype=np.float32)).to(self.device)
        x = ((x - self.low) / (self.high - self.low))[:, None]
        transforms = _DIHEDRAL if self.tta else _DIHEDRAL[:1]
        total = None
        for forward, inverse in transforms:
            with self._autocast:
                logits = self.model(forward(x))
            prob = inverse(torch.softmax(logits.float(), dim=1)[:, 1])
            total = prob if total is None else total + prob
        return (total / len(transforms)).cpu().numpy()


# The 8 flips/rotations of the square and their inverses, on (..., Y, X) tensors.
_DIHEDRAL = [
    (
        lambda t, k=k, f=f: torch.rot90(t.flip(-1) if f else t, k, (-2, -1)),
        lambda t, k=k, f=f: (lambda u: u.flip(-1) if f else u)(torch.rot90(t, -k, (-2, -1))),
    )
    for f in (False, True)
    for k in range(4)
]


def predict_array(
    predictor: TilePredictor, image: np.ndarray, *, tile_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Predict a (Z, Y, X) array held in memory, whole slices at once or in ``tile_shape`` tiles."""
    image = np.asarray(image)
    zyx = image.shape
    block = (1, *(tile_shape or zyx[1:]))
    out = np.empty(zyx, dtype=np.float32)
    for blk in plan_blocks(zyx, block):
        out[blk.write_roi.to_slices()] = predictor.region(image, blk.write_roi)
    return out


def encode(prob: np.ndarray, dtype: str) -> np.ndarray:
    """Probabilities in [0, 1] as stored: uint8 0-255 (rounded) or a float type."""
    if dtype == "uint8":
        return np.rint(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)
    return prob.astype(dtype)


def predict_blocks(
    predictor: TilePredictor,
    source: Any,
    target: zarr.Array,
    blocks: list[Block],
    *,
    prefetch: int = 2,
) -> float:
    """Predict ``blocks`` of ``source`` into ``target``; returns output voxels per second.

    A reader thread pool keeps ``prefetch`` blocks decoded ahead of the model; a writer pool encodes
    and stores finished blocks while the next one computes.
    """
    start, voxels = time.perf_counter(), 0
    with ThreadPoolExecutor(max(prefetch, 1)) as readers, ThreadPoolExecutor(2) as writers:
        pending_writes: list[Future] = []
        bar = tqdm(total=len(blocks), unit="chunk", mininterval=2.0, desc="predict")
        for block, tile in _prefetched(readers, source, blocks, predictor.depth, prefetch):
            try:
                prob = predictor.tiles(tile.result())
            except Exception as err:
                raise RuntimeError(f"prediction of chunk {block.grid_index} failed: {err}") from err
            _, crop = network_input(block.write_roi, predictor.depth)
            out = encode(prob[crop], str(target.dtype))
            pending_writes.append(writers.submit(target.__setitem__, block.write_roi.to_slices(), out))
            voxels += out.size
            bar.update(1)
            bar.set_postfix_str(f"{voxels / (time.perf_counter() - start) / 1e6:.2f} Mvox/s")
        for write in pending_writes:
            write.result()
        bar.close()
    return voxels / max(time.perf_counter() - start, 1e-9)


def _prefetched(
    pool: ThreadPoolExecutor, source: Any, blocks: list[Block], depth: int, ahead: int
) -> Iterator[tuple[Block, Future]]:
    def read(block: Block) -> np.ndarray:
        return read_mirrored(source, network_input(block.write_roi, depth)[0])

    queue: list[tuple[Block, Future]] = []
    for block in blocks:
        queue.append((block, pool.submit(read, block)))
        if len(queue) > ahead:
            yield queue.pop(0)
    yield from queue


def predict_file(
    model_path: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    *,
    options: PredictOptions,
) -> float:
    """Predict a whole volume file into a new OME-Zarr of cell probability; returns voxels/s."""
    device = resolve_device(options.device)
    model, normalization = load_model(model_path, device=device)
    predictor = TilePredictor(
        model, normalization=normalization, device=device, tta=options.tta, bf16=options.bf16
    )
    volume = io.open_volume(input_path)
    blocks = plan_blocks(volume.shape, options.block_shape)
    log.info("predicting %s %s in %d chunks on %s", input_path, volume.shape, len(blocks), device)
    with io.atomic_directory(output_path) as tmp:
        root = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
        target = io.create_image(
            root,
            "",
            shape=volume.shape,
            dtype=options.output_dtype,
            chunks=options.block_shape,
            voxel_size=volume.voxel_size,
            unit=volume.unit,
        )
        root.attrs["unet_core"] = {
            "content": "probability of cell interior",
            "model": str(model_path),
        }
        rate = predict_blocks(predictor, volume.array, target, blocks, prefetch=options.prefetch)
    log.info("wrote %s at %.2f Mvox/s", output_path, rate / 1e6)
    return rate
