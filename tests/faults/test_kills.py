"""SIGKILL every stage at seeded random moments, repeatedly; the re-run must equal an uninterrupted run.

Moments are drawn from the stage's own progress (slices checked, files written, checkpoints logged, chunks
stored) plus a random delay, so they land inside the work on a loaded machine too; each test prints its
kill points (``pytest -s``) and asserts that every planned kill hit a running process. After a kill no
output may look finished; the re-run removes what the killed run left (`io.sweep_leftovers`).
"""

import contextlib
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from unet_core import io
from unet_core.checkpoint import load_checkpoint
from unet_core.cli import main
from unet_core.data.synthetic import generate_volume
from unet_core.evaluate import evaluate_files
from unet_core.predict import PredictionStore, PredictOptions, predict_file
from unet_core.prepare import PrepareConfig, prepare
from unet_core.train import TrainConfig
from unet_core.training import train

from ._support import (
    assert_no_output,
    cli,
    kill_during,
    leftovers,
    log_has,
    random_volume,
    run_cli,
    torch_threads,
    tree_bytes,
)

pytestmark = pytest.mark.slow  # real processes killed and run again

SEED = 2015  # the U-Net paper's year; any seed gives other moments of the same kinds


def _report(stage: str, points) -> None:
    print(f"\n{stage}: {len(points)} kill points")
    for point in points:
        print(f"  {point}")
    assert all(p.killed for p in points), points


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """An (8, 128, 128) TIFF stack with labels, and its store prepared in this process."""
    folder = tmp_path_factory.mktemp("stack")
    raw, labels = generate_volume((8, 128, 128), seed=2)
    for name, data in (("raw", raw), ("labels", labels)):
        tifffile.imwrite(folder / f"{name}.tif", data, photometric="minisblack")
    cfg = PrepareConfig(
        raw=str(folder / "raw.tif"), labels=str(folder / "labels.tif"), chunks=(1, 64, 64), slab_mb=1
    )
    prepare(folder / "reference.ome.zarr", cfg)
    return folder


def _temporary_files(out: Path, old: set[str]) -> int:
    """Files in the temporary stores of ``out`` that the current run made (not those of earlier kills)."""
    count = 0
    for name in set(leftovers(out)) - old:
        with contextlib.suppress(FileNotFoundError):  # renamed into place while counting
            count += sum(1 for p in (out.parent / name).rglob("*") if p.is_file())
    return count


def test_killed_prepare_reruns_to_the_same_store(tmp_path, stack):
    rng = np.random.default_rng(SEED)
    reference = tree_bytes(stack / "reference.ome.zarr")
    out = tmp_path / "killed" / "data.ome.zarr"
    argv = ["prepare", out, "--raw", stack / "raw.tif", "--labels", stack / "labels.tif"]
    argv += ["--chunks", "1", "64", "64", "--slab-mb", "1"]
    points = []
    for i, kind in enumerate(rng.permutation(["checking", "writing", "writing"])):
        log, old = tmp_path / f"kill{i}.log", set(leftovers(out)) if out.parent.exists() else set()
        if kind == "checking":  # the pass over raw and labels before anything is written
            trigger, name, delay = log_has(log, "preparing "), "checking pass", rng.uniform(0, 0.05)
        else:
            k = int(rng.integers(1, len(reference)))
            trigger, name, delay = (
                (lambda k=k, old=old: _temporary_files(out, old) >= k),
                f"{k} files written",
                0.0,
            )
        points.append(
            kill_during(
                argv,
                trigger,
                name=name,
                delay=delay,
                log=log,
                state=lambda old=old: (
                    f"{_temporary_files(out, old)} of {len(reference)} files in its temporary store"
                ),
            )
        )
        assert not out.exists()
    _report("prepare", points)
    assert leftovers(out)  # the last writing kill left its temporary store behind ...
    run_cli(*argv)
    assert not leftovers(out)  # ... which the re-run removed
    assert tree_bytes(out) == reference


TINY = dict(depth=2, width=4, tile_size=84, iterations=12, val_every=2, optimizer="sgd", lr=0.01, seed=5)


def _train_argv(data: Path, out: Path) -> list:
    flags = [(f"--{k.replace('_', '-')}", str(v)) for k, v in TINY.items()]
    return ["train", data, out, "--threads", "1", *(x for pair in flags for x in pair)]


def _model_states(folder: Path) -> dict[str, dict]:
    return {name: load_checkpoint(folder / name)["model_state"] for name in ("best.pt", "last.pt")}


def test_killed_training_resumes_to_the_same_weights(tmp_path, tiny_store):
    rng = np.random.default_rng(SEED)
    with torch_threads(1):
        train(tiny_store, tmp_path / "straight", TrainConfig(**TINY))
    out = tmp_path / "killed"
    argv = _train_argv(tiny_store, out)
    early, late = int(rng.choice([2, 4])), int(rng.choice([8, 10]))  # a resumed run passes `late`
    plan = [
        ("start", log_has(tmp_path / "kill0.log", "augmentation panel"), rng.uniform(0, 0.05)),
        (
            f"checkpoint {early}",
            log_has(tmp_path / "kill1.log", f"iteration {early}:"),
            rng.uniform(0, 0.015),
        ),
        (f"checkpoint {late}", log_has(tmp_path / "kill2.log", f"iteration {late}:"), rng.uniform(0, 0.015)),
        ("publishing", lambda: (out / ".work" / "training_curves.png").exists(), rng.uniform(0, 0.1)),
    ]
    keep = sorted(rng.choice(len(plan), 3, replace=False))  # three of the four moments, in order
    points = []
    for i, (name, trigger, delay) in enumerate(plan[k] for k in keep):
        log = tmp_path / f"kill{keep[i]}.log"
        state = lambda: f"published {sorted(p.name for p in out.glob('*'))}"  # noqa: E731
        points.append(kill_during(argv, trigger, name=name, delay=delay, log=log, state=state))
        if (out / "last.pt").exists():  # published last: everything else is in place
            assert {"best.pt", "train_log.csv"} <= {p.name for p in out.iterdir()}
    _report("train", points)
    run_cli(*argv)
    straight, resumed = _model_states(tmp_path / "straight"), _model_states(out)
    for checkpoint in ("best.pt", "last.pt"):
        assert straight[checkpoint].keys() == resumed[checkpoint].keys()
        for key, tensor in straight[checkpoint].items():
            assert torch.equal(tensor, resumed[checkpoint][key]), (checkpoint, key)
    log_columns = ["iteration", "loss", "val_rand_error"]
    assert pd.read_csv(out / "train_log.csv")[log_columns].equals(
        pd.read_csv(tmp_path / "straight" / "train_log.csv")[log_columns]
    )
    assert not (out / ".work").exists() and not list(out.glob(".*.tmp-*"))


def test_killed_predict_shard_resumes_to_identical_bytes(tmp_path, predict_case):
    rng = np.random.default_rng(SEED)
    out = tmp_path / "pred.ome.zarr"
    done = PredictionStore(out).done
    count = lambda: len(list(done.iterdir())) if done.exists() else 0  # noqa: E731
    points = []
    for i, k in enumerate(sorted(rng.choice(np.arange(1, 72), 3, replace=False))):  # shard 0/2: 72 chunks
        points.append(
            kill_during(
                predict_case.argv(out, "--shard", "0/2"),
                lambda k=k: count() >= k,
                name=f"{k} of 72 chunks stored",
                delay=rng.uniform(0, 0.02),
                log=tmp_path / f"kill{i}.log",
                state=lambda: f"{count()} chunks marked done",
            )
        )
        assert not out.exists()
    _report("predict shard 0/2", points)
    run_cli(*predict_case.argv(out, "--shard", "0/2"))
    with torch_threads(1):
        options = PredictOptions(block_shape=(1, 16, 16))
        predict_file(predict_case.model, predict_case.source, out, options=options, shard=(1, 2))
    assert not out.exists()
    assert main([str(a) for a in predict_case.argv(out, "--gather")]) == 0
    assert tree_bytes(out) == predict_case.reference


def test_killed_evaluation_reruns_to_the_same_csvs(tmp_path, stack):
    rng = np.random.default_rng(SEED)
    store = stack / "reference.ome.zarr"
    prediction = tmp_path / "pred.ome.zarr"
    io.write_image(prediction, random_volume((8, 128, 128), seed=9), chunks=(1, 64, 64))
    evaluate_files(prediction, store, tmp_path / "straight" / "metrics.csv", n_workers=1)
    out = tmp_path / "killed" / "metrics.csv"
    names = ("metrics.csv", "metrics_per_threshold.csv", "metrics_per_slice.csv")
    argv = ["evaluate", prediction, store, "--out", out, "--threads", "1"]
    start = time.monotonic()
    plan = {
        "starting": lambda: time.monotonic() - start > 0.5,
        "scoring": log_has(tmp_path / "kill1.log", "evaluated "),  # the U-Net scored, the baseline next
        "writing": lambda: (out.parent / names[1]).exists(),
    }
    delays = {"starting": rng.uniform(0, 2.0), "scoring": rng.uniform(0, 0.1), "writing": 0.0}
    points = []
    for i, name in enumerate(plan):
        start = time.monotonic()
        state = lambda: f"written {sorted(p.name for p in out.parent.glob('*.csv'))}"  # noqa: E731
        log = tmp_path / f"kill{i}.log"
        points.append(kill_during(argv, plan[name], name=name, delay=delays[name], log=log, state=state))
        if out.exists():  # written last: the other two are complete
            assert all((out.parent / n).exists() for n in names)
        else:
            assert_no_output(out)
    _report("evaluate", points)
    run_cli(*argv)
    for name in names:
        assert (out.parent / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    assert not list(out.parent.glob(".*.tmp-*"))


def test_kill_while_removing_the_work_folder_does_not_wedge_training(
    tmp_path, capsys, monkeypatch, tiny_store
):
    """That moment is too short to hit with a signal, so removing the folder dies half way (as the test of
    tests/test_train.py does, with KeyboardInterrupt standing in for SIGKILL)."""
    cfg = TrainConfig(**{**TINY, "iterations": 2, "val_every": 1})
    with torch_threads(1):
        train(tiny_store, tmp_path / "straight", cfg)

    rmtree = shutil.rmtree

    def dies_half_way(path, *args, **kwargs):
        if not (Path(path) / "training_curves.png").exists():  # emptying the work folder at the start
            return rmtree(path, *args, **kwargs)
        for name in ("train_log.csv", "best.pt"):
            (Path(path) / name).unlink(missing_ok=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", dies_half_way)
    with torch_threads(1), pytest.raises(KeyboardInterrupt):
        train(tiny_store, tmp_path / "killed", cfg)
    monkeypatch.undo()
    work = tmp_path / "killed" / ".work"
    assert (tmp_path / "killed" / "last.pt").exists() and not (work / "last.pt").exists()  # published
    assert (work / "training_curves.png").exists()  # ... and killed while removing the work folder
    argv = _train_argv(tiny_store, tmp_path / "killed")
    argv[argv.index("--iterations") + 1], argv[argv.index("--val-every") + 1] = "2", "1"
    code, stderr = cli(capsys, *argv)
    assert code == 0, stderr
    straight, resumed = _model_states(tmp_path / "straight"), _model_states(tmp_path / "killed")
    for checkpoint, state in straight.items():
        assert all(torch.equal(t, resumed[checkpoint][k]) for k, t in state.items()), checkpoint
