import numpy as np
import pytest
import tifffile
import zarr

from unet_core import io
from unet_core.dataset import open_store, read_split
from unet_core.prepare import PrepareConfig, make_split, prepare


def test_synthetic_store_has_every_part(tiny_store):
    root = open_store(tiny_store)
    raw, cells = root["0"], root["labels/cells/0"]
    assert raw.shape == cells.shape == root["weights/0"].shape == (5, 64, 64)
    assert set(np.unique(cells[...])) == {0, 255}
    instances = root["labels/instances/0"][...]
    assert ((instances > 0) == (cells[...] > 0)).all()
    assert root["weights/0"][...].min() > 0
    split = read_split(root)
    assert (split.train, split.val, split.test) == ((0, 3), (3, 4), (4, 5))
    assert io.open_volume(tiny_store).voxel_size == (50.0, 4.0, 4.0)
    assert root["labels"].attrs["ome"]["labels"] == ["cells", "instances"]


def test_tiff_stack_with_isbi_polarity(tmp_path):
    raw = np.random.default_rng(0).integers(0, 255, (5, 40, 40)).astype(np.uint8)
    labels = np.full(raw.shape, 255, np.uint8)
    labels[:, 20, :] = 0
    tifffile.imwrite(tmp_path / "raw.tif", raw)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    prepare(
        tmp_path / "d.ome.zarr",
        PrepareConfig(raw=str(tmp_path / "raw.tif"), labels=str(tmp_path / "labels.tif")),
    )
    root = zarr.open_group(str(tmp_path / "d.ome.zarr"), mode="r")
    assert np.array_equal(root["0"][...], raw)
    assert read_split(root).train == (0, 4) and read_split(root).val == (4, 5)
    assert int(root["labels/instances/0"][0].max()) == 2  # the membrane row cuts each slice in two


def test_default_split_is_80_20():
    split = make_split(PrepareConfig(), 20, "x")
    assert (split.train, split.val, split.test) == ((0, 16), (16, 20), (20, 20))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train_slices": (0, 12), "val_slices": (10, 20)}, "train_slices and val_slices overlap"),
        ({"train_slices": (0, 25)}, r"train_slices \[0, 25\] must satisfy"),
    ],
)
def test_bad_split_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_split(PrepareConfig(**kwargs), 20, "stack.tif")


def test_bad_inputs_name_the_file_and_write_nothing(tmp_path):
    raw = np.zeros((2, 10, 10), np.uint8)
    tifffile.imwrite(tmp_path / "raw.tif", raw)
    tifffile.imwrite(tmp_path / "short.tif", np.zeros((1, 10, 10), np.uint8))
    tifffile.imwrite(tmp_path / "gray.tif", np.arange(200, dtype=np.uint8).reshape(2, 10, 10))
    cases = [
        ("short.tif", "short.tif: labels shape"),
        ("gray.tif", "gray.tif: binary labels expected"),
        ("missing.tif", "missing.tif: no such file"),
    ]
    for labels, match in cases:
        cfg = PrepareConfig(raw=str(tmp_path / "raw.tif"), labels=str(tmp_path / labels))
        with pytest.raises(ValueError, match=match):
            prepare(tmp_path / "out.ome.zarr", cfg)
        assert not (tmp_path / "out.ome.zarr").exists()


def test_raw_without_labels_is_refused():
    with pytest.raises(ValueError, match="give both raw and labels"):
        PrepareConfig(raw="a.tif")
