"""The network inside an exported package: P(cell interior) at the input's size, and its tiling geometry.

The U-Net's valid convolutions lose ``context(depth)`` pixels per axis, and its max-pool grid makes an
output pixel's value depend on where its tile starts modulo ``2**depth``. `CellProbability` wraps the
trained U-Net(s) so that every tile a halo-aware consumer (bioimageio.core, ilastik, deepImageJ) cuts
computes what ``unet-core predict`` computes for the same pixels::

    tile of side T = MIN + k * 2**d (the consumer pads the image by HALO, mirrored)
    |<- HALO ->|<------- kept: T - 2 * HALO, a multiple of 2**d ------->|<- HALO ->|
       zeros                 P(cell) of the U-Net(s)                        zeros

The pixels of one 2**d-wide group of the pooling grid depend on ``context/2`` pixels before the group and
``context/2 + 4`` after it (measured: `tests/test_export.py`), hence ``HALO = context/2 + 4``. The kept
part of a tile is a multiple of ``2**d``, so consecutive tiles share one pooling grid, and the wrapper pads
its input by ``2**d - 4`` pixels in front (values that reach no kept pixel) to put the grid where
``unet-core predict`` has it: kept pixels start on it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..model import UNet, UNetConfig, context


def halo(depth: int) -> int:
    """Pixels per side that a consumer pads (or overlaps) and crops: ``context(depth) // 2 + 4``."""
    return context(depth) // 2 + 4


def min_input(depth: int) -> int:
    """Smallest tile side; valid sides are ``min_input(depth) + k * 2**depth``, k = 0, 1, ..."""
    return context(depth) + 8 + 2**depth


class CellProbability(nn.Module):
    """P(cell interior) of one trained U-Net, or the mean of several, with the input's (Y, X) size.

    ``forward`` takes normalised tiles (N, 1, T, T') with valid sides (`min_input` plus a multiple of
    ``2**depth``) and returns (N, 1, T, T'): the probability inside, zero in the `halo` that consumers
    crop. Exported packages hold this class's source after `unet_core.model`'s, so it uses only names
    that module defines.

    Parameters
    ----------
    members : list of dict
        `UNetConfig` fields of each U-Net (one for a single model); they share the depth.
    """

    def __init__(self, members: list[dict]) -> None:
        super().__init__()
        self.members = nn.ModuleList([UNet(UNetConfig(**member)) for member in members])
        depth = self.members[0].config.depth
        self.halo = context(depth) // 2 + 4
        self.pad = [2**depth - 4, 0, 2**depth - 4, 0]  # x before, x after, y before, y after
        # The network's output spans the tile's pixels [context/2 - 2**d + 4, T - context/2): 2**d
        # before the kept ones and 4 after them.
        self.skip = 2**depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(x, self.pad)
        probability = torch.stack([torch.softmax(m(x), dim=1)[:, 1:2] for m in self.members]).mean(dim=0)
        kept = probability[..., self.skip : -4, self.skip : -4]
        return nn.functional.pad(kept, [self.halo] * 4)
