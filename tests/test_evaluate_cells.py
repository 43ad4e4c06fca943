"""Evaluation of instance labels: the Cell Tracking Challenge's SEG, foreground IoU and Dice, per frame."""

import math

import numpy as np
import pandas as pd
import pytest

from unet_core import io
from unet_core.dataset import TrainingStore
from unet_core.evaluate import evaluate_files
from unet_core.evaluate_cells import cell_scores, classical_cells

from ._cells import cell_masks


def _outputs(tmp_path, store_path, *, probability=None, segmentation=None):
    """The prediction (default: the target's cells as P = 0.95, background 0.05) and a segmentation of the
    store, written as a run would."""
    store = TrainingStore.open(store_path)
    cells = store.cells[...] > 0
    prob = np.where(cells, 0.95, 0.05).astype(np.float32) if probability is None else probability
    io.write_image(tmp_path / "pred.ome.zarr", prob)
    labels = store.instances[...] if segmentation is None else segmentation
    io.write_image(tmp_path / "seg.ome.zarr", labels.astype(np.int32), label=True)
    return tmp_path / "pred.ome.zarr", tmp_path / "seg.ome.zarr"


def test_instance_labels_are_scored_by_seg_per_method_and_frame(tmp_path, cell_store):
    prob, seg = _outputs(tmp_path, cell_store)
    table = evaluate_files(prob, cell_store, tmp_path / "eval" / "metrics.csv", segmentation=seg)
    metrics = pd.read_csv(tmp_path / "eval" / "metrics.csv")
    pd.testing.assert_frame_equal(metrics, table)
    assert set(metrics["method"]) == {"unet", "segmentation", "variance_watershed"}
    assert set(metrics["metric"]) == {"seg", "foreground_iou", "dice", "n_objects", "n_matched"}
    assert (metrics["slices"] == "2:4").all()  # the validation frames: the store has no test frames
    value = metrics.set_index(["method", "metric"])["value"]
    assert value["segmentation", "seg"] == 1.0 and value["segmentation", "n_objects"] == 6
    # the target's cells lose their separation borders: each still covers most of its reference cell
    assert 0.8 < value["unet", "seg"] < 1.0
    threshold = metrics.set_index(["method", "metric"])["threshold"]
    assert threshold["unet", "seg"] == 0.1 and math.isnan(threshold["segmentation", "seg"])
    per_frame = pd.read_csv(tmp_path / "eval" / "metrics_per_slice.csv")
    assert set(per_frame["frame"]) == {"01_t002", "01_t003"}
    iou = per_frame[(per_frame["method"] == "segmentation") & (per_frame["metric"] == "foreground_iou")]
    assert iou["value"].iloc[0] == 1.0 and math.isnan(iou["value"].iloc[1])  # frame 3 is partial
    sweep = pd.read_csv(tmp_path / "eval" / "metrics_per_threshold.csv")
    assert list(sweep.columns) == ["method", "threshold", "seg", "foreground_iou", "dice"]
    assert sweep["threshold"].tolist() == pytest.approx(np.arange(1, 10) / 10)
    assert sweep["seg"].nunique() == 1  # a map of two values scores alike at every threshold between them


def test_partial_frames_count_for_seg_but_not_for_foreground_overlap(tmp_path, cell_store):
    reference = TrainingStore.open(cell_store).instances[...]
    found = reference.copy()
    found[3][found[3] == 0] = 9  # frame 3 (partial): a "cell" over all of its unannotated area
    prob, seg = _outputs(tmp_path, cell_store, segmentation=found)
    evaluate_files(prob, cell_store, tmp_path / "metrics.csv", segmentation=seg)
    value = pd.read_csv(tmp_path / "metrics.csv").set_index(["method", "metric"])["value"]
    assert value["segmentation", "seg"] == 1.0 and value["segmentation", "foreground_iou"] == 1.0


def test_cell_scores_pool_seg_over_frames():
    reference = cell_masks(2)
    labels = reference.copy()
    labels[1][labels[1] == 3] = 0  # one cell of frame 1 missed
    scores = cell_scores(labels, reference, complete=np.array([True, True]))
    assert scores["seg"] == pytest.approx(5 / 6) and (scores["n_objects"], scores["n_matched"]) == (6, 5)
    assert cell_scores(labels, reference, complete=np.array([False, False]))["dice"] != scores["dice"]
    assert math.isnan(cell_scores(labels, reference, complete=np.array([False, False]))["dice"])


def test_classical_baseline_finds_textured_cells_and_nothing_on_flat_glass(cell_store):
    store = TrainingStore.open(cell_store)
    labels = np.stack([classical_cells(r) for r in store.raw[...]])
    reference = store.instances[...]
    assert cell_scores(labels, reference, complete=np.ones(4, bool))["foreground_iou"] > 0.5
    assert classical_cells(np.full((32, 32), 7, np.uint8)).max() == 0


@pytest.mark.parametrize(
    ("what", "match"),
    [
        ("prediction", r"pred.ome.zarr: shape \(4, 64, 90\) differs from the prepared frames' \(4, 64, 96\)"),
        ("segmentation", r"seg.ome.zarr: float32 labels of shape \(4, 64, 96\), expected integer cell ids"),
    ],
)
def test_mismatched_outputs_name_the_file_and_the_fix(tmp_path, cell_store, what, match):
    prob, seg = _outputs(tmp_path, cell_store)
    if what == "prediction":
        io.write_image(prob, np.zeros((4, 64, 90), np.float32))
    else:
        io.write_image(seg, np.zeros((4, 64, 96), np.float32))
    with pytest.raises(io.VolumeError, match=match):
        evaluate_files(prob, cell_store, tmp_path / "metrics.csv", segmentation=seg)
    assert not (tmp_path / "metrics.csv").exists()


def test_a_cross_validation_fold_of_cells_is_scored_on_its_frames(tmp_path, cell_store):
    """The 4 labelled frames in 2 folds: fold 0 validates on frames 0-1 (the store's split says 2-3)."""
    prob, seg = _outputs(tmp_path, cell_store)
    table = evaluate_files(prob, cell_store, tmp_path / "metrics.csv", segmentation=seg, slices="fold:0/2")
    assert (table["slices"] == "0:2").all() and "seg" in set(table["metric"])
