"""Images paired with their reference masks frame by frame, from two folders of 2D files.

Light-microscopy time-lapses come as one file per frame, with reference masks for some frames. Two
layouts are read:

- two plain folders of paired files (``images/01_t002.tif`` with ``masks/01_t002.tif``): the files pair
  by equal names;
- the Cell Tracking Challenge's own layout, a sequence folder with its reference folder
  (``01/t002.tif`` with ``01_GT/SEG/man_seg002.tif``; ``01_GT`` stands for its ``SEG``): the files pair
  by frame number, the last number in a file's name.

Frames without a reference are no training data and are left out, with a warning; the sequence folder
itself is a (T, Y, X) volume that ``unet-core predict`` segments whole. A mask without an image, two files
of one frame, or 3D reference slices are refused before anything is read; images and masks are read only
when their frames are asked for (`io.read_slices`), where a size that differs from the first frame's or a
colour image is refused with the file's name.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .slices import SLICE_SUFFIXES, _natural_key, _read_slice_file, open_slice_files
from .stack import Volume, VolumeError
from .zarr_store import ZARR_MARKERS

log = logging.getLogger(__name__)

#: The Cell Tracking Challenge's reference folder inside ``<sequence>_GT``.
CTC_SEG = "SEG"
#: The last run of digits of a file name's stem: its frame number.
_FRAME_NUMBER = re.compile(r"(\d+)\D*$")
#: Reference slices of 3D challenge data (``man_seg_<frame>_<slice>``), which are no 2D frames.
_CTC_3D = re.compile(r"man_seg_\d+_\d+$")


@dataclass(frozen=True)
class FramePairs:
    """The paired frames of an image folder and its mask folder, in frame order.

    Attributes
    ----------
    images, masks : Volume
        (T, Y, X) stacks of the paired files, read frame by frame on demand.
    names : tuple of str
        Each frame's name: its image file's stem.
    mask_files : tuple of pathlib.Path
        Each frame's mask file, for messages.
    """

    images: Volume
    masks: Volume
    names: tuple[str, ...]
    mask_files: tuple[Path, ...]


def is_frame_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder of 2D files rather than a Zarr store (which is a folder too)."""
    path = Path(path)
    return path.is_dir() and not any((path / marker).exists() for marker in ZARR_MARKERS)


def _slice_files(folder: Path) -> list[Path]:
    files = [f for f in folder.iterdir() if f.suffix.lower() in SLICE_SUFFIXES and not f.name.startswith(".")]
    return sorted(files, key=_natural_key)


def _mask_folder(folder: Path) -> Path:
    """``folder``, or its ``SEG`` when it is a challenge's ``<sequence>_GT`` folder without files of its
    own."""
    if not _slice_files(folder) and (folder / CTC_SEG).is_dir():
        log.info("%s: reading the reference masks of %s", folder, folder / CTC_SEG)
        return folder / CTC_SEG
    return folder


def _frame_keys(files: list[Path], by_name: bool) -> dict[str | int, Path]:
    """Each file by its frame: its stem (``by_name``) or the last number in it; two files of one frame
    or a name without a number are refused."""
    keys: dict[str | int, Path] = {}
    for path in files:
        if by_name:
            key: str | int = path.stem
        else:
            if _CTC_3D.match(path.stem):
                raise VolumeError(
                    f"{path}: a reference slice of a 3D sequence (man_seg_<frame>_<slice>); only 2D frames "
                    "are supported: give a 2D data set's SEG folder"
                )
            number = _FRAME_NUMBER.search(path.stem)
            if number is None:
                raise VolumeError(
                    f"{path}: no frame number in the name, and the image and mask folders do not hold the "
                    "same file names; name the files of a frame alike, or number them (t002.tif, "
                    "man_seg002.tif)"
                )
            key = int(number.group(1))
        if key in keys:
            raise VolumeError(
                f"{path}: frame {key} also has {keys[key].name} in {path.parent}; keep one file per frame"
            )
        keys[key] = path
    return keys


def _colour_image(path: Path) -> np.ndarray | None:
    """The file as a (Y, X, 3 or 4) array when it is an RGB(A) image, else None."""
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as handle:
                image = np.asarray(handle.convert("RGB")) if handle.mode in ("RGB", "RGBA", "P") else None
        else:
            import tifffile

            image = tifffile.imread(path)
    except Exception:  # unreadable: _read_slice_file has said so
        return None
    return image if image is not None and image.ndim == 3 and image.shape[-1] in (3, 4) else None


def _read_gray(path: Path) -> np.ndarray:
    """A 2D image; an RGB(A) image whose colour channels are equal (a gray image saved in colour) as its
    first channel, other colour images refused."""
    try:
        return _read_slice_file(path)
    except VolumeError:
        image = _colour_image(path)
        if image is None:
            raise
    if not (image[..., :1] == image[..., 1:3]).all():
        raise VolumeError(
            f"{path}: a colour (RGB) image whose channels differ; the network reads one gray channel: "
            "save the image as grayscale"
        ) from None
    return np.ascontiguousarray(image[..., 0])


def open_frame_pairs(images: str | Path, masks: str | Path) -> FramePairs:
    """Pair the images of one folder with the reference masks of another, frame by frame.

    Parameters
    ----------
    images : str or path
        A folder of 2D images, one per frame (PNG or TIFF): a challenge's sequence folder (``01``) or a
        plain one.
    masks : str or path
        A folder of 2D masks of some of those frames: the challenge's ``01_GT/SEG`` (or ``01_GT``) with
        ``man_segNNN.tif``, or a plain folder with the images' file names.

    Returns
    -------
    FramePairs
        The frames that have both, in the order of their names.

    Raises
    ------
    VolumeError
        If a folder holds no 2D files, a mask has no image, a frame has two files, a name holds no frame
        number where the folders' names differ, or a file is 3D reference data. RGB images whose channels
        are equal are read as gray, with a warning.
    """
    images, masks = Path(images), _mask_folder(Path(masks))
    image_files, mask_files = _slice_files(images), _slice_files(masks)
    for folder, files in ((images, image_files), (masks, mask_files)):
        if not files:
            raise VolumeError(
                f"{folder}: holds no PNG or TIFF files; point to a folder of 2D frames (images) and one "
                "of their masks"
            )
    by_name = {f.stem for f in mask_files} <= {f.stem for f in image_files}
    image_keys, mask_keys = _frame_keys(image_files, by_name), _frame_keys(mask_files, by_name)
    orphans = [path for key, path in mask_keys.items() if key not in image_keys]
    if orphans:
        raise VolumeError(
            f"{orphans[0]}: a mask without an image in {images} ({len(orphans)} in all); give the images of "
            "every masked frame, or remove the masks"
        )
    unmasked = [path.name for key, path in image_keys.items() if key not in mask_keys]
    if unmasked:
        log.warning(
            "%s: %d of %d frames have no mask in %s (%s): left out; predict the folder to segment them",
            images,
            len(unmasked),
            len(image_keys),
            masks,
            ", ".join(unmasked[:3]) + (", ..." if len(unmasked) > 3 else ""),
        )
    paired = [key for key in image_keys if key in mask_keys]  # in the images' natural order
    image_stack = open_slice_files([image_keys[k] for k in paired], images, read_file=_read_gray)
    if _colour_image(image_keys[paired[0]]) is not None:
        log.warning(
            "%s: RGB images, read as grayscale (their first channel; a frame whose channels differ is "
            "refused)",
            images,
        )
    if image_stack.dtype.itemsize > 1:
        log.warning(
            "%s: %s images, stored as they are; the network sees them scaled by the training frames' "
            "0.5 and 99.5 percentiles, as it does 8-bit ones",
            images,
            image_stack.dtype,
        )
    names = tuple(image_keys[k].stem for k in paired)
    log.info("%s and %s: %d paired frames, %s to %s", images, masks, len(paired), names[0], names[-1])
    ordered_masks = tuple(mask_keys[k] for k in paired)
    return FramePairs(image_stack, open_slice_files(ordered_masks, masks), names, ordered_masks)
