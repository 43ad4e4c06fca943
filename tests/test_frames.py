"""Images paired with their masks frame by frame: plain folders and the Cell Tracking Challenge's layout."""

import logging

import numpy as np
import pytest
import tifffile
from PIL import Image

from unet_core import io


def _frames(n=4, shape=(12, 10), seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n, *shape)).astype(np.uint8)
    masks = np.zeros((n, *shape), np.uint16)
    masks[:, 2:6, 2:6], masks[:, 6:10, 2:6] = 1, 2
    return images, masks


def _write(folder, names, stack):
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in zip(names, stack, strict=True):
        tifffile.imwrite(folder / name, image, photometric="minisblack")


def test_plain_folders_pair_by_name_and_leave_unmasked_frames_out(tmp_path, caplog):
    images, masks = _frames(4)
    _write(tmp_path / "images", ["01_t2.tif", "01_t10.tif", "01_t5.tif", "01_t7.tif"], images)
    _write(tmp_path / "masks", ["01_t10.tif", "01_t2.tif", "01_t5.tif"], masks[:3])
    with caplog.at_level(logging.WARNING):
        pairs = io.open_frame_pairs(tmp_path / "images", tmp_path / "masks")
    assert pairs.names == ("01_t2", "01_t5", "01_t10")  # natural order, t7 has no mask
    assert "1 of 4 frames have no mask" in caplog.text and "01_t7.tif" in caplog.text
    assert np.array_equal(pairs.images.array[...], images[[0, 2, 1]])
    assert np.array_equal(pairs.masks.array[...], masks[[1, 2, 0]])
    assert [f.name for f in pairs.mask_files] == ["01_t2.tif", "01_t5.tif", "01_t10.tif"]


@pytest.mark.parametrize("labels", ["01_GT/SEG", "01_GT"])
def test_challenge_layout_pairs_by_frame_number(tmp_path, labels):
    images, masks = _frames(5)
    _write(tmp_path / "01", [f"t{t:03d}.tif" for t in range(5)], images)
    _write(tmp_path / "01_GT" / "SEG", ["man_seg001.tif", "man_seg003.tif"], masks[[1, 3]])
    (tmp_path / "01_GT" / "TRA").mkdir()  # the tracking reference beside it is not read
    pairs = io.open_frame_pairs(tmp_path / "01", tmp_path / labels)
    assert pairs.names == ("t001", "t003")
    assert np.array_equal(pairs.images.array[...], images[[1, 3]])
    assert np.array_equal(pairs.masks.array[...], masks[[1, 3]])
    # the whole time-lapse, frames with and without reference, is one (T, Y, X) volume to predict
    assert io.open_volume(tmp_path / "01").shape == (5, 12, 10)


@pytest.mark.parametrize(
    ("images", "masks", "match"),
    [
        (["t001.tif"], ["man_seg001.tif", "man_seg002.tif"], r"man_seg002.tif: a mask without an image"),
        (["t1.tif", "t001.tif"], ["man_seg001.tif"], r"frame 1 also has t1.tif in .*; keep one file"),
        (["a.tif", "b.tif"], ["c.tif"], r"a.tif: no frame number in the name"),
        (["t001.tif"], ["man_seg_001_002.tif"], r"a reference slice of a 3D sequence"),
        (["t001.tif"], [], r"holds no PNG or TIFF files"),
    ],
)
def test_unpairable_folders_name_the_file_and_the_fix(tmp_path, images, masks, match):
    stack, labels = _frames(max(len(images), len(masks), 1))
    _write(tmp_path / "img", images, stack[: len(images)])
    _write(tmp_path / "seg", masks, labels[: len(masks)])
    with pytest.raises(io.VolumeError, match=match):
        io.open_frame_pairs(tmp_path / "img", tmp_path / "seg")


def test_gray_rgb_images_are_read_as_gray_with_a_warning(tmp_path, caplog):
    images, masks = _frames(2)
    (tmp_path / "images").mkdir()
    for k, image in enumerate(images):
        Image.fromarray(np.repeat(image[..., None], 3, axis=-1)).save(tmp_path / "images" / f"f{k}.png")
    _write(tmp_path / "masks", ["f0.tif", "f1.tif"], masks)
    with caplog.at_level(logging.WARNING):
        pairs = io.open_frame_pairs(tmp_path / "images", tmp_path / "masks")
    assert "RGB images, read as grayscale" in caplog.text
    assert np.array_equal(pairs.images.array[...], images)


def test_colour_images_are_refused_naming_the_file(tmp_path):
    images, masks = _frames(2)
    colour = np.stack([images[1], images[1] // 2, images[1]], axis=-1)
    _write(tmp_path / "images", ["f0.tif", "f1.tif"], [images[0], colour])
    _write(tmp_path / "masks", ["f0.tif", "f1.tif"], masks)
    pairs = io.open_frame_pairs(tmp_path / "images", tmp_path / "masks")
    with pytest.raises(io.VolumeError, match=r"f1.tif: a colour \(RGB\) image whose channels differ"):
        io.read_slices(pairs.images, 0, 2)


def test_16_bit_images_are_kept_with_a_warning(tmp_path, caplog):
    images, masks = _frames(2)
    _write(tmp_path / "images", ["f0.tif", "f1.tif"], images.astype(np.uint16) * 200)
    _write(tmp_path / "masks", ["f0.tif", "f1.tif"], masks)
    with caplog.at_level(logging.WARNING):
        pairs = io.open_frame_pairs(tmp_path / "images", tmp_path / "masks")
    assert pairs.images.dtype == np.uint16 and "uint16 images, stored as they are" in caplog.text


def test_a_frame_of_another_size_is_refused_naming_it(tmp_path):
    images, masks = _frames(2)
    _write(tmp_path / "images", ["f0.tif", "f1.tif"], [images[0], images[1][:, :8]])
    _write(tmp_path / "masks", ["f0.tif", "f1.tif"], masks)
    pairs = io.open_frame_pairs(tmp_path / "images", tmp_path / "masks")
    with pytest.raises(io.VolumeError, match=r"f1.tif: slice 1 is \(12, 8\) uint8 but f0.tif is \(12, 10\)"):
        io.read_slices(pairs.images, 0, 2)


def test_zarr_stores_are_no_frame_folders(tmp_path):
    io.write_image(tmp_path / "a.ome.zarr", np.zeros((1, 4, 4), np.uint8))
    (tmp_path / "frames").mkdir()
    assert io.is_frame_folder(tmp_path / "frames") and not io.is_frame_folder(tmp_path / "a.ome.zarr")
    assert not io.is_frame_folder(tmp_path / "missing")
