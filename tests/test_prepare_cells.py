"""Touching cells (instance labels) as the paper made them into training targets, and the store that records
them; checks of instance masks."""

import logging

import numpy as np
import pytest
import tifffile
import zarr

from unet_core import io
from unet_core.data.touching import separated_cells, separation_borders, split_cells
from unet_core.data.weights import weight_map
from unet_core.dataset import TrainingStore
from unet_core.prepare import PrepareConfig, prepare

from ._cells import touching_discs, write_frames


def test_separation_borders_are_the_pixels_where_cells_touch():
    labels = touching_discs()
    borders = separation_borders(labels)
    touching = (labels == 1) & (np.roll(labels, -1, axis=1) == 2)
    assert borders[touching].all() and borders[np.roll(touching, 1, axis=1)].all()  # both sides
    assert not borders[(labels > 0) & (np.abs(np.arange(60) - 30) > 3)].any()  # nothing away from it
    cells = separated_cells(labels)
    assert np.array_equal(cells, (labels > 0) & ~borders)
    assert np.unique(labels[cells]).tolist() == [1, 2]


def test_diagonal_contact_is_a_border_too():
    labels = np.array([[1, 0], [0, 2]])
    assert separation_borders(labels).tolist() == [[True, False], [False, True]]


def test_split_cells_lists_the_parts_of_each_id():
    labels = np.array([[3, 3, 0, 3, 9, 0, 9, 9]])
    assert split_cells(labels) == {3: [2, 1], 9: [2, 1]}
    assert split_cells(np.array([[2**40, 0, 2**40]])) == {2**40: [1, 1]}  # ids of any size
    assert split_cells(touching_discs()) == {}


def test_touching_instances_become_separated_targets_with_their_weights(tmp_path):
    masks = np.stack([touching_discs(), touching_discs(gap=4)])  # touching, then apart
    config = PrepareConfig(
        **write_frames(tmp_path, masks), train_slices=(0, 1), val_slices=(1, 2), test_slices=(2, 2)
    )
    prepare(tmp_path / "d.ome.zarr", config)
    store = TrainingStore.open(tmp_path / "d.ome.zarr")
    assert store.labels_kind == "instances" and store.frames == ("01_t000", "01_t001")
    assert np.array_equal(store.instances[...], masks)  # the reference ids, kept for SEG
    cells = store.cells[...]
    assert np.array_equal(cells[0] > 0, separated_cells(masks[0]))  # the gap between touching cells
    assert np.array_equal(cells[1] > 0, masks[1] > 0)  # cells apart lose nothing
    weights = store.weights[0]
    balance = tuple(store.weight_parameters["class_weights"])
    expected = weight_map(np.where(cells[0] > 0, masks[0], 0), class_weight=balance)
    assert np.allclose(weights, expected)
    gap = (masks[0] > 0) & (cells[0] == 0)
    assert weights[gap].min() > balance[0] + 7  # w0 exp(-(d1 + d2)^2 / 50), d1 + d2 = 2 to 3 px


def test_binary_store_records_what_it_always_did(tiny_store):
    record = TrainingStore.open(tiny_store).record
    assert set(record) == {"format_version", "source", "labels", "split", "weights"}
    assert TrainingStore.open(tiny_store).labels_kind == "binary"


def test_partial_frames_are_recorded_and_kept_out_of_training(tmp_path):
    masks = np.stack([touching_discs()] * 3)
    inputs = write_frames(tmp_path, masks)
    split = {"train_slices": (0, 2), "val_slices": (2, 3), "test_slices": (3, 3)}
    prepare(tmp_path / "d.ome.zarr", PrepareConfig(**inputs, **split, partial_slices=(2,)))
    assert TrainingStore.open(tmp_path / "d.ome.zarr").partial_slices == (2,)
    with pytest.raises(ValueError, match=r"partial slice 1 must be a slice of the stack outside train"):
        prepare(tmp_path / "e.ome.zarr", PrepareConfig(**inputs, **split, partial_slices=(1,)))
    assert not (tmp_path / "e.ome.zarr").exists()


def test_partial_frames_need_instance_labels():
    with pytest.raises(ValueError, match="partial_slices .* need labels_kind: instances"):
        PrepareConfig(partial_slices=(1,))


def test_a_binary_mask_given_as_instances_is_refused(tmp_path):
    masks = (np.stack([touching_discs(gap=4)] * 2) > 0).astype(np.uint8) * 255  # two cells, one value
    with pytest.raises(io.VolumeError, match=r"01_t000.tif: one label value \(255\) in 2 separate regions"):
        prepare(tmp_path / "d.ome.zarr", PrepareConfig(**write_frames(tmp_path, masks)))
    assert not (tmp_path / "d.ome.zarr").exists()


def test_an_id_in_two_parts_is_kept_with_a_warning(tmp_path, caplog):
    masks = np.stack([touching_discs(gap=4)] * 2)
    masks[1, 0, 0] = 2  # a stray pixel of cell 2, far from it
    with caplog.at_level(logging.WARNING):
        prepare(tmp_path / "d.ome.zarr", PrepareConfig(**write_frames(tmp_path, masks)))
    assert "01_t001.tif: cell 2 is in 2 parts" in caplog.text and "each kept as one cell" in caplog.text
    assert zarr.open_array(str(tmp_path / "d.ome.zarr/labels/instances/0"))[1, 0, 0] == 2


def test_masks_of_another_size_than_the_images_are_refused(tmp_path):
    inputs = write_frames(tmp_path, np.stack([touching_discs()] * 2))
    for k in range(2):
        tifffile.imwrite(tmp_path / "masks" / f"01_t{k:03d}.tif", touching_discs(shape=(40, 50)))
    with pytest.raises(io.VolumeError, match=r"masks: labels shape \(2, 40, 50\) differs from raw"):
        prepare(tmp_path / "d.ome.zarr", PrepareConfig(**inputs))
