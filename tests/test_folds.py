"""Cross-validation folds: which slices a run trains and validates on, and evaluate scoring a fold."""

import doctest

import numpy as np
import pandas as pd
import pytest
import zarr

from unet_core import folds
from unet_core.evaluate import evaluate_files
from unet_core.folds import fold_slices, parse_fold, read_at
from unet_core.train import TrainConfig
from unet_core.training import build_trainer

from .test_train import TINY


def test_docstring_examples():
    failures, tried = doctest.testmod(folds)
    assert tried > 0 and failures == 0


def test_folds_cut_the_labelled_slices_into_contiguous_runs_that_cover_them_once():
    validated = []
    for k in range(4):
        train, val = fold_slices((2, 12), (12, 16), f"{k}/4")
        assert (
            np.array_equal(np.union1d(train, val), np.arange(2, 16)) and not np.intersect1d(train, val).size
        )
        assert np.all(np.diff(val) == 1)
        validated.append(val.tolist())
    assert validated == [[2, 3, 4, 5], [6, 7, 8, 9], [10, 11, 12], [13, 14, 15]]


def test_the_store_split_and_all():
    assert [z.tolist() for z in fold_slices((0, 3), (3, 5), "")] == [[0, 1, 2], [3, 4]]
    assert [z.tolist() for z in fold_slices((0, 3), (3, 5), "all")] == [[0, 1, 2, 3, 4], []]


@pytest.mark.parametrize("fold", ["3/3", "1/1", "x", "1/2/3", "-1/2", "all "])
def test_malformed_folds_are_refused(fold):
    with pytest.raises(ValueError, match="fold must be '' .* 'all' .* or 'k/K'"):
        parse_fold(fold)
    with pytest.raises(ValueError, match="fold must be"):
        TrainConfig(**TINY, fold=fold)


def test_more_folds_than_slices_are_refused():
    with pytest.raises(ValueError, match="fold 0/6: 6 folds need at least 6 labelled slices, there are 5"):
        fold_slices((0, 4), (4, 5), "0/6")


def test_read_at_reads_runs_of_slices():
    array = zarr.create_array(store={}, shape=(7, 2, 2), dtype="uint8", chunks=(1, 2, 2))
    array[...] = np.arange(7, dtype=np.uint8)[:, None, None]
    assert read_at(array, [0, 1, 4, 5, 6])[:, 0, 0].tolist() == [0, 1, 4, 5, 6]
    assert read_at(array, []).shape == (0, 2, 2)


def test_a_fold_trains_without_its_slices_and_validates_on_them(tiny_store, tmp_path):
    """tiny_store: train 0-3, val 3-4 (5 slices, test 4-5): fold 1/2 validates on 2-3, trains on 0-1."""
    by_split = build_trainer(tiny_store, tmp_path / "a", TrainConfig(**TINY))
    fold = build_trainer(tiny_store, tmp_path / "b", TrainConfig(**TINY, fold="1/2"))
    final = build_trainer(tiny_store, tmp_path / "c", TrainConfig(**TINY, fold="all"))
    assert len(by_split.batches.dataset.raw) == 3 and len(fold.batches.dataset.raw) == 2
    assert len(final.batches.dataset.raw) == 4 and final.validate is None
    assert by_split.validate.keywords["raw"].shape[0] == 1 and fold.validate.keywords["raw"].shape[0] == 2
    assert len({t.state_extras["data_sha256"] for t in (by_split, fold, final)}) == 3


def test_evaluate_scores_the_slices_of_a_fold(tiny_store, tmp_path):
    from unet_core import io

    prob = tmp_path / "prob.ome.zarr"
    io.write_image(prob, io.read_volume(tiny_store, key="labels/cells"))
    metrics = evaluate_files(prob, tiny_store, tmp_path / "m.csv", slices="fold:1/2")
    assert set(metrics["slices"]) == {"2:4"}
    table = pd.read_csv(tmp_path / "m.csv")
    assert table.query("method == 'unet' and metric == 'rand_error'")["value"].item() == 0.0
    with pytest.raises(ValueError, match="--slices fold:x: fold must be"):
        evaluate_files(prob, tiny_store, tmp_path / "m.csv", slices="fold:x")
    with pytest.raises(ValueError, match="--slices fold:all: name a fold as k/K"):
        evaluate_files(prob, tiny_store, tmp_path / "m.csv", slices="fold:all")
