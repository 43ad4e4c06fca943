import doctest

import numpy as np
import pytest
import tifffile
import zarr

from unet_core import dataset, io
from unet_core.dataset import Split, TrainingStore

LEVEL0 = {"raw": "0", "cells": "labels/cells/0", "instances": "labels/instances/0", "weights": "weights/0"}


def test_the_store_is_laid_out_as_ngff_readers_and_older_stores_have_it(tiny_store):
    store = TrainingStore.open(tiny_store)
    root = zarr.open_group(str(tiny_store), mode="r")
    for name, key in LEVEL0.items():
        assert np.array_equal(getattr(store, name)[...], root[key][...]), name
    assert "image-label" in dict(root["labels/cells"].attrs)["ome"]
    assert dict(root["labels"].attrs)["ome"]["labels"] == ["cells", "instances"]
    record = dict(root.attrs)["unet_core"]
    assert record["format_version"] == 1 and record["source"] == record["labels"] == "synthetic"
    assert record["split"] == {"train": [0, 3], "val": [3, 4], "test": [4, 5]}
    assert store.split == Split(train=(0, 3), val=(3, 4), test=(4, 5))
    assert store.weight_parameters == record["weights"]
    assert store.weight_parameters["w0"] == 10.0 and len(store.weight_parameters["class_weights"]) == 2


def test_create_makes_the_arrays_in_their_types_and_open_reads_the_record(tmp_path):
    root = zarr.open_group(str(tmp_path / "s.ome.zarr"), mode="w", zarr_format=3)
    split = Split(train=(0, 2), val=(2, 3), test=(3, 3))
    arrays = TrainingStore.create(
        root,
        raw_dtype=np.dtype(np.uint16),
        shuffle={"raw": "shuffle", "cells": "bitshuffle", "instances": "noshuffle", "weights": "noshuffle"},
        source="raw.tif",
        labels="labels.tif",
        split=split,
        w0=3.0,
        sigma=2.0,
        class_weights=(1.5, 0.75),
        shape=(3, 8, 8),
        chunks=(1, 8, 8),
    )
    assert {name: a.dtype for name, a in arrays.items()} == {
        "raw": np.uint16, "cells": np.uint8, "instances": np.int32, "weights": np.float32,
    }  # fmt: skip
    store = TrainingStore.open(tmp_path / "s.ome.zarr")
    assert store.split == split and store.raw.shape == store.weights.shape == (3, 8, 8)
    assert store.weight_parameters == {"w0": 3.0, "sigma": 2.0, "class_weights": [1.5, 0.75]}


def test_open_names_the_path_and_the_fix_for_what_is_not_a_prepared_store(tmp_path, tiny_store):
    tifffile.imwrite(tmp_path / "raw.tif", np.zeros((2, 4, 4), np.uint8))
    io.write_image(tmp_path / "image.ome.zarr", np.zeros((2, 4, 4), np.uint8))
    for path in (tmp_path / "raw.tif", tmp_path / "image.ome.zarr"):
        with pytest.raises(
            ValueError, match=f"{path.name}: not a prepared training store .* `unet-core prepare`"
        ):
            TrainingStore.open(path)
    root = zarr.open_group(str(tmp_path / "copy.ome.zarr"), mode="w", zarr_format=3)
    for key in LEVEL0.values():
        root.create_array(key, data=zarr.open_group(str(tiny_store), mode="r")[key][...])
    with pytest.raises(ValueError, match="copy.ome.zarr: not a prepared .* records no train/val/test split"):
        TrainingStore.open(tmp_path / "copy.ome.zarr")


def test_find_takes_any_group_with_cell_labels(tmp_path, tiny_store):
    tifffile.imwrite(tmp_path / "labels.tif", np.zeros((2, 4, 4), np.uint8))
    io.write_image(tmp_path / "image.ome.zarr", np.zeros((2, 4, 4), np.uint8))
    assert TrainingStore.find(tmp_path / "labels.tif") is None
    assert TrainingStore.find(tmp_path / "image.ome.zarr") is None
    assert TrainingStore.find(tiny_store).split.val == (3, 4)
    root = zarr.open_group(str(tmp_path / "gt.ome.zarr"), mode="w", zarr_format=3)
    root.create_group("labels/cells").create_array("0", data=np.zeros((2, 4, 4), np.uint8))
    found = TrainingStore.find(tmp_path / "gt.ome.zarr")
    assert found.split is None and found.cells.shape == (2, 4, 4)


def test_docstring_examples():
    failures, tried = doctest.testmod(dataset)
    assert tried > 0 and failures == 0
