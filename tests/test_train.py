import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from unet_core.checkpoint import CheckpointError, load_checkpoint, load_model, training_pixel_size
from unet_core.inference import TilePredictor
from unet_core.model import UNet, UNetConfig, output_size
from unet_core.train import (
    Diverged,
    TrainConfig,
    Trainer,
    WeightAverage,
    flushed_denormals,
    weighted_cross_entropy,
)
from unet_core.training import build_trainer, loader_workers, train

TINY = dict(depth=2, width=4, tile_size=84, iterations=4, val_every=2, optimizer="sgd", lr=0.01, seed=5)


def _memory_trainer(work_dir, validate, *, iterations=6, state_extras=None, select_metric="rand_error"):
    """A Trainer of a tiny U-Net (with dropout) on tiles made in memory: no store, no prediction."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=2, width=4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    tiles, out = torch.Generator().manual_seed(1), output_size(84, 2)
    raw = torch.rand(iterations, 1, 1, 84, 84, generator=tiles)
    target = (torch.rand(iterations, 1, out, out, generator=tiles) > 0.5).to(torch.uint8)
    weight = torch.rand(iterations, 1, out, out, generator=tiles) + 0.5
    return Trainer(
        model,
        optimizer,
        scheduler,
        lambda start: zip(raw[start:], target[start:], weight[start:], strict=True),
        validate=validate,
        work_dir=work_dir,
        iterations=iterations,
        val_every=2,
        select_metric=select_metric,
        state_extras={"data_sha256": "tiles in memory"} if state_extras is None else state_extras,
    )


def test_the_trainer_needs_no_store_prediction_or_report():
    code = "import sys, unet_core.train; print(*sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for stage in ("dataset", "inference", "predict", "segment", "metrics", "report", "training"):
        assert f"unet_core.{stage}" not in loaded.split(), stage


def test_best_checkpoint_follows_the_metric_that_validate_returns(tmp_path):
    values, modes = iter([0.5, 0.2, 0.3]), []

    def validate(model):
        modes.append(model.training)
        return {"val_rand_error": next(values), "val_pixel_error": 0.1}

    trainer = _memory_trainer(tmp_path / "work", validate)
    trainer.fit()
    assert modes == [False] * 3 and trainer.model.training  # validated in eval mode, trained in train mode
    best, last = (load_checkpoint(tmp_path / "work" / name) for name in ("best.pt", "last.pt"))
    assert (best["iteration"], best["best_metric"]) == (4, 0.2)
    assert (last["iteration"], last["best_iteration"], last["data_sha256"]) == (6, 4, "tiles in memory")
    assert all(torch.equal(last["model_state"][k], t) for k, t in trainer.model.state_dict().items())
    log = pd.read_csv(tmp_path / "work" / "train_log.csv")
    assert log["iteration"].tolist() == [2, 4, 6] and log["val_rand_error"].tolist() == [0.5, 0.2, 0.3]
    (tmp_path / "work" / "panel.png").write_bytes(b"a picture")
    trainer.publish(tmp_path / "out", ["panel.png"])
    published = ("train_log.csv", "panel.png", "best.pt", "last.pt")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(published)
    assert not (tmp_path / "work").exists()


def test_without_validation_best_checkpoint_is_the_last(tmp_path):
    """A final model trains for the length cross-validation chose: no lower loss on the way replaces it."""
    _memory_trainer(tmp_path / "work", None, iterations=8).fit()
    log = pd.read_csv(tmp_path / "work" / "train_log.csv")
    assert not [c for c in log.columns if c.startswith("val_")]
    assert log["loss"].idxmin() != len(log) - 1  # this run's lowest loss is not at its end
    best = load_checkpoint(tmp_path / "work" / "best.pt")
    assert best["iteration"] == 8 and best["best_metric"] == log["loss"].iloc[-1]


def test_a_trainer_resumes_the_run_that_its_work_folder_holds(tmp_path):
    def validate(model):  # a metric of the weights: equal in two runs when their weights are
        return {"val_rand_error": float(sum(p.detach().abs().sum() for p in model.parameters()))}

    _memory_trainer(tmp_path / "straight", validate).fit()
    calls = []

    def dies_at_the_second_checkpoint(model):
        calls.append(model)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands in for SIGKILL
        return validate(model)

    with pytest.raises(KeyboardInterrupt):
        _memory_trainer(tmp_path / "resumed", dies_at_the_second_checkpoint).fit()
    other_data = _memory_trainer(tmp_path / "resumed", validate, state_extras={"data_sha256": "other"})
    assert other_data.resume(tmp_path / "resumed" / "last.pt") is False
    resumed, started_at = _memory_trainer(tmp_path / "resumed", validate), []
    resumed.fit(on_start=lambda work_dir: started_at.append(resumed.iteration))
    assert started_at == [2]
    straight, again = (load_checkpoint(tmp_path / name / "last.pt") for name in ("straight", "resumed"))
    for key, tensor in straight["model_state"].items():  # dropout's stream continued too
        assert torch.equal(tensor, again["model_state"][key]), key
    for key in ("best_iteration", "best_metric"):
        assert again[key] == straight[key], key
    assert [row["iteration"] for row in again["log_rows"]] == [2, 4, 6]


@pytest.mark.parametrize(
    ("values", "best"),
    [([0.3, float("nan"), 0.2], 6), ([float("nan"), 0.2, 0.1], 6), ([float("nan")] * 3, 2)],
)
def test_a_nan_metric_never_replaces_a_best_checkpoint_and_a_finite_one_replaces_it(tmp_path, values, best):
    metrics = iter(values)
    _memory_trainer(tmp_path / "work", lambda model: {"val_rand_error": next(metrics)}).fit()
    assert load_checkpoint(tmp_path / "work" / "best.pt")["iteration"] == best


def test_validate_finding_a_diverged_network_stops_the_run_with_the_fix(tmp_path):
    def validate(model):
        raise Diverged("the network predicts NaN or inf on the validation slices")

    match = r"diverged by iteration 2 \(the network predicts NaN or inf .*\); lower train.lr or set"
    with pytest.raises(ValueError, match=match):
        _memory_trainer(tmp_path / "work", validate).fit()
    assert not (tmp_path / "work" / "best.pt").exists()


def test_weighted_cross_entropy_by_hand():
    logits = torch.tensor([[[[0.0, 2.0]], [[0.0, 0.0]]]])  # (1, 2 classes, 1, 2)
    target = torch.tensor([[[1, 0]]])
    weight = torch.tensor([[[2.0, 0.5]]])
    expected = (2.0 * np.log(2.0) + 0.5 * -np.log(np.exp(2) / (np.exp(2) + 1))) / 2
    assert weighted_cross_entropy(logits, target, weight).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("select", ["rand_error", "segmented_rand_error"])
def test_training_writes_checkpoints_and_log(tiny_store, tmp_path, select):
    train(tiny_store, tmp_path, TrainConfig(**TINY, select_metric=select))
    log = pd.read_csv(tmp_path / "train_log.csv")
    assert log["iteration"].tolist() == [2, 4]
    validation = {"val_pixel_error", "val_rand_error", "val_segmented_rand_error"}
    assert {"loss", "lr", "tiles_per_s"} | validation <= set(log.columns)
    assert log[sorted(validation)].apply(lambda c: c.between(0, 1)).all().all()
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["iteration"] == 4
    assert last["best_metric"] == pytest.approx(log[f"val_{select}"].min())
    for picture in ("augmentation.png", "training_curves.png"):
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model, normalization = load_model(tmp_path / "best.pt")
    assert model.config.depth == 2 and normalization[1] > normalization[0]
    # the training data's pixel size, which predict resamples other volumes to
    assert training_pixel_size([tmp_path / "best.pt"]) == ((50.0, 4.0, 4.0), "nanometer")


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_killed_training_resumes_to_the_same_weights(tiny_store, tmp_path, monkeypatch, ema):
    cfg = TrainConfig(**TINY, ema=ema)
    train(tiny_store, tmp_path / "straight", cfg)

    original = Trainer._checkpoint

    def checkpoint_then_die(self, *args):
        original(self, *args)
        raise KeyboardInterrupt  # stands in for SIGKILL right after the first checkpoint

    monkeypatch.setattr(Trainer, "_checkpoint", checkpoint_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_store, tmp_path / "resumed", cfg)
    assert load_checkpoint(tmp_path / "resumed" / ".work" / "last.pt")["iteration"] == 2
    assert not (tmp_path / "resumed" / "last.pt").exists()  # nothing published before the end
    monkeypatch.setattr(Trainer, "_checkpoint", original)
    train(tiny_store, tmp_path / "resumed", cfg)

    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    for states in ("model_state", "train_model_state") if ema else ("model_state",):
        for key, tensor in straight[states].items():
            assert torch.equal(tensor, resumed[states][key]), (states, key)
    assert straight["best_metric"] == resumed["best_metric"]
    assert pd.read_csv(tmp_path / "resumed" / "train_log.csv")["iteration"].tolist() == [2, 4]
    assert not (tmp_path / "resumed" / ".work").exists()


def test_weight_average_warms_up_then_decays_and_copies_step_counts():
    model = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    average = WeightAverage(model, decay=0.5)
    start = model[0].weight.detach().clone()
    expected = start.clone()
    for step in (1, 2, 3):
        with torch.no_grad():
            model[0].weight.add_(1.0)
        model(torch.randn(4, 2))  # BatchNorm counts a step
        average.update()
        decay = min(0.5, (1 + step) / (10 + step))  # 2/11, 3/12, then 0.5
        expected = decay * expected + (1 - decay) * model[0].weight.detach()
        assert torch.allclose(average.module[0].weight, expected), step
    assert average.module[1].num_batches_tracked.item() == 3
    assert not average.module.training and not average.module[0].weight.requires_grad


def test_averaged_weights_are_validated_and_saved_for_prediction(tiny_store, tmp_path, monkeypatch):
    validated = []
    monkeypatch.setattr(
        "unet_core.training.TilePredictor",
        lambda model, **kw: validated.append(model) or TilePredictor(model, **kw),
    )
    trainer = build_trainer(tiny_store, tmp_path, TrainConfig(**TINY, ema=0.9))
    trainer.fit()
    assert validated == [trainer.average.module] * 2 and validated[0] is not trainer.model
    last = load_checkpoint(trainer.work_dir / "last.pt")
    assert last["average_updates"] == TINY["iterations"]
    for key, tensor in trainer.average.module.state_dict().items():
        assert torch.equal(last["model_state"][key], tensor), key  # what predict loads
        assert torch.equal(last["train_model_state"][key], trainer.model.state_dict()[key]), key
    assert any(not torch.equal(v, last["train_model_state"][k]) for k, v in last["model_state"].items())


def test_changed_configuration_starts_afresh(tiny_store, tmp_path):
    train(tiny_store, tmp_path, TrainConfig(**TINY))
    trainer = build_trainer(tiny_store, tmp_path, TrainConfig(**{**TINY, "lr": 0.02}))
    assert trainer.resume(tmp_path / "last.pt") is False
    assert trainer.iteration == 0
    assert build_trainer(tiny_store, tmp_path, TrainConfig(**TINY)).resume(tmp_path / "last.pt") is True


def test_changed_data_starts_afresh(tiny_store, tmp_path):
    from unet_core.prepare import PrepareConfig, prepare

    train(tiny_store, tmp_path / "m", TrainConfig(**TINY))
    other = tmp_path / "other.ome.zarr"
    prepare(other, PrepareConfig(synthetic_shape=(5, 64, 64), seed=2, train_slices=(0, 3), val_slices=(3, 4)))
    trainer = build_trainer(other, tmp_path / "m", TrainConfig(**TINY))
    assert trainer.resume(tmp_path / "m" / "last.pt") is False


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"tile_size": 102}, "input_size 102 is not valid for depth 2.*= 104"),
        ({"optimizer": "lbfgs"}, "train.optimizer must be one of"),
        ({"iterations": 0}, "train.iterations must be >= 1"),
        ({"num_workers": -2}, "train.num_workers must be >= 0, or -1 for automatic"),
        ({"ema": 1.0}, r"train.ema must be in \[0, 1\)"),
        ({"lr": 0.0}, "train.lr must be a finite number > 0, got 0.0"),
        ({"lr": float("nan")}, "train.lr must be a finite number > 0, got nan"),
        ({"momentum": 1.5}, r"train.momentum must be a finite number in \[0, 1\)"),
        ({"weight_decay": -1e-4}, "train.weight_decay must be a finite number >= 0"),
        ({"grad_clip": float("nan")}, "train.grad_clip must be a finite number >= 0"),
        ({"seed": -1}, "train.seed must be a finite number >= 0"),
    ],
)
def test_bad_training_options_are_refused(change, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{**TINY, **change})


def test_automatic_loader_workers_feed_a_gpu_and_spare_a_cpu(tiny_store, tmp_path, monkeypatch):
    trainer = build_trainer(tiny_store, tmp_path, TrainConfig(**TINY))  # num_workers = -1
    assert trainer.batches.workers == 0  # on a CPU, workers would take cores from the model
    for cpus, workers in ((64, 8), (6, 4), (2, 0)):
        monkeypatch.setattr("os.sched_getaffinity", lambda _, n=cpus: set(range(n)))
        assert loader_workers(-1, torch.device("cuda")) == workers
    assert build_trainer(tiny_store, tmp_path, TrainConfig(**TINY, num_workers=3)).batches.workers == 3


def test_empty_training_split_is_refused(tmp_path):
    from unet_core.prepare import PrepareConfig, prepare

    store = tmp_path / "d.ome.zarr"
    prepare(store, PrepareConfig(synthetic_shape=(2, 32, 32), train_slices=(0, 1), val_slices=(1, 2)))
    root = zarr.open_group(str(store), mode="r+")  # prepare refuses to write it: a store from elsewhere
    attrs = dict(root.attrs)["unet_core"]
    root.attrs["unet_core"] = attrs | {"split": attrs["split"] | {"train": [0, 0]}}
    with pytest.raises(ValueError, match="training split .* is empty"):
        build_trainer(store, tmp_path / "m", TrainConfig(**TINY))


def test_a_diverging_run_stops_with_the_fix_and_publishes_nothing(tiny_store, tmp_path):
    cfg = TrainConfig(**{**TINY, "lr": 1e6, "grad_clip": 0.0})
    with pytest.raises(ValueError, match=r"training diverged by iteration 2 .*; lower train.lr"):
        train(tiny_store, tmp_path, cfg)
    assert not (tmp_path / "best.pt").exists() and not (tmp_path / ".work" / "best.pt").exists()


def test_resume_ignores_settings_that_do_not_change_results(tiny_store, tmp_path):
    train(tiny_store, tmp_path, TrainConfig(**TINY))
    other_loader = TrainConfig(**{**TINY, "num_workers": 1, "device": "cpu"})
    assert build_trainer(tiny_store, tmp_path, other_loader).resume(tmp_path / "last.pt") is True


@pytest.mark.parametrize("resume_point", ["damaged", "another configuration's"])
def test_a_damaged_resume_point_or_another_runs_work_is_not_kept(tiny_store, tmp_path, resume_point):
    train(tiny_store, tmp_path / "a", TrainConfig(**TINY))
    work = tmp_path / "m" / ".work"
    work.mkdir(parents=True)
    if resume_point == "damaged":  # a kill while it was copied elsewhere, a bad disk...
        (work / "last.pt").write_bytes(b"truncated")
    else:
        train(tiny_store, tmp_path / "b", TrainConfig(**{**TINY, "lr": 0.02}))
        (work / "last.pt").write_bytes((tmp_path / "b" / "last.pt").read_bytes())
    (work / "augmentation.png").write_bytes(b"another run's tiles")
    train(tiny_store, tmp_path / "m", TrainConfig(**TINY))
    assert (tmp_path / "m" / "augmentation.png").read_bytes() == (
        tmp_path / "a" / "augmentation.png"
    ).read_bytes()
    for key, tensor in load_checkpoint(tmp_path / "a" / "last.pt")["model_state"].items():
        assert torch.equal(tensor, load_checkpoint(tmp_path / "m" / "last.pt")["model_state"][key])


def test_a_checkpoint_of_another_network_layout_names_the_file(tmp_path):
    from unet_core.checkpoint import save_checkpoint
    from unet_core.model import UNet, UNetConfig

    config = UNetConfig(depth=2, width=4)
    state = {"model_config": config.to_dict(), "normalization": [0.0, 1.0]}
    save_checkpoint(tmp_path / "renamed.pt", state | {"model_state": {"w": torch.zeros(1)}})
    save_checkpoint(tmp_path / "new_field.pt", state | {"model_config": config.to_dict() | {"heads": 2}})
    save_checkpoint(
        tmp_path / "no_norm.pt", {"model_config": config.to_dict(), "model_state": UNet(config).state_dict()}
    )
    for name in ("renamed.pt", "new_field.pt", "no_norm.pt"):
        with pytest.raises(
            CheckpointError, match=f"{name}: the checkpoint does not fit this unet_core's network"
        ):
            load_model(tmp_path / name)


def test_checkpoint_with_code_in_it_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"format": "unet_core.checkpoint", "version": 1, "evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt: not a safe unet_core checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt: no such checkpoint"):
        load_model(tmp_path / "nope.pt")


@pytest.mark.slow  # torch.compile on the CPU
def test_compiled_training_follows_the_eager_run(tiny_store, tmp_path):
    cfg = {**TINY, "iterations": 2, "val_every": 2}
    train(tiny_store, tmp_path / "eager", TrainConfig(**cfg))
    train(tiny_store, tmp_path / "compiled", TrainConfig(**cfg, compile=True))
    eager = load_checkpoint(tmp_path / "eager" / "last.pt")["model_state"]
    compiled = load_checkpoint(tmp_path / "compiled" / "last.pt")["model_state"]
    assert eager.keys() == compiled.keys()  # the checkpoint holds the plain module's names
    assert all(torch.allclose(eager[k], compiled[k], atol=1e-4) for k in eager)


def test_normalised_network_trains_resumes_and_reloads(tiny_store, tmp_path):
    cfg = TrainConfig(**TINY, norm="batch")
    train(tiny_store, tmp_path, cfg)
    model, _ = load_model(tmp_path / "best.pt")
    assert model.config.norm == "batch"
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert build_trainer(tiny_store, tmp_path, cfg).resume(tmp_path / "last.pt") is True
    assert build_trainer(tiny_store, tmp_path, TrainConfig(**TINY)).resume(tmp_path / "last.pt") is False


def test_augmentation_strengths_reach_the_training_tiles(tiny_store, tmp_path):
    cfg = TrainConfig(
        **TINY,
        aug_rotation_degrees=0.0,
        aug_contrast=0.0,
        aug_brightness=0.0,
        aug_gamma=0.0,
        aug_noise_std=0.0,
        aug_elastic_sigma=4.0,
        aug_scale=0.25,
    )
    augmentation = build_trainer(tiny_store, tmp_path, cfg).batches.dataset.augment_config
    assert augmentation.rotation_degrees == 0 and not augmentation.gray and augmentation.scale == 0.25
    assert augmentation.elastic_sigma == 4.0 and augmentation.elastic_grid == 3 and augmentation.flip_rotate
    unaugmented = build_trainer(tiny_store, tmp_path, TrainConfig(**TINY, augment=False))
    assert unaugmented.batches.dataset.augment_config is None


@pytest.mark.parametrize(
    ("change", "match"),
    [({"aug_contrast": 1.0}, "contrast must be < 1"), ({"aug_elastic_grid": 1}, "elastic_grid must be")],
)
def test_bad_augmentation_strengths_are_refused(change, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{**TINY, **change})


@pytest.mark.parametrize(("batch_size", "workers"), [(1, 0), (3, 1)])
def test_batches_are_the_dataset_tiles_in_order_from_the_current_iteration(
    tiny_store, tmp_path, batch_size, workers
):
    cfg = TrainConfig(**{**TINY, "iterations": 7, "batch_size": batch_size, "num_workers": workers})
    trainer = build_trainer(tiny_store, tmp_path, cfg)
    # From iteration 2, as after a resume: several steps' tiles travel together, not from tile 0.
    batches = list(trainer.batches(2))
    assert len(batches) == cfg.iterations - 2
    for step, batch in enumerate(batches, start=2):
        items = [trainer.batches.dataset[k] for k in range(step * batch_size, (step + 1) * batch_size)]
        for got, expected in zip(batch, zip(*items, strict=True), strict=True):
            assert torch.equal(got, torch.stack(expected))
    assert batches[0][1].dtype == torch.uint8  # labels cross between processes as bytes


def test_training_flushes_denormals_and_restores_the_setting(tiny_store, tmp_path, monkeypatch):
    seen, step = [], Trainer.step

    def recording_step(self, *batch):
        seen.append(bool(torch.tensor(1e-39) == 0))  # a denormal reads as zero when flushed
        return step(self, *batch)

    monkeypatch.setattr(Trainer, "step", recording_step)
    train(tiny_store, tmp_path, TrainConfig(**TINY))
    assert seen == [True] * TINY["iterations"]
    assert torch.tensor(1e-39) != 0  # the process-wide setting is back (other numerics rely on it)
    with flushed_denormals():
        assert torch.tensor(1e-39) == 0
        with flushed_denormals():
            pass
        assert torch.tensor(1e-39) == 0  # an inner block leaves an outer one's setting
    assert torch.tensor(1e-39) != 0
