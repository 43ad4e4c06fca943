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


def test_tiff_written_page_by_page_is_one_stack(tmp_path):
    stack = _stack((4, 6, 7))
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:  # tifffile makes each write a series
        for page in stack:
            tif.write(page, photometric="minisblack")
    assert np.array_equal(io.read_volume(tmp_path / "pages.tif"), stack)


def test_tiff_pages_of_different_shapes_are_refused(tmp_path):
    with tifffile.TiffWriter(tmp_path / "odd.tif") as tif:
        for rows in (6, 6, 7, 6):
            tif.write(np.zeros((rows, 5), np.uint8), photometric="minisblack")
    with pytest.raises(io.VolumeError, match=r"odd.tif: pages of different shapes .* one shape and type"):
        io.open_volume(tmp_path / "odd.tif")


@pytest.mark.parametrize("cut", [0.5, 0.97], ids=["pages lost", "last page cut"])
def test_truncated_compressed_tiff_is_refused_at_open(tmp_path, cut):
    path = tmp_path / "cut.tif"
    _imwrite(path, np.random.default_rng(0).integers(0, 2**16, (5, 20, 30), np.uint16), compression="zlib")
    os.truncate(path, int(path.stat().st_size * cut))
    with pytest.raises(io.VolumeError, match=r"cut.tif: the stack does not hold every page .* \(truncated"):
        io.open_volume(path)


def test_compressed_pyramid_tiff_reads_full_resolution(tmp_path):
    stack = _stack((3, 32, 32))
    with tifffile.TiffWriter(tmp_path / "pyramid.ome.tif", ome=True) as tif:
        options = {"photometric": "minisblack", "compression": "zlib"}
        tif.write(stack, subifds=1, metadata={"axes": "ZYX"}, **options)
        tif.write(stack[:, ::2, ::2], subfiletype=1, **options)
    assert np.array_equal(io.read_volume(tmp_path / "pyramid.ome.tif"), stack)


def test_imagej_stack_saved_as_frames_is_read_as_slices(tmp_path):
    stack = _stack((5, 6, 7))
    tifffile.imwrite(tmp_path / "frames.tif", stack, imagej=True, metadata={"axes": "TYX"})
    assert np.array_equal(io.read_volume(tmp_path / "frames.tif"), stack)


@pytest.mark.parametrize(
    ("kwargs", "voxel_size", "unit"),
    [
        (dict(imagej=True, resolution=(1 / 0.006, 1 / 0.006), metadata={"axes": "ZYX", "unit": "um",
              "spacing": 0.05}), (0.05, 0.006, 0.006), "micrometer"),
        # tifffile's resolution is (x, y) in pixels per unit
        (dict(imagej=True, resolution=(0.25, 0.2), metadata={"axes": "ZYX", "unit": "nm"}), (1.0, 5.0, 4.0),
         "nanometer"),
        (dict(ome=True, metadata={"axes": "ZYX", "PhysicalSizeX": 6.0, "PhysicalSizeXUnit": "nm",
              "PhysicalSizeY": 6.0, "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": 0.05}), (50.0, 6.0, 6.0),
         "nanometer"),  # z in OME's default unit, micrometres
        (dict(ome=True, metadata={"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}),
         (1.0, 0.5, 0.5), "micrometer"),
        # uncalibrated: an ImageJ stack without a unit, a plain TIFF's resolution (dots per inch)
        (dict(imagej=True, resolution=(2.0, 2.0), metadata={"axes": "ZYX"}), io.DEFAULT_VOXEL_SIZE, None),
        (dict(photometric="minisblack", resolution=(300, 300)), io.DEFAULT_VOXEL_SIZE, None),
    ],
    ids=["imagej um", "imagej nm", "ome nm", "ome default unit", "imagej none", "plain dpi"],
)  # fmt: skip
def test_tiff_calibration_gives_the_voxel_size(tmp_path, kwargs, voxel_size, unit):
    stack = _stack((3, 6, 7))
    tifffile.imwrite(tmp_path / "calibrated.tif", stack, **kwargs)
    volume = io.open_volume(tmp_path / "calibrated.tif")
    assert np.array_equal(io.read_volume(tmp_path / "calibrated.tif"), stack)
    assert volume.voxel_size == pytest.approx(voxel_size) and volume.unit == unit


def test_length_units_get_their_ome_ngff_names():
    units = ("nm", " µm ", "\\u00B5m", "micron", "Å", "nanometer", "pixel", "", None)
    expected = ["nanometer", "micrometer", "micrometer", "micrometer", "angstrom", "nanometer", "pixel"]
    assert [io.ngff_unit(u) for u in units] == [*expected, None, None]


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (8, 8, 3)], ids=["rgb stack", "rgb image"])
def test_rgb_tiff_is_refused(tmp_path, shape):
    _imwrite(tmp_path / "rgb.tif", np.zeros(shape, np.uint8), photometric="rgb")
    with pytest.raises(io.VolumeError, match="rgb.tif: expected a 2D image .* RGB and multi-channel"):
        io.open_volume(tmp_path / "rgb.tif")


@pytest.mark.parametrize("slices", [3, 4])
def test_slices_stored_as_planar_rgb_name_the_rewrite(tmp_path, slices):
    # tifffile.imwrite stores 3 or 4 planes as one planar RGB image unless told they are slices
    _imwrite(
        tmp_path / "few.tif", np.zeros((slices, 8, 8), np.uint8), photometric="rgb", planarconfig="separate"
    )
    with pytest.raises(io.VolumeError, match=f"few.tif: its {slices} planes .* photometric='minisblack'"):
        io.open_volume(tmp_path / "few.tif")
    _imwrite(tmp_path / "few.tif", np.zeros((slices, 8, 8), np.uint8), photometric="minisblack")
    assert io.open_volume(tmp_path / "few.tif").shape == (slices, 8, 8)


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


def test_palette_png_reads_gray_values_and_colour_palettes_are_refused(tmp_path):
    from PIL import Image

    ramp = np.repeat(np.arange(0, 60, 10, dtype=np.uint8)[None], 4, axis=0)
    Image.fromarray(ramp).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(tmp_path / "gray.png")
    assert np.array_equal(io.read_volume(tmp_path / "gray.png")[0], ramp)
    colour = np.zeros((4, 6, 3), np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(tmp_path / "red.png")
    with pytest.raises(io.VolumeError, match=r"red.png: .* 2D grayscale image, got shape \(4, 6, 3\)"):
        io.open_volume(tmp_path / "red.png")


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


def test_ome_zarr_channel_axis_without_type_is_refused(tmp_path):
    _ome_zarr(tmp_path / "cyx.ome.zarr", np.zeros((3, 4, 5), np.uint8), [("c", "channel"), *TCZYX[3:]])
    root = zarr.open_group(str(tmp_path / "cyx.ome.zarr"), mode="r+")
    for axes in ([{"name": "c"}, {"name": "y"}, {"name": "x"}], ["c", "y", "x"]):  # NGFF 0.4, 0.3
        root.attrs["ome"] = root.attrs["ome"] | {
            "multiscales": [root.attrs["ome"]["multiscales"][0] | {"axes": axes}]
        }
        with pytest.raises(io.VolumeError, match=r"cyx.ome.zarr: expected .* shape \(3, 4, 5\)"):
            io.open_volume(tmp_path / "cyx.ome.zarr")


def test_2d_ome_zarr_gets_a_3d_voxel_size(tmp_path):
    _ome_zarr(tmp_path / "yx.ome.zarr", _stack((4, 5)), TCZYX[3:])
    root = zarr.open_group(str(tmp_path / "yx.ome.zarr"), mode="r+")
    multiscale = root.attrs["ome"]["multiscales"][0]
    level0 = multiscale["datasets"][0] | {"coordinateTransformations": [{"type": "scale", "scale": [8, 8]}]}
    root.attrs["ome"] = root.attrs["ome"] | {"multiscales": [multiscale | {"datasets": [level0]}]}
    volume = io.open_volume(tmp_path / "yx.ome.zarr")
    assert volume.shape == (1, 4, 5) and volume.voxel_size == (io.DEFAULT_VOXEL_SIZE[0], 8.0, 8.0)


@pytest.mark.parametrize("damage", ["level 0 missing", "no datasets", "level 0 is a group"])
def test_ome_zarr_whose_metadata_names_no_array_is_refused(tmp_path, damage):
    _ome_zarr(tmp_path / "img.ome.zarr", np.zeros((1, 1, 3, 4, 5), np.uint8), TCZYX)
    root = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="r+")
    multiscale = root.attrs["ome"]["multiscales"][0]
    if damage == "no datasets":
        root.attrs["ome"] = root.attrs["ome"] | {"multiscales": [multiscale | {"datasets": []}]}
    else:
        del root["s0"]
        if damage == "level 0 is a group":
            root.create_group("s0")
    with pytest.raises(io.VolumeError, match="img.ome.zarr: its OME-NGFF metadata names no level-0 array"):
        io.open_volume(tmp_path / "img.ome.zarr")
    with pytest.raises(io.VolumeError, match="img.ome.zarr: no image 'labels' in the store"):
        io.open_volume(tmp_path / "img.ome.zarr", key="labels")


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


def test_hdf5_link_to_nothing_names_the_link(tmp_path):
    import h5py

    with h5py.File(tmp_path / "links.h5", "w") as f:
        f["raw"] = np.zeros((2, 3, 4), np.uint8)
        f["gone"] = h5py.ExternalLink(str(tmp_path / "moved.h5"), "/raw")
        f["dangling"] = h5py.SoftLink("/nothing")
    for key in ("gone", "dangling"):
        with pytest.raises(io.VolumeError, match=f"links.h5: cannot open '/{key}' .* a broken link"):
            io.open_volume(f"{tmp_path}/links.h5:/{key}")
    with pytest.raises(
        io.VolumeError, match=r"links.h5: no dataset '/none'; datasets in the file: \['raw'\]"
    ):
        io.open_volume(f"{tmp_path}/links.h5:/none")


def test_compression_level_is_written_and_checked(tmp_path):
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    io.create_image(root, "a", shape=(2, 4, 4), dtype=np.uint8, chunks=(1, 4, 4), compression_level=1)
    codecs = json.loads((tmp_path / "s.zarr" / "a" / "0" / "zarr.json").read_text())["codecs"]
    assert [c["configuration"]["clevel"] for c in codecs if c["name"] == "blosc"] == [1]
    with pytest.raises(ValueError, match="compression level must be an integer from 0 to 9, got 10"):
        io.compressor(10)
