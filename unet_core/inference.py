"""The network applied to tiles held in memory: the device, test-time augmentation, and how probabilities
are stored.

`TilePredictor` turns (Z, Y, X) input tiles into cell probabilities of their valid output region;
`predict_array` covers a whole array with it. `encode` and `decode` convert between float probabilities
and the values a prediction stores (uint8 0-255 or a float type). `unet_core.predict` streams volumes
through these; training validates with them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .model import Ensemble, UNet, bf16_autocast, memory_format
from .tiling import Roi, network_input, plan_blocks, read_mirrored


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; a device this machine lacks is a ValueError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(
            f"device {device!r} is not a torch device; use auto, cpu, cuda or cuda:<index>"
        ) from err
    gpus = torch.cuda.device_count() if resolved.type == "cuda" else 0
    if resolved.type == "cuda" and (resolved.index or 0) >= gpus:
        raise ValueError(f"device {device!r}: torch sees {gpus} CUDA GPU(s) here; use auto or cpu")
    return resolved


class TilePredictor:
    """Applies a model to (Z, Y, X) input tiles and returns cell probabilities of the output region."""

    def __init__(
        self,
        model: UNet | Ensemble,
        *,
        normalization: tuple[float, float] = (0.0, 255.0),
        device: torch.device | str = "cpu",
        tta: bool = False,
        bf16: bool = True,
        channels_last: bool = True,
        compile: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.memory_format = memory_format(channels_last)
        self.model = model.to(self.device, memory_format=self.memory_format).eval()
        # torch.compile pays off on long runs; border tiles of other shapes trigger recompilations.
        self.network = torch.compile(self.model) if compile else self.model
        self.depth = model.config.depth
        self.low, self.high = normalization
        self.tta = tta
        self._autocast = bf16_autocast(self.device, bf16)

    def region(self, source: Any, write_roi: Roi) -> np.ndarray:
        """Cell probability (float32) of ``write_roi`` (z, y, x) computed from ``source``."""
        roi, crop = network_input(write_roi, self.depth)
        return self.tiles(read_mirrored(source, roi))[crop]

    @torch.inference_mode()
    def tiles(self, tile: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of valid-size input slices (Z, Y, X) -> (Z, Y', X')."""
        return self._probabilities(tile).cpu().numpy()

    @torch.inference_mode()
    def block(self, tile: np.ndarray, crop: tuple[slice, ...], dtype: str) -> np.ndarray:
        """The stored values (`encode`) of ``crop`` of the probabilities of ``tile``.

        Cropping and encoding on the device keeps the host's share of each block small: the input
        crosses the bus in its own dtype and uint8 output as one byte per voxel, not four."""
        return encode(self._probabilities(tile)[crop], dtype).cpu().numpy()

    def _probabilities(self, tile: np.ndarray) -> torch.Tensor:
        if tile.dtype.kind == "u" and tile.dtype.itemsize > 1:  # torch has no arithmetic on these
            tile = tile.astype(np.float32)
        tile = np.ascontiguousarray(tile, dtype=tile.dtype.newbyteorder("="))  # torch takes native order only
        x = torch.from_numpy(tile).to(self.device).float()
        x = ((x - self.low) / (self.high - self.low))[:, None].contiguous(memory_format=self.memory_format)
        transforms = _DIHEDRAL if self.tta else _DIHEDRAL[:1]
        total = None
        for forward, inverse in transforms:
            with self._autocast:
                logits = self.network(forward(x))
            prob = inverse(torch.softmax(logits.float(), dim=1)[:, 1])
            total = prob if total is None else total + prob
        return total / len(transforms)


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


def encode(prob: np.ndarray | torch.Tensor, dtype: str) -> np.ndarray | torch.Tensor:
    """Float32 probabilities in [0, 1] as stored: uint8 0-255 (rounded half to even) or a float type.

    Tensors are encoded where they are (the model's device); arrays as arrays, by the same arithmetic."""
    if isinstance(prob, np.ndarray):
        return encode(torch.from_numpy(prob), dtype).numpy()
    if dtype == "uint8":
        return torch.round(prob.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    return prob.to(getattr(torch, dtype))


def decode(values: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Stored probabilities as ``dtype`` in [0, 1], the inverse of `encode`.

    Parameters
    ----------
    values : ndarray
        Stored values: an integer type from 0 to its maximum (uint8 0-255 as `encode` writes), or floats.
    dtype : numpy float type, optional
        The type to compute and return in. Scoring wants float64: in float32, uint8 51 (exactly 0.2)
        reads as 0.2000000030, above a float64 threshold of 0.2.

    Returns
    -------
    ndarray of ``dtype``
        Integers divided by their type's maximum; floats cast.

    Examples
    --------
    >>> decode(np.array([0, 51, 255], np.uint8), np.float64).tolist()
    [0.0, 0.2, 1.0]
    """
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(dtype) / dtype(np.iinfo(values.dtype).max)
    return values.astype(dtype)
