"""isbi_scores and evaluation_tables: agreement with each metric, properties, tables."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi

from unet_core.metrics import (
    evaluation_tables,
    isbi_scores,
    pixel_error,
    pixel_error_rate,
    rand_error,
    vrand_vinfo,
    warping_error,
)

ERRORS = ("pixel_error", "pixel_error_at_0.5", "rand_error", "warping_error")
COUNTS = ("n_split", "n_merge", "n_hole_addition", "n_hole_deletion")
COUNTS += ("n_object_addition", "n_object_deletion")


def _volume(seed: int, shape=(3, 24, 28)) -> tuple[np.ndarray, np.ndarray]:
    """Voronoi-like cells with 1-2 px membranes and a noisy, blurred probability map."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.int32)
    for z in range(shape[0]):
        ys, xs = rng.integers(0, shape[1], 12), rng.integers(0, shape[2], 12)
        seeds[z, ys, xs] = np.arange(1, 13)
    _, (iz, iy, ix) = ndi.distance_transform_edt(seeds == 0, sampling=(99, 1, 1), return_indices=True)
    cells = seeds[iz, iy, ix]
    membrane = ndi.grey_dilation(cells, (1, 2, 2)) != ndi.grey_erosion(cells, (1, 2, 2))
    labels = np.where(membrane, 0, cells).astype(np.uint16)
    noisy = ndi.gaussian_filter((labels > 0) + rng.normal(0, 0.4, shape), (0, 1, 1))
    return np.clip(noisy, 0, 1), labels


@pytest.fixture(scope="module")
def volume():
    return _volume(0)


@pytest.fixture(scope="module")
def scores(volume):
    return isbi_scores(*volume, n_workers=1)


def test_scores_equal_the_individual_metrics(volume, scores):
    prob, labels = volume
    assert (scores["pixel_error"], scores["pixel_error_threshold"]) == pixel_error(prob, labels)
    assert scores["pixel_error_at_0.5"] == pixel_error_rate(prob, labels)
    assert (scores["rand_error"], scores["rand_error_threshold"]) == rand_error(prob, labels)
    warping = warping_error(prob, labels)
    assert scores["warping_error"] == warping["warping_error"]
    assert scores["warping_error_threshold"] == warping["threshold"]
    assert scores["warping_error_classic"] == warping["warping_error_classic"]
    assert [scores[name] for name in COUNTS] == [warping[name[2:]] for name in COUNTS]
    info = vrand_vinfo(prob, labels)
    assert {key: scores[key] for key in info} == info


def test_the_volume_has_errors_of_every_main_kind(scores):
    """Guards the comparisons above against a trivially perfect test volume."""
    assert all(scores[name] > 0 for name in ERRORS)
    assert scores["vrand"] < 1 and scores["vinfo"] < 1


def test_threads_do_not_change_the_result(volume, scores):
    assert isbi_scores(*volume, n_workers=3) == scores


def test_a_2d_slice_scores_like_a_one_slice_volume(volume):
    prob, labels = volume
    assert isbi_scores(prob[1], labels[1]) == isbi_scores(prob[1:2], labels[1:2])


def test_custom_thresholds_apply_to_every_metric(volume):
    scores = isbi_scores(*volume, thresholds=[0.4])
    assert {scores[key] for key in scores if key.endswith("_threshold")} == {0.4}


def test_tables_agree_with_scores(volume, scores):
    tables = evaluation_tables(*volume)
    summary = tables["summary"].set_index("metric")
    for metric, value in summary["value"].items():
        assert value == pytest.approx(scores[metric])
    assert summary.loc["rand_error", "threshold"] == scores["rand_error_threshold"]
    per_threshold = tables["per_threshold"].set_index("threshold")
    assert len(per_threshold) == 11
    assert per_threshold["n_merge"].isna().tolist() == [False] * 10 + [True]  # 1.0: no warping
    assert per_threshold.loc[scores["rand_error_threshold"], "rand_error"] == scores["rand_error"]
    assert per_threshold["warping_error"].min() == scores["warping_error"]
    assert per_threshold["vinfo"].max() == scores["vinfo"]


def test_per_slice_table_sums_back_to_the_volume(volume, scores):
    per_slice = evaluation_tables(*volume)["per_slice"]
    assert set(per_slice.columns) == {"slice", "metric", "value", "threshold"}
    assert len(per_slice) == 3 * 13
    split = per_slice[per_slice.metric == "n_split"]
    assert split["value"].sum() == scores["n_split"]
    plain = per_slice[per_slice.metric == "pixel_error_at_0.5"]["value"]
    assert plain.mean() == pytest.approx(scores["pixel_error_at_0.5"])  # equal-size slices
    vrand = per_slice[per_slice.metric == "vrand"]
    assert vrand["value"].mean() == pytest.approx(scores["vrand"])
    assert (vrand["threshold"] == scores["vrand_threshold"]).all()


masks = arrays(
    np.uint8,
    st.tuples(st.integers(1, 2), st.integers(3, 9), st.integers(3, 9)),
    elements=st.integers(0, 1),
)


@settings(max_examples=40, deadline=None)
@given(mask=masks)
def test_perfect_prediction_scores_zero_error(mask):
    assume(mask.any())
    scores = isbi_scores(mask.astype(np.float64), mask * 255)
    assert [scores[name] for name in ERRORS] == [0.0] * 4
    assert scores["warping_error_classic"] == 0.0
    assert [scores[name] for name in COUNTS] == [0] * 6
    assert (scores["vrand"], scores["vinfo"]) == (1.0, 1.0)


@settings(max_examples=30, deadline=None)
@given(
    ids=arrays(np.int64, (2, 7, 8), elements=st.integers(0, 5)),
    prob=arrays(np.float64, (2, 7, 8), elements=st.floats(0, 1)),
    permutation=st.permutations(range(1, 6)),
)
def test_relabelling_instances_changes_nothing(ids, prob, permutation):
    assume(ids.any())
    relabel = np.array([0, *permutation])
    assert isbi_scores(prob, relabel[ids]) == isbi_scores(prob, ids)


def test_custom_sweep_keeps_warping_within_the_isbi_range():
    labels = np.full((1, 20, 20), 255, np.uint8)
    labels[0, :, 10] = 0
    prob = np.where(labels > 0, 0.99, 0.05).astype(np.float32)
    prob[0, 9:11, 10] = 0.93  # a gap that only thresholds in (0.93, 0.99) close
    tables = evaluation_tables(prob, labels, thresholds=np.linspace(0, 1, 51))
    summary = tables["summary"].set_index("metric")
    assert summary.loc["warping_error", "threshold"] <= 0.9
    assert summary.loc["warping_error", "value"] > 0
    assert summary.loc["rand_error", "threshold"] > 0.9  # other metrics do use the whole sweep
    with pytest.raises(ValueError, match="include a value <= 0.9 for warping"):
        evaluation_tables(prob, labels, thresholds=[0.95, 1.0])
