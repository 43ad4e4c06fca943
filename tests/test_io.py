import json
import os

import numpy as np
import pytest
import tifffile
import zarr

from unet_core import io


def test_ome_zarr_round_trip_keeps_shape_dtype_and_metadata(tmp_path):
    data = np.random.default_rng(0).integers(0, 4000, (3, 20, 30)).astype(np.uint16)
    path = tmp_path / "image.ome.zarr"
    io.write_image(path, data, chunks=(1, 8, 8), voxel_size=(50.0, 4.0, 4.0), unit="nanometer")
    volume = io.open_volume(path)
    assert volume.shape == data.shape and volume.dtype == np.uint16
    assert np.array_equal(np.asarray(volume.array[...]), data)
    assert volume.voxel_size == (50.0, 4.0, 4.0) and volume.unit == "nanometer"
    meta = json.loads((path / "zarr.json").read_text())
    assert meta["zarr_format"] == 3
    ome = meta["attributes"]["ome"]
    assert ome["version"] == "0.5"
    assert [a["name"] for a in ome["multiscales"][0]["axes"]] == ["z", "y", "x"]
    array_meta = json.loads((path / "0" / "zarr.json").read_text())
    assert array_meta["chunk_grid"]["configuration"]["chunk_shape"] == [1, 8, 8]
    assert array_meta["dimension_names"] == ["z", "y", "x"]  # NGFF 0.5: must match the axes
    assert any(c["name"] == "blosc" for c in array_meta["codecs"])


def test_tiff_stack_and_2d_image_are_read_as_zyx(tmp_path):
    stack = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    tifffile.imwrite(tmp_path / "slice.tif", stack[0])
    assert np.array_equal(io.read_volume(tmp_path / "stack.tif"), stack)
    assert io.read_volume(tmp_path / "slice.tif").shape == (1, 4, 5)


def test_plain_zarr_v2_array_and_hdf5_dataset(tmp_path):
    import h5py

    data = np.ones((2, 3, 4), dtype=np.float32)
    z = zarr.open_array(str(tmp_path / "v2.zarr"), mode="w", shape=data.shape, dtype="f4", zarr_format=2)
    z[...] = data
    assert np.array_equal(io.read_volume(tmp_path / "v2.zarr"), data)
    with h5py.File(tmp_path / "vol.h5", "w") as f:
        f["em/raw"] = data
    assert np.array_equal(io.read_volume(f"{tmp_path}/vol.h5:/em/raw"), data)
    with pytest.raises(io.VolumeError, match="no dataset 'em/missing'"):
        io.open_volume(f"{tmp_path}/vol.h5:em/missing")


@pytest.mark.parametrize(
    ("name", "match"), [("missing.tif", "no such file"), ("vol.h5", "needs the dataset path")]
)
def test_bad_paths_name_the_file_and_the_fix(tmp_path, name, match):
    if name.endswith(".h5"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(io.VolumeError, match=match):
        io.open_volume(tmp_path / name)


def test_corrupt_tiff_gets_a_clear_error(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(io.VolumeError, match="bad.tif: not a readable TIFF"):
        io.open_volume(tmp_path / "bad.tif")


def test_atomic_directory_leaves_old_output_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.ome.zarr"
    io.write_image(target, np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(RuntimeError, match="killed"):
        with io.atomic_directory(target) as tmp:
            (tmp / "partial").mkdir(parents=True)
            raise RuntimeError("killed")
    assert np.array_equal(io.read_volume(target), np.zeros((1, 4, 4), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["out.ome.zarr"]


def _imwrite(path, data, **kwargs):
    tifffile.imwrite(path, data, **({"photometric": "minisblack"} | kwargs))


def _stack(shape=(3, 4, 5), dtype=np.uint8):
    return np.arange(np.prod(shape)).reshape(shape).astype(dtype)


def test_tiff_is_read_lazily_with_numpy_indexing(tmp_path):
    stack = _stack((4, 3, 5), np.uint16)
    _imwrite(tmp_path / "stack.tif", stack)
    array = io.open_volume(tmp_path / "stack.tif").array
    assert isinstance(array, io.LazyStack) and array.shape == (4, 3, 5) and array.dtype == np.uint16
    for key in [2, -1, (1, 2), (slice(1, 3), 0), (slice(None, None, 2), ..., 1), ..., (slice(3, 1),)]:
        assert np.array_equal(array[key], stack[key]), key
    assert np.array_equal(np.asarray(array), stack)
    with pytest.raises(IndexError, match="slice index 4 out of range for 4 slices"):
        array[4]
    with pytest.raises(TypeError, match="index must be integers, slices or ..."):
        array[[0, 1]]


@pytest.mark.parametrize("kwargs", [{"compression": "zlib"}, {"byteorder": ">"}, {"tile": (16, 16)}])
def test_compressed_tiled_and_big_endian_tiffs_read_the_same(tmp_path, kwargs):
    stack = _stack((2, 16, 32), np.uint16)
    _imwrite(tmp_path / "s.tif", stack, **kwargs)
    volume = io.open_volume(tmp_path / "s.tif")
    assert volume.dtype == np.dtype("uint16") and volume.dtype.isnative
    assert np.array_equal(volume.array[1], stack[1]) and np.array_equal(
        io.read_volume(tmp_path / "s.tif"), stack
    )


def test_truncated_tiff_names_the_slice(tmp_path):
    _imwrite(tmp_path / "cut.tif", _stack((3, 10, 10)))
    offset = tifffile.TiffFile(tmp_path / "cut.tif").series[0].dataoffset
    os.truncate(tmp_path / "cut.tif", offset + 150)  # half of slice 1 (100 bytes per slice)
    with pytest.raises(io.VolumeError, match=r"cut.tif: file ends inside slice 1 \(truncated\?\)"):
        io.read_volume(tmp_path / "cut.tif")


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (8, 8, 3)], ids=["rgb stack", "rgb image"])
def test_rgb_tiff_is_refused(tmp_path, shape):
    _imwrite(tmp_path / "rgb.tif", np.zeros(shape, np.uint8), photometric="rgb")
    with pytest.raises(io.VolumeError, match="rgb.tif: expected a 2D image .* RGB and multi-channel"):
        io.open_volume(tmp_path / "rgb.tif")


def _save_png(path, image):
    from PIL import Image

    Image.fromarray(image).save(path)


def test_slice_folder_is_stacked_in_natural_order(tmp_path):
    stack = _stack((3, 4, 5))
    for z, name in enumerate(["slice1.png", "slice2.png", "slice10.png"]):
        _save_png(tmp_path / name, stack[z])
    (tmp_path / "notes.txt").write_text("ignored")
    volume = io.open_volume(tmp_path)
    assert isinstance(volume.array, io.LazyStack)
    assert np.array_equal(io.read_volume(tmp_path), stack)
    assert np.array_equal(volume.array[2], stack[2])


def test_tiff_slice_folder_and_single_png(tmp_path):
    stack = _stack((2, 4, 5), np.uint16)
    for z in range(2):
        _imwrite(tmp_path / f"z{z:03d}.tif", stack[z])
    assert np.array_equal(io.read_volume(tmp_path), stack)
    _save_png(tmp_path / "one.png", stack[0].astype(np.uint8))
    assert io.read_volume(tmp_path / "one.png").shape == (1, 4, 5)


@pytest.mark.parametrize(
    ("files", "match"),
    [
        ({"a1.png": (4, 5), "a2.png": (4, 6)}, r"a2.png: slice 1 is \(4, 6\) uint8 but a1.png is \(4, 5\)"),
        ({"a1.png": (4, 5, 3)}, r"a1.png: a slice of a folder must be one 2D grayscale image"),
        ({"readme.md": None}, "neither a Zarr store nor holds PNG or TIFF slices"),
        ({"a1.png": b"not a png"}, "a1.png: not a readable PNG"),
        ({"a1.tif": b"II*\x00junk"}, "a1.tif: not a readable TIFF"),
    ],
)
def test_bad_slice_folders_name_the_file(tmp_path, files, match):
    for name, content in files.items():
        if isinstance(content, tuple):
            _save_png(tmp_path / name, np.zeros(content, np.uint8))
        else:
            (tmp_path / name).write_bytes(content or b"")
    with pytest.raises(io.VolumeError, match=match):
        io.read_volume(tmp_path)


def test_zarr_v3_array_and_2d_arrays(tmp_path):
    import h5py

    data = _stack((2, 3, 4), np.float32)
    zarr.create_array(str(tmp_path / "v3.zarr"), data=data)
    assert np.array_equal(io.read_volume(tmp_path / "v3.zarr"), data)
    zarr.create_array(str(tmp_path / "flat.zarr"), data=data[0])
    with h5py.File(tmp_path / "flat.h5", "w") as f:
        f["img"] = data[0]
    for path in (tmp_path / "flat.zarr", f"{tmp_path}/flat.h5:/img"):
        volume = io.open_volume(path)
        assert volume.shape == (1, 3, 4) and np.array_equal(volume.array[0], data[0])


def _ome_zarr(path, data, axes):
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.create_array("s0", data=data)
    root.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [
                    {"name": n, "type": t} | ({"unit": "nanometer"} if t == "space" else {}) for n, t in axes
                ],
                "datasets": [
                    {
                        "path": "s0",
                        "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 40, 8, 8]}],
                    }
                ],
            }
        ],
    }


TCZYX = [("t", "time"), ("c", "channel"), ("z", "space"), ("y", "space"), ("x", "space")]


def test_ome_zarr_5d_image_with_one_channel_reads_level0_as_zyx(tmp_path):
    data = _stack((1, 1, 3, 4, 5), np.uint16)
    _ome_zarr(tmp_path / "img.ome.zarr", data, TCZYX)
    volume = io.open_volume(tmp_path / "img.ome.zarr")
    assert volume.shape == (3, 4, 5) and volume.voxel_size == (40.0, 8.0, 8.0) and volume.unit == "nanometer"
    assert np.array_equal(volume.array[1:3, 2], data[0, 0, 1:3, 2])


def test_ome_zarr_with_two_channels_is_refused(tmp_path):
    _ome_zarr(tmp_path / "two.ome.zarr", np.zeros((1, 2, 3, 4, 5), np.uint8), TCZYX)
    with pytest.raises(io.VolumeError, match=r"two.ome.zarr: expected .* shape \(1, 2, 3, 4, 5\)"):
        io.open_volume(tmp_path / "two.ome.zarr")


def test_zarr_group_without_multiscales_and_non_volume_files(tmp_path):
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w").create_array("a", data=np.zeros((2, 2, 2)))
    with pytest.raises(io.VolumeError, match="plain.zarr: a Zarr group without OME-NGFF 'multiscales'"):
        io.open_volume(tmp_path / "plain.zarr")
    (tmp_path / "volume.raw").write_bytes(b"\x00" * 8)
    with pytest.raises(io.VolumeError, match="volume.raw: not a TIFF, HDF5 or Zarr volume"):
        io.open_volume(tmp_path / "volume.raw")


def test_bad_hdf5_files_name_the_fix(tmp_path):
    with pytest.raises(io.VolumeError, match="none.h5: no such HDF5 file"):
        io.open_volume(f"{tmp_path}/none.h5:/raw")
    (tmp_path / "fake.h5").write_bytes(b"not hdf5")
    with pytest.raises(io.VolumeError, match="fake.h5: not a readable HDF5 file"):
        io.open_volume(f"{tmp_path}/fake.h5:/raw")


def test_compression_level_is_written_and_checked(tmp_path):
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    io.create_image(root, "a", shape=(2, 4, 4), dtype=np.uint8, chunks=(1, 4, 4), compression_level=1)
    codecs = json.loads((tmp_path / "s.zarr" / "a" / "0" / "zarr.json").read_text())["codecs"]
    assert [c["configuration"]["clevel"] for c in codecs if c["name"] == "blosc"] == [1]
    with pytest.raises(ValueError, match="compression level must be an integer from 0 to 9, got 10"):
        io.compressor(10)
