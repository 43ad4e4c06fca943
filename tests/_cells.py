"""Touching cells as small instance masks and frames on disk, for the tests of the cell (SEG) path."""

from pathlib import Path

import numpy as np
import tifffile


def touching_discs(shape=(40, 60), radius=12, gap=-4, centre=None):
    """Two discs of ids 1 and 2 side by side; ``gap`` < 0 makes them overlap, and the overlap goes to the
    right one: they touch along a line."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = centre or (shape[0] // 2, shape[1] // 2)
    left = (yy - cy) ** 2 + (xx - (cx - radius - gap / 2)) ** 2 < radius**2
    right = (yy - cy) ** 2 + (xx - (cx + radius + gap / 2)) ** 2 < radius**2
    labels = np.zeros(shape, np.uint16)
    labels[left], labels[right] = 1, 2
    return labels


def cell_masks(n=4, shape=(64, 96)):
    """``n`` frames: two touching cells that move one pixel per frame, and a third cell apart."""
    masks = np.zeros((n, *shape), np.uint16)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for z in range(n):
        masks[z] = touching_discs(shape, radius=14, centre=(30, 40 + z))
        masks[z][(yy - 48) ** 2 + (xx - 82) ** 2 < 81] = 3
    return masks


def write_frames(folder: Path, masks: np.ndarray, *, seed: int = 0) -> dict[str, str]:
    """Textured cells on flat glass (``images/``) and their masks (``masks/``) as 2D TIFFs in ``folder``;
    returns the prepare options that read them."""
    rng = np.random.default_rng(seed)
    for name in ("images", "masks"):
        (folder / name).mkdir(parents=True)
    for z, mask in enumerate(masks):
        image = (60 + 80 * (mask > 0) + rng.integers(0, 40, mask.shape) * (1 + (mask > 0))).astype(np.uint8)
        tifffile.imwrite(folder / "images" / f"01_t{z:03d}.tif", image, photometric="minisblack")
        tifffile.imwrite(folder / "masks" / f"01_t{z:03d}.tif", mask, photometric="minisblack")
    return {"raw": str(folder / "images"), "labels": str(folder / "masks"), "labels_kind": "instances"}
