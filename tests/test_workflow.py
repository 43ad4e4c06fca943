"""Real snakemake runs of the whole DAG on a tiny synthetic configuration."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

from unet_core import io
from unet_core.model import UNetConfig
from unet_core.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]

TINY = {
    "dataset": "tiny",
    "volumes": "config/volumes.tsv",
    "gpus_per_job": 0,
    "threads": {"prepare": 1, "train": 1, "predict": 1, "segment": 1, "evaluate": 1},
    "prepare": {
        "synthetic_shape": [6, 96, 96],
        "seed": 3,
        "train_slices": [0, 4],
        "val_slices": [4, 5],
        "test_slices": [5, 6],
        "chunks": [1, 64, 64],
        "voxel_size": [50.0, 4.0, 4.0],
        "unit": "nanometer",
    },
    "train": {
        "depth": 2,
        "width": 4,
        "tile_size": 84,
        "iterations": 6,
        "val_every": 3,
        "optimizer": "adam",
        "lr": 0.001,
        "seed": 0,
    },
    "predict": {"block_shape": [1, 48, 48]},
    "segment": {"threshold": 0.5},
}


def run_snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), "--cores", "2", *args],
        capture_output=True,
        text=True,
        timeout=900,
    )


def make_workdir(tmp_path: Path, config: dict, volumes: str) -> Path:
    workdir = tmp_path / "work dir"  # a space, to prove paths reach the shell quoted
    (workdir / "config").mkdir(parents=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (workdir / "config" / "volumes.tsv").write_text(volumes)
    return workdir


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("workflow")
    extra = tmp_path / "extra stack.tif"
    tifffile.imwrite(extra, np.random.default_rng(0).integers(0, 255, (2, 50, 70)).astype(np.uint8))
    # imaged at 6 nm, the training data at 4: predicted at 4 nm and resampled back
    workdir = make_workdir(tmp_path, TINY, f"name\tpath\tvoxel_size\nextra\t{extra}\t50,6,6\n")
    result = run_snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


@pytest.mark.slow  # a real snakemake run
def test_whole_dag_writes_every_output(finished_run):
    results = finished_run / "results" / "tiny"
    for name in ["heldout", "extra"]:
        prob = io.open_volume(results / "pred" / f"{name}.ome.zarr")
        seg = io.open_volume(results / "seg" / f"{name}.ome.zarr")
        assert prob.dtype == np.uint8 and seg.dtype == np.int32 and prob.shape == seg.shape
    for stage in ("pred", "seg"):  # the sheet's voxel size, which the TIFF lacks
        extra = io.open_volume(results / stage / "extra.ome.zarr")
        assert extra.shape == (2, 50, 70) and extra.voxel_size == (50.0, 6.0, 6.0)
        assert extra.unit == "nanometer"
    logs = finished_run / "logs" / "tiny" / "predict"
    resampled = "the model was trained on 4 x 4 nanometer: predicting on that grid (x1.5, x1.5"
    shards = {name: list(logs.glob(f"{name}.*-of-*.log")) for name in ("extra", "heldout")}
    assert all(shards.values()) and all(resampled in log.read_text() for log in shards["extra"])
    assert not any(resampled in log.read_text() for log in shards["heldout"])
    assert {"best.pt", "last.pt", "train_log.csv"} <= {p.name for p in (results / "model").iterdir()}
    check_package(results / "model" / "bioimageio.zip", results / "model" / "best.pt")
    metrics = pd.read_csv(results / "eval" / "metrics.csv")
    assert set(metrics["method"]) == {"unet", "segmentation", "intensity_threshold"}
    assert {"pixel_error", "rand_error"} <= set(metrics["metric"])
    errors = metrics[metrics["metric"].str.contains("error")]
    assert len(errors) >= 8 and errors["value"].between(0, 1).all()
    assert (metrics["slices"] == "5:6").all()
    train_log = pd.read_csv(results / "model" / "train_log.csv")
    assert train_log["iteration"].tolist() == [3, 6]
    check_report_folder(results / "report", metrics)
    for rule in ["prepare", "train", "evaluate", "export"]:
        assert (finished_run / "logs" / "tiny" / f"{rule}.benchmark.tsv").is_file()


def check_package(package: Path, model: Path) -> None:
    """The export rule's bioimage.io package: valid for bioimageio.spec, and holding our checkpoint."""
    from bioimageio.spec import load_description

    from unet_core.report import sha256_file

    description = load_description(package, perform_io_checks=True)
    assert description.validation_summary.status == "valid-format", description.validation_summary.format()
    assert description.config.model_extra["unet_core"]["checkpoints"][0]["sha256"] == sha256_file(model)


def check_report_folder(report: Path, metrics: pd.DataFrame) -> None:
    """The report rule's folder: figures, our numbers as evaluate wrote them, TeX, provenance."""
    figures = ["held_out", "training", "thresholds", "per_slice", "volume_extra"]
    assert {p.name for p in (report / "figures").iterdir()} == {
        f"{f}.{x}" for f in figures for x in ("png", "pdf")
    }
    assert (report / "index.html").read_text().count('src="data:image/png;base64,') == len(figures)
    table = pd.read_csv(report / "metrics.csv").set_index("method")
    for method in ("unet", "segmentation", "intensity_threshold"):
        for metric in ("warping_error", "rand_error", "pixel_error"):
            row = metrics[(metrics["method"] == method) & (metrics["metric"] == metric)].iloc[0]
            assert table.loc[method, metric] == row["value"]
            assert table.loc[method, f"{metric}_threshold"] == row["threshold"]
    tex = (report / "metrics.tex").read_text()
    assert r"\toprule" in tex and "\nu-net &" in tex and "held-out slices 5 (z, 0-based)" in tex
    record = json.loads((report / "provenance.json").read_text())
    assert record["config"]["dataset"] == "tiny" and record["seeds"] == {"prepare.seed": 3, "train.seed": 0}
    assert set(record["config_files"]) == {"config/config.yaml", "config/volumes.tsv"}
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert record["git"]["commit"] == (head.stdout.strip() if head.returncode == 0 else None)
    assert {"prepare", "train", "predict", "evaluate"} <= set(record["wall_time_per_rule_s"])
    assert {"data", "model", "prediction", "pred/extra", "seg/extra"} <= set(record["inputs"])
    package = record["inputs"]["bioimageio_package"]
    assert (
        package["sha256"]
        == hashlib.sha256((report.parent / "model" / "bioimageio.zip").read_bytes()).hexdigest()
    )


@pytest.mark.slow  # a real snakemake run
def test_rerun_has_nothing_to_do_and_report_builds(finished_run):
    dry = run_snakemake(finished_run, "-n")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
    report = run_snakemake(finished_run, "--report", "report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    snakemake_report = (finished_run / "report.html").read_text()
    for category in ("Report", "Evaluation", "Training", "Prediction", "Provenance"):
        assert f'"{category}"' in snakemake_report
    for name in ("held_out.png", "thresholds.png", "per_slice.png", "training.png", "volume_extra.png"):
        assert f'"name": "{name}"' in snakemake_report
    assert "Held-out slices with the lowest, median and highest U-Net Rand error" in snakemake_report


def test_default_config_dry_run_and_lint_are_clean():
    for args in (["-n"], ["--lint"]):
        result = subprocess.run([*SNAKEMAKE, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"trian": {"iterations": 5}}, "trian"),
        ({"train": {"iterations": "many"}}, "iterations"),
        ({"train": {"optimiser": "sgd"}}, "optimiser"),
    ],
)
def test_bad_config_fails_at_start_naming_the_key(tmp_path, change, message):
    config = {**TINY, **{k: {**TINY.get(k, {}), **v} for k, v in change.items()}}
    workdir = make_workdir(tmp_path, config, "name\tpath\n")
    result = run_snakemake(workdir, "-n")
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (workdir / "results").exists()


def test_volume_sheet_with_duplicate_names_is_refused(tmp_path):
    workdir = make_workdir(tmp_path, TINY, "name\tpath\na\tx.tif\na\ty.tif\n")
    result = run_snakemake(workdir, "-n")
    assert result.returncode != 0
    assert "volume names must be unique" in result.stdout + result.stderr


@pytest.mark.slow  # a real snakemake run
def test_ensemble_members_train_with_their_own_seeds_and_predict_together(tmp_path):
    from unet_core.checkpoint import load_checkpoint
    from unet_core.predict import PredictOptions, predict_file

    workdir = make_workdir(tmp_path, {**TINY, "ensemble": 2, "volumes": ""}, "name\tpath\n")
    target = "results/tiny/pred/heldout.ome.zarr"
    result = run_snakemake(workdir, target)
    assert result.returncode == 0, result.stderr[-4000:]
    models = [workdir / "results/tiny/model/best.pt", workdir / "results/tiny/model/member1/best.pt"]
    assert [load_checkpoint(m)["train_config"]["seed"] for m in models] == [0, 1]
    expected = tmp_path / "expected.ome.zarr"
    options = PredictOptions(block_shape=(1, 48, 48))
    predict_file(models, workdir / "results/tiny/data.ome.zarr", expected, options=options)
    assert np.array_equal(io.read_volume(workdir / target), io.read_volume(expected))
    alone = tmp_path / "alone.ome.zarr"
    predict_file(models[0], workdir / "results/tiny/data.ome.zarr", alone, options=options)
    assert not np.array_equal(io.read_volume(workdir / target), io.read_volume(alone))
    report = run_snakemake(workdir, "results/tiny/report/index.html")
    assert report.returncode == 0, report.stderr[-4000:]
    package = workdir / "results/tiny/model/bioimageio.zip"  # one package of the members' mean
    predict_file(package, workdir / "results/tiny/data.ome.zarr", tmp_path / "zip.ome.zarr", options=options)
    assert np.array_equal(io.read_volume(workdir / target), io.read_volume(tmp_path / "zip.ome.zarr"))
    inputs = json.loads((workdir / "results/tiny/report/provenance.json").read_text())["inputs"]
    assert [inputs[k]["path"] for k in ("model", "model/member1")] == [
        str(m.relative_to(workdir)) for m in models
    ]


@pytest.mark.slow  # a real snakemake run
def test_a_gather_that_must_run_again_brings_its_shards_back(finished_run):
    results = finished_run / "results" / "tiny"
    before = io.read_volume(results / "pred" / "heldout.ome.zarr")
    rerun = run_snakemake(finished_run, "--forcerun", "predict")  # the gathers, not their shards
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "rule predict_shard:" in rerun.stdout + rerun.stderr
    assert np.array_equal(io.read_volume(results / "pred" / "heldout.ome.zarr"), before)
    assert not list((results / "pred").rglob("*.done"))  # gone once gathered


@pytest.mark.slow  # a real snakemake run
def test_cross_validation_scores_every_labelled_slice_once_and_ships_a_final_model(tmp_path):
    """crossval: 2 folds of the 5 labelled slices (0-4): each fold trains without its run and is scored
    on it; the summary has each metric's mean and spread; the shipped model trained on all 5 slices with
    no validation; the report shows the cross-validated table."""
    from unet_core.checkpoint import load_checkpoint

    config = {**TINY, "crossval": {"folds": 2, "final": True}}
    workdir = make_workdir(tmp_path, config, "name\tpath\n")
    result = run_snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    results = workdir / "results" / "tiny"
    folds = pd.read_csv(results / "cv" / "folds.csv")
    assert sorted(set(zip(folds["fold"], folds["slices"], strict=True))) == [(0, "0:3"), (1, "3:5")]
    summary = pd.read_csv(results / "cv" / "metrics.csv").set_index(["method", "metric"])
    rand = folds.query("method == 'unet' and metric == 'rand_error'")["value"]
    assert summary.loc[("unet", "rand_error"), "mean"] == pytest.approx(rand.mean())
    assert summary.loc[("unet", "rand_error"), "std"] == pytest.approx(rand.std())
    assert {"rand_split", "rand_merge", "n_split", "n_merge"} <= set(summary.loc["segmentation"].index)
    assert (summary["folds"] == 2).all()
    curve = pd.read_csv(results / "cv" / "curve.csv")
    assert curve["iteration"].tolist() == [3, 6] and "val_rand_error_mean" in curve
    for k in (0, 1):
        assert (
            load_checkpoint(results / "cv" / f"fold{k}" / "model" / "last.pt")["train_config"]["fold"]
            == f"{k}/2"
        )
    final = load_checkpoint(results / "model" / "best.pt")
    assert final["train_config"]["fold"] == "all" and final["iteration"] == TINY["train"]["iterations"]
    assert not [c for c in pd.read_csv(results / "model" / "train_log.csv").columns if c.startswith("val_")]
    page = (results / "report" / "index.html").read_text()
    assert "Cross-validated over 2 folds" in page and "trained on every labelled slice" in page
    assert (results / "report" / "crossval.csv").read_text() == (results / "cv" / "metrics.csv").read_text()


def test_a_fold_is_scored_with_the_checkpoint_its_recipe_ships(tmp_path):
    """The final model keeps its last checkpoint, so a fold is scored with its last one too: best.pt was
    chosen on the fold's own scored slices, an optimistic estimate of the shipped recipe."""
    workdir = make_workdir(tmp_path, {**TINY, "crossval": {"folds": 2, "final": True}}, "name\tpath\n")
    dry = run_snakemake(workdir, "-n", "-p")
    assert dry.returncode == 0, dry.stderr[-3000:]
    predictions = [line for line in (dry.stdout + dry.stderr).splitlines() if "unet-core predict " in line]
    for k in (0, 1):
        fold = [line for line in predictions if f"cv/fold{k}/pred.ome.zarr" in line]
        assert len(fold) == 1 and f"cv/fold{k}/model/last.pt" in fold[0], predictions


@pytest.mark.slow  # a real snakemake run
def test_a_fold_is_scored_with_the_ensemble_its_recipe_ships(tmp_path):
    """With ensemble: 2 each fold trains both members (seeds 0 and 1, on the fold's slices) and is predicted
    with the mean of their last checkpoints, as the shipped ensemble predicts."""
    from unet_core.checkpoint import load_checkpoint
    from unet_core.predict import PredictOptions, predict_file

    config = {**TINY, "ensemble": 2, "crossval": {"folds": 2}, "volumes": ""}
    workdir = make_workdir(tmp_path, config, "name\tpath\n")
    result = run_snakemake(workdir, "results/tiny/cv/metrics.csv")
    assert result.returncode == 0, result.stderr[-4000:]
    results = workdir / "results" / "tiny"
    options = PredictOptions(block_shape=(1, 48, 48))
    for k in (0, 1):
        model = results / "cv" / f"fold{k}" / "model"
        members = [model / "last.pt", model / "member1" / "last.pt"]
        trained = [load_checkpoint(m)["train_config"] for m in members]
        assert [(c["seed"], c["fold"]) for c in trained] == [(0, f"{k}/2"), (1, f"{k}/2")]
        expected = tmp_path / f"fold{k}.ome.zarr"
        predict_file(members, results / "data.ome.zarr", expected, options=options)
        scored = io.read_volume(results / "cv" / f"fold{k}" / "pred.ome.zarr")
        assert np.array_equal(scored, io.read_volume(expected))
    predict_file(members[0], results / "data.ome.zarr", tmp_path / "alone.ome.zarr", options=options)
    assert not np.array_equal(scored, io.read_volume(tmp_path / "alone.ome.zarr"))


@pytest.mark.parametrize(
    "presets, norm, gray, seeds, seed_min_size, members, folds",
    [
        (["isbi2012"], None, None, 0.9, None, 1, 0),
        (["isbi2012", "isbi2012_cpu"], "batch", (0.4, 0.2, 0.4, 0.06), 0.7, 20, 3, 5),
    ],  # GPU: bench/gpu.sh cv
)
def test_the_isbi_presets_train_cut_and_average_as_cross_validated(
    presets, norm, gray, seeds, seed_min_size, members, folds
):
    """Threshold 0.3 beat 0.5 on every fold, at full width on a GPU and narrow on a CPU; on a CPU batch
    norm lowered every training seed, twice the default gray-value augmentation lowered every seed and
    held on gray values training never saw, seeds at 0.7 carried over to other pixel sizes and gray values,
    so did leaving out seeds under 20 px, and three trainings averaged beat one longer one (README): every
    model either ISBI preset trains, the folds' included, is so normalised and augmented, every segmentation
    so cut, and every prediction averages its members."""
    configs = [str(ROOT / "config" / f"{name}.yaml") for name in presets]
    dry = run_snakemake(ROOT, "-n", "-p", "--configfile", *configs)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    trainings = [line for line in dry.stdout.splitlines() if "unet-core train " in line]
    assert len(trainings) == members * (folds + 1), trainings
    normalised = [f"--norm {norm} " in line if norm else "--norm" not in line for line in trainings]
    assert all(normalised), trainings  # the GPU preset trains without, as the paper
    if gray:
        strengths = list(zip(("contrast", "brightness", "gamma", "noise-std"), gray, strict=True))
        augmented = [all(f"--aug-{name} {value} " in line for name, value in strengths) for line in trainings]
    else:
        augmented = ["--aug-contrast" not in line for line in trainings]
    assert all(augmented), trainings  # the GPU preset keeps the defaults
    cuts = [line for line in dry.stdout.splitlines() if "unet-core segment " in line]
    cut = ("--threshold 0.3 ", f"--seed-threshold {seeds} ")
    assert cuts and all(all(flag in line for flag in cut) for line in cuts), cuts
    specks = [
        f"--seed-min-size {seed_min_size} " in line if seed_min_size else "--seed-min-size" not in line
        for line in cuts
    ]
    assert all(specks), cuts  # the GPU preset's every seed region seeds (unmeasured there)
    predictions = [line for line in dry.stdout.splitlines() if "unet-core predict " in line]
    scored = [line for line in predictions if "/cv/fold" in line]
    assert len(scored) == folds and all(line.count("/last.pt") == members for line in scored), scored
    shipped = [line for line in predictions if "/cv/fold" not in line]
    assert shipped and all(line.count("/best.pt") == members for line in shipped), shipped


# --- the paper's second experiment: touching cells of DIC-HeLa, scored by SEG -----------------------------

HELA = ROOT.parent / "shared" / "data" / "dic-hela"
HELA_FRAMES = ("01_t002", "01_t005", "01_t021", "01_t031", "01_t033")  # t033 gets no mask: predicted only
TINY_HELA = {
    "dataset": "hela",
    "volumes": "config/volumes.tsv",
    "gpus_per_job": 0,
    "predict_shards": 1,
    "threads": {"prepare": 1, "train": 1, "predict": 1, "segment": 1, "evaluate": 1},
    "prepare": {
        "raw": "images",
        "labels": "masks",
        "labels_kind": "instances",
        "train_slices": [0, 2],
        "val_slices": [2, 4],
        "test_slices": [4, 4],
        "partial_slices": [3],
        "chunks": [1, 96, 96],
    },
    "train": {**TINY["train"], "select_metric": "seg"},
    "predict": {"block_shape": [1, 48, 48]},
    "segment": {"method": "distance", "threshold": 0.5, "seed_height": 2.0, "min_size": 50},
}


@pytest.fixture(scope="module")
def hela_run(tmp_path_factory):
    """The whole DAG on 96 x 96 crops of DIC-HeLa frames (4 with masks, one more in the time-lapse)."""
    assert HELA.is_dir(), f"DIC-HeLa frames expected at {HELA} (../shared/data/dic-hela beside the clone)"
    tmp_path = tmp_path_factory.mktemp("hela")
    crop = (slice(200, 296), slice(200, 296))
    for folder, names in (("images", HELA_FRAMES), ("masks", HELA_FRAMES[:4])):
        (tmp_path / "crops" / folder).mkdir(parents=True)
        for name in names:
            image = tifffile.imread(HELA / folder / f"{name}.tif")[crop]
            tifffile.imwrite(tmp_path / "crops" / folder / f"{name}.tif", image, photometric="minisblack")
    config = {**TINY_HELA, "prepare": {**TINY_HELA["prepare"], "data_dir": str(tmp_path / "crops")}}
    workdir = make_workdir(tmp_path, config, f"name\tpath\nseq\t{tmp_path / 'crops' / 'images'}\n")
    result = run_snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


@pytest.mark.slow  # a real snakemake run
def test_hela_dag_scores_cells_by_seg_and_reports_them(hela_run):
    from unet_core.dataset import TrainingStore

    results = hela_run / "results" / "hela"
    store = TrainingStore.open(results / "data.ome.zarr")
    assert store.labels_kind == "instances" and store.frames == HELA_FRAMES[:4]
    for name, frames in (("heldout", 4), ("seq", 5)):  # the time-lapse: every frame, with a mask or not
        prob = io.open_volume(results / "pred" / f"{name}.ome.zarr")
        seg = io.open_volume(results / "seg" / f"{name}.ome.zarr")
        assert prob.shape == seg.shape == (frames, 96, 96) and seg.dtype == np.int32
    check_package(results / "model" / "bioimageio.zip", results / "model" / "best.pt")
    train_log = pd.read_csv(results / "model" / "train_log.csv")
    assert train_log["iteration"].tolist() == [3, 6] and train_log["val_seg"].between(0, 1).all()
    metrics = pd.read_csv(results / "eval" / "metrics.csv")
    assert set(metrics["method"]) == {"unet", "segmentation", "variance_watershed"}
    assert set(metrics["metric"]) == {"seg", "foreground_iou", "dice", "n_objects", "n_matched"}
    seg = metrics[metrics["metric"] == "seg"]
    assert len(seg) == 3 and seg["value"].between(0, 1).all() and (metrics["slices"] == "2:4").all()
    per_frame = pd.read_csv(results / "eval" / "metrics_per_slice.csv")
    assert set(per_frame["frame"]) == {"01_t021", "01_t031"}
    report = results / "report"
    figures = ["cells", "weight_map", "training", "per_frame", "volume_seq"]
    assert {p.name for p in (report / "figures").iterdir()} == {
        f"{f}.{x}" for f in figures for x in ("png", "pdf")
    }
    assert (report / "index.html").read_text().count('src="data:image/png;base64,') == len(figures)
    table = pd.read_csv(report / "metrics.csv").set_index("method")
    assert table.loc["segmentation", "seg"] == seg.set_index("method").loc["segmentation", "value"]
    assert table.loc["u-net (2015), DIC-HeLa", "seg"] == 0.7756
    assert "hidden test sequences" in (report / "metrics.tex").read_text()
    snakemake_report = run_snakemake(hela_run, "--report", "report.html")
    assert snakemake_report.returncode == 0, snakemake_report.stderr[-3000:]
    for name in ("cells.png", "weight_map.png", "per_frame.png", "training.png"):
        assert f'"name": "{name}"' in (hela_run / "report.html").read_text()


def test_dic_hela_presets_dry_run_and_validate_as_segment_cuts():
    """config/dic_hela_cpu.yaml merged over config/dic_hela.yaml (the paper's network): a valid DAG whose
    training validates cells with the segment section's options (every job, whatever results/ holds)."""
    configs = ["--configfile", "config/dic_hela.yaml", "config/dic_hela_cpu.yaml"]
    result = subprocess.run(
        [*SNAKEMAKE, "-n", "-p", "--forceall", *configs],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    train = next(line for line in result.stdout.splitlines() if "unet-core train " in line)
    assert "--select-metric seg" in train and "--segment-method distance" in train and "--width 16" in train
    assert "--partial-slices 8" in result.stdout and "--labels-kind instances" in result.stdout
    gpu = yaml.safe_load((ROOT / "config" / "dic_hela.yaml").read_text())["train"]  # the paper's network
    assert TrainConfig(**gpu).model == UNetConfig(depth=4, width=64, dropout=0.5)
    assert (gpu["tile_size"], gpu["batch_size"], gpu["optimizer"], gpu["momentum"]) == (572, 1, "sgd", 0.99)
