import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

from unet_core import io
from unet_core.evaluate import evaluate_files, intensity_baseline
from unet_core.inference import decode


def test_perfect_prediction_scores_zero_and_baseline_is_scored(tiny_store, tmp_path):
    cells = zarr.open_group(str(tiny_store), mode="r")["labels/cells/0"][...]
    io.write_image(tmp_path / "p.ome.zarr", cells)  # uint8 0/255 = a perfect probability map
    summary = evaluate_files(tmp_path / "p.ome.zarr", tiny_store, tmp_path / "eval" / "metrics.csv")
    unet = summary[summary["method"] == "unet"].set_index("metric")["value"]
    assert unet["pixel_error"] == 0 and unet["rand_error"] == 0 and unet["warping_error"] == 0
    baseline = summary[summary["method"] == "intensity_threshold"].set_index("metric")["value"]
    assert baseline["rand_error"] > 0
    assert (summary["slices"] == "4:5").all()  # the held-out test slice
    written = pd.read_csv(tmp_path / "eval" / "metrics.csv")
    assert written.columns.tolist() == ["method", "metric", "value", "threshold", "slices"]
    assert (tmp_path / "eval" / "metrics_per_threshold.csv").is_file()
    assert (tmp_path / "eval" / "metrics_per_slice.csv").is_file()


def test_plain_label_volume_and_slice_range(tmp_path):
    labels = np.full((3, 20, 20), 255, np.uint8)
    labels[:, 10, :] = 0
    tifffile.imwrite(tmp_path / "gt.tif", labels, photometric="minisblack")
    prob = labels.astype(np.float32) / 255
    prob[2, 10, 3:5] = 1.0  # a two-pixel gap: a merge in slice 2 only
    io.write_image(tmp_path / "p.ome.zarr", prob)
    whole = evaluate_files(tmp_path / "p.ome.zarr", tmp_path / "gt.tif", tmp_path / "a.csv", slices="all")
    first = evaluate_files(tmp_path / "p.ome.zarr", tmp_path / "gt.tif", tmp_path / "b.csv", slices="0:2")
    assert set(whole["method"]) == {"unet"}
    value = lambda frame, m: frame.set_index("metric").loc[m, "value"]  # noqa: E731
    assert value(whole, "rand_error") > 0 and value(first, "rand_error") == 0


def test_shape_mismatch_and_bad_slices_are_refused(tmp_path):
    tifffile.imwrite(tmp_path / "gt.tif", np.full((2, 8, 8), 255, np.uint8))
    io.write_image(tmp_path / "p.ome.zarr", np.ones((2, 8, 9), np.float32))
    with pytest.raises(io.VolumeError, match="p.ome.zarr: shape"):
        evaluate_files(tmp_path / "p.ome.zarr", tmp_path / "gt.tif", tmp_path / "m.csv")
    with pytest.raises(ValueError, match="--slices must be"):
        evaluate_files(tmp_path / "p.ome.zarr", tmp_path / "gt.tif", tmp_path / "m.csv", slices="x")
    assert not (tmp_path / "m.csv").exists()


def test_prediction_with_more_slices_than_the_labels_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "gt.tif", np.full((2, 8, 8), 255, np.uint8))
    io.write_image(tmp_path / "p.ome.zarr", np.ones((3, 8, 8), np.float32))
    with pytest.raises(io.VolumeError, match=r"p.ome.zarr: shape \(3, 8, 8\) differs from the labelled"):
        evaluate_files(tmp_path / "p.ome.zarr", tmp_path / "gt.tif", tmp_path / "m.csv")


def test_failed_run_leaves_no_csv_of_an_earlier_run(tmp_path):
    labels = np.full((2, 8, 8), 255, np.uint8)
    labels[:, 4] = 0
    tifffile.imwrite(tmp_path / "gt.tif", labels)
    io.write_image(tmp_path / "p.ome.zarr", labels)
    evaluate_files(tmp_path / "p.ome.zarr", tmp_path / "gt.tif", tmp_path / "m.csv")
    assert len(list(tmp_path.glob("m*.csv"))) == 3
    io.write_image(tmp_path / "p.ome.zarr", labels[:, :, :7])
    with pytest.raises(io.VolumeError, match="differs from the labelled"):
        evaluate_files(tmp_path / "p.ome.zarr", tmp_path / "gt.tif", tmp_path / "m.csv")
    assert list(tmp_path.glob("m*.csv")) == []


def test_held_out_slices_of_a_store_without_a_split_name_the_fix(tmp_path):
    labels = np.full((2, 8, 8), 255, np.uint8)
    labels[:, 4] = 0
    root = zarr.open_group(str(tmp_path / "gt.ome.zarr"), mode="w", zarr_format=3)
    root.create_array("0", data=labels)
    root.create_group("labels/cells").create_array("0", data=labels)
    io.write_image(tmp_path / "p.ome.zarr", labels)
    with pytest.raises(io.VolumeError, match="gt.ome.zarr: records no train/val/test split .* --slices all"):
        evaluate_files(tmp_path / "p.ome.zarr", tmp_path / "gt.ome.zarr", tmp_path / "m.csv")
    summary = evaluate_files(
        tmp_path / "p.ome.zarr", tmp_path / "gt.ome.zarr", tmp_path / "m.csv", slices="all"
    )
    assert summary.set_index(["method", "metric"]).loc[("unet", "rand_error"), "value"] == 0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_intensity_baseline_scales_float32_intensities_in_float64(dtype):
    raw = (np.random.default_rng(0).random((2, 30, 30)) * 200 + 10).astype(dtype)
    low, high = np.percentile(raw, [0.5, 99.5])
    expected = np.clip((raw.astype(np.float32).astype(np.float64) - low) / (high - low), 0.0, 1.0)
    baseline = intensity_baseline(raw)
    assert baseline.dtype == np.float64 and np.array_equal(baseline, expected)
    assert baseline.min() == 0 and baseline.max() == 1


def test_uint8_probabilities_are_scaled():
    assert decode(np.array([0, 255], np.uint8)).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("stored, dtype", [(51, np.uint8), (0.2, np.float64)])
def test_a_stored_probability_equal_to_the_threshold_is_not_above_it(tmp_path, stored, dtype):
    """Cell = p > th: uint8 51 is exactly 0.2 and stays membrane at threshold 0.2 (as segment sees it)."""
    labels = np.full((2, 6, 6), 255, np.uint8)
    labels[:, 0] = 0
    tifffile.imwrite(tmp_path / "gt.tif", labels)
    tifffile.imwrite(tmp_path / "p.tif", np.where(labels > 0, stored, 0).astype(dtype))
    evaluate_files(tmp_path / "p.tif", tmp_path / "gt.tif", tmp_path / "m.csv", slices="all")
    per_threshold = pd.read_csv(tmp_path / "m_per_threshold.csv").set_index("threshold")
    assert per_threshold.loc[0.2, "pixel_error_rate"] == pytest.approx(30 / 36)  # every cell pixel wrong
    assert per_threshold.loc[0.1, "pixel_error_rate"] == 0


def _column_membrane(tmp_path, n_slices=2):
    labels = np.full((n_slices, 20, 20), 255, np.uint8)
    labels[:, :, 10] = 0
    tifffile.imwrite(tmp_path / "gt.tif", labels, photometric="minisblack")
    io.write_image(tmp_path / "p.ome.zarr", labels.astype(np.float32) / 255)
    return labels


def test_segmentation_is_scored_as_the_binary_map_of_its_cells(tmp_path):
    labels = _column_membrane(tmp_path)
    seg = np.ones(labels.shape, np.int32)  # a watershed's two cells, touching where the membrane was
    seg[:, :, 10:] = 2
    seg[1, 0, 0] = 0  # a boundary pixel of its own
    io.write_image(tmp_path / "seg.ome.zarr", seg)
    cells = (seg > 0).astype(np.float32)
    cells[:, :, 9] = 0  # what the metrics must see: a 1-px line where the two cells touch
    io.write_image(tmp_path / "cells.ome.zarr", cells)
    out = tmp_path / "eval" / "metrics.csv"
    summary = evaluate_files(
        tmp_path / "p.ome.zarr",
        tmp_path / "gt.tif",
        out,
        slices="all",
        segmentation=tmp_path / "seg.ome.zarr",
    )
    by_hand = evaluate_files(
        tmp_path / "cells.ome.zarr", tmp_path / "gt.tif", tmp_path / "b.csv", slices="all"
    )
    scored = summary[summary["method"] == "segmentation"].set_index("metric")["value"]
    expected = by_hand.set_index("metric")["value"]
    assert list(dict.fromkeys(summary["method"])) == ["unet", "segmentation"]
    assert 0 < scored["rand_error"] < 0.2  # the cells stay apart; as one merged cell: 0.33
    pd.testing.assert_series_equal(scored, expected)
    per_threshold = pd.read_csv(out.with_name("metrics_per_threshold.csv"))
    assert per_threshold[per_threshold["method"] == "segmentation"]["threshold"].tolist() == [0.5]


def test_a_segmentation_of_another_volume_is_refused(tmp_path):
    _column_membrane(tmp_path)
    io.write_image(tmp_path / "seg.ome.zarr", np.ones((2, 20, 19), np.int32))
    io.write_image(tmp_path / "float.ome.zarr", np.ones((2, 20, 20), np.float32))
    for name in ("seg.ome.zarr", "float.ome.zarr"):
        with pytest.raises(io.VolumeError, match=f"{name}: .*segment the same prediction again"):
            evaluate_files(
                tmp_path / "p.ome.zarr", tmp_path / "gt.tif", tmp_path / "m.csv", segmentation=tmp_path / name
            )
    assert not (tmp_path / "m.csv").exists()
