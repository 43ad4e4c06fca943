"""Training on instance labels (cells): validation by the SEG of the segmented frames, best.pt by the
highest SEG."""

import dataclasses

import pandas as pd
import pytest

from unet_core.checkpoint import load_checkpoint
from unet_core.segment import SegmentOptions
from unet_core.train import TrainConfig
from unet_core.training import build_trainer, train

from .test_train import TINY, _memory_trainer


def test_best_checkpoint_keeps_the_highest_seg(tmp_path):
    values = iter([0.2, 0.6, 0.4])
    trainer = _memory_trainer(tmp_path / "work", lambda model: {"val_seg": next(values)}, select_metric="seg")
    trainer.fit()
    best = load_checkpoint(tmp_path / "work" / "best.pt")
    assert (best["iteration"], best["best_metric"]) == (4, 0.6)


def test_without_validation_seg_falls_back_to_the_lowest_loss(tmp_path):
    trainer = _memory_trainer(tmp_path / "work", None, select_metric="seg")
    trainer.fit()
    losses = pd.read_csv(tmp_path / "work" / "train_log.csv").set_index("iteration")["loss"]
    assert load_checkpoint(tmp_path / "work" / "best.pt")["iteration"] == losses.idxmin()


def test_cells_are_validated_as_segment_will_cut_them(cell_store, tmp_path):
    options = SegmentOptions(method="distance", threshold=0.4, seed_height=3.0)
    cfg = TrainConfig(**TINY | {"select_metric": "seg"})
    train(cell_store, tmp_path / "model", cfg, segment=options)
    log = pd.read_csv(tmp_path / "model" / "train_log.csv")
    assert {"val_seg", "val_foreground_iou", "val_dice"} <= set(log.columns)
    assert "val_rand_error" not in log.columns
    best = load_checkpoint(tmp_path / "model" / "best.pt")
    assert best["best_metric"] == log["val_seg"].max()
    assert best["segment_options"] == dataclasses.asdict(options)  # they chose best.pt: part of the run


@pytest.mark.parametrize(
    ("store", "metric", "match"),
    [
        ("cell_store", "rand_error", r"select_metric 'rand_error' does not score instances labels"),
        ("cell_store", "segmented_rand_error", r"choose one of \('seg', 'loss'\)"),
        ("tiny_store", "seg", r"select_metric 'seg' does not score binary labels"),
    ],
)
def test_a_select_metric_of_the_other_kind_of_labels_is_refused(request, tmp_path, store, metric, match):
    with pytest.raises(ValueError, match=match):
        build_trainer(
            request.getfixturevalue(store), tmp_path, TrainConfig(**TINY | {"select_metric": metric})
        )
