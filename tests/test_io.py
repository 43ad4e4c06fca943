import json

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
