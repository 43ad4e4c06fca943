"""The report folder: its numbers equal evaluate's, its TeX/JSON are well formed, its page loads offline."""

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from scipy import ndimage

from unet_core import io
from unet_core.cli import main
from unet_core.evaluate import evaluate_files
from unet_core.prepare import PrepareConfig, prepare
from unet_core.report import (
    FIGURES,
    ReportInputs,
    ReportProvenance,
    benchmark_times,
    build_report,
    choose_slices,
    find_seeds,
    git_state,
    held_out_figure,
    input_checksums,
    label_colours,
    orthoviews_figure,
    pair_volumes,
    provenance,
    read_eval_metrics,
    rule_times,
    store_digest,
    training_figure,
    volume_name,
)
from unet_core.report._figures import MERGE_COLOUR, SPLIT_COLOUR, error_overlay
from unet_core.report._provenance import canonical_json
from unet_core.segment import segment_file

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Appended to a copy of index.html: after load, list every image's figure id, state and decoded width.
IMAGE_PROBE = (
    "<script>window.addEventListener('load',()=>{const p=document.createElement('pre');p.id='probe';"
    "p.textContent=JSON.stringify([...document.images].map(i=>[i.parentElement.id,i.complete,i.naturalWidth]));"
    "document.body.appendChild(p);});</script>"
)
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]


def _git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "Snakefile").write_text("# workflow\n")
    for args in (["init", "-q"], ["add", "Snakefile"], ["commit", "-q", "-m", "init"]):
        subprocess.run([*GIT, "-C", str(path), *args], check=True, capture_output=True)
    return path


def _write_benchmark(path: Path, seconds: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{s}\t0:00:{int(s):02d}\t100.5\t200\t90\t95\t0\t0\t50\t{s / 2}\n" for s in seconds)
    path.write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n" + rows
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run built by the real stages, minus training: 6 slices of 48 x 48, slices 4-5 held out."""
    base = tmp_path_factory.mktemp("run")
    store = base / "data.ome.zarr"
    split = {"train_slices": (0, 3), "val_slices": (3, 4), "test_slices": (4, 6)}
    prepare(store, PrepareConfig(synthetic_shape=(6, 48, 48), seed=2, chunks=(1, 48, 48), **split))
    cells = np.asarray(zarr.open_group(store=str(store), mode="r")["labels/cells/0"][...]) > 0
    noise = np.random.default_rng(0).normal(0.0, 0.25, cells.shape)
    prob = np.clip(ndimage.gaussian_filter(cells.astype(float), (0, 1, 1)) + noise, 0, 1)
    pred, seg = base / "pred" / "heldout.ome.zarr", base / "seg" / "heldout.ome.zarr"
    io.write_image(pred, np.round(prob * 255).astype(np.uint8), chunks=(1, 48, 48))
    segment_file(pred, seg)
    metrics = base / "eval" / "metrics.csv"
    evaluate_files(pred, store, metrics, segmentation=seg, n_workers=1)
    extra_pred, extra_seg = base / "pred" / "extra.ome.zarr", base / "seg" / "extra.ome.zarr"
    extra = np.random.default_rng(1).integers(0, 256, (3, 20, 30)).astype(np.uint8)
    io.write_image(extra_pred, extra, chunks=(1, 20, 30), voxel_size=(50.0, 4.0, 4.0), unit="nanometer")
    segment_file(extra_pred, extra_seg)
    train_log = base / "model" / "train_log.csv"
    train_log.parent.mkdir()
    train_log.write_text(
        "iteration,loss,lr,val_pixel_error,val_rand_error,tiles_per_s\n"
        "3,0.9,0.001,0.20,0.50,4.0\n6,0.7,0.0005,0.15,0.30,4.2\n9,0.6,0.0001,0.14,0.35,4.1\n"
    )
    model = base / "model" / "best.pt"
    model.write_bytes(b"not really a checkpoint")
    logs = base / "logs"
    _write_benchmark(logs / "train.benchmark.tsv", [12.5])
    _write_benchmark(logs / "predict" / "heldout.0-of-2.benchmark.tsv", [3.0, 5.0])
    _write_benchmark(logs / "predict" / "heldout.1-of-2.benchmark.tsv", [2.0])
    config = {"dataset": "t", "prepare": {"seed": 2}, "train": {"seed": 7, "select_metric": "rand_error"}}
    config_file = base / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    repo = _git_repo(base / "repo")
    out = base / "report"
    inputs = ReportInputs(
        metrics_csv=metrics,
        train_log=train_log,
        data=store,
        prediction=pred,
        segmentation=seg,
        volumes={"extra": (extra_pred, extra_seg)},
        models=[model],
    )
    recorded = ReportProvenance(
        config=config,
        config_files=[config_file, os.path.relpath(config_file)],  # snakemake may list one file twice
        repo=repo,
        logs=logs,
    )
    build_report(out, inputs, provenance=recorded)
    return SimpleNamespace(**locals())


def test_metrics_csv_puts_evaluate_numbers_beside_the_paper_table(run):
    evaluated = pd.read_csv(run.metrics)
    table = pd.read_csv(run.out / "metrics.csv")
    ours = table[table["source"].str.startswith("this run")]
    assert list(ours["method"]) == ["unet", "segmentation", "intensity_threshold"]
    for _, row in ours.iterrows():
        for metric in ("warping_error", "rand_error", "pixel_error", "pixel_error_at_0.5", "n_split"):
            source = evaluated[(evaluated["method"] == row["method"]) & (evaluated["metric"] == metric)].iloc[
                0
            ]
            assert row[metric] == source["value"]
            if metric in ("warping_error", "rand_error", "pixel_error"):
                assert row[f"{metric}_threshold"] == source["threshold"]
        assert row["slices"] == "4:6"
    paper = table[~table["source"].str.startswith("this run")].set_index("method")
    assert list(paper.index) == ["human values", "u-net", "DIVE-SCI", "IDSIA"]
    assert paper.loc["u-net", ["warping_error", "rand_error", "pixel_error"]].tolist() == [
        0.000353,
        0.0382,
        0.0611,
    ]
    assert paper["rand_error_threshold"].isna().all()


def test_latex_table_is_a_booktabs_fragment_with_thresholds_and_the_held_out_note(run):
    tex = (run.out / "metrics.tex").read_text()
    for env in ("table", "tabular"):
        assert tex.count(rf"\begin{{{env}}}") == tex.count(rf"\end{{{env}}}") == 1
    assert tex.count("{") == tex.count("}")
    assert (tex.count(r"\toprule"), tex.count(r"\midrule"), tex.count(r"\bottomrule")) == (1, 2, 1)
    assert tex.count(r"\cmidrule(lr)") == 3 and r"\begin{tabular}{lrrrrrr}" in tex
    _, ours, published = tex.split(r"\midrule")
    body = ours.strip().splitlines() + published.split(r"\bottomrule")[0].strip().splitlines()
    rows = [line.rstrip("\\ ").split(" & ") for line in body]
    assert all(len(r) == 7 and line.endswith(r"\\") for r, line in zip(rows, body, strict=True))
    table = pd.read_csv(run.out / "metrics.csv")
    for row, (_, expected) in zip(rows, table.iterrows(), strict=True):
        ours = expected["source"].startswith("this run")
        assert row[0].endswith(r"$^\dagger$") == ours
        for k, metric in enumerate(("warping_error", "rand_error", "pixel_error")):
            decimals = 6 if metric == "warping_error" else 4
            assert float(row[1 + 2 * k]) == pytest.approx(expected[metric], abs=0.51 * 10**-decimals)
            threshold = row[2 + 2 * k]
            assert threshold == "--" if not ours else float(threshold) == expected[f"{metric}_threshold"]
    note = tex.split(r"\end{tabular}")[1]
    assert "held-out slices 4-5" in note and "not on the hidden ISBI 2012 test labels" in note
    assert "Fiji Trainable Segmentation" in tex and "Rand F-score" in tex


def test_a_metric_that_could_not_be_computed_shows_as_a_dash(run):
    from unet_core.report._tables import html_table, latex_table, summary_table

    table = summary_table(read_eval_metrics(run.metrics))
    table.loc[0, "rand_error"] = np.nan  # e.g. no cell in the labels of the scored slices
    for text in (latex_table(table), html_table(table)):
        assert "nan" not in text.lower().replace("nanometer", "")
    first_row = latex_table(table).split(r"\midrule")[1].strip().splitlines()[0].split(" & ")
    assert first_row[3] == "--"


def test_page_without_a_git_commit_says_unknown_and_links_are_url_quoted(tmp_path):
    from unet_core.report._html import render_page

    record = provenance(config=None, repo=tmp_path, inputs={})  # not a git repository
    page = render_page("t", table_html="", notes=[], figures=[], record=record, files=["figures/v#1.png"])
    assert "<code>unknown</code>" in page and "None" not in page.split("<h2>")[0]
    assert 'href="figures/v%231.png"' in page


def test_provenance_records_config_code_inputs_machine_and_timings(run):
    record = json.loads((run.out / "provenance.json").read_text())
    assert record["config"] == run.config
    assert record["config_sha256"] == hashlib.sha256(canonical_json(run.config).encode()).hexdigest()
    assert record["config_files"] == {
        str(run.config_file): hashlib.sha256(run.config_file.read_bytes()).hexdigest()
    }
    assert record["seeds"] == {"prepare.seed": 2, "train.seed": 7}
    head = subprocess.run(["git", "-C", str(run.repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert record["git"]["commit"] == head.stdout.strip() and record["git"]["dirty"] is False
    assert record["packages"]["numpy"] == importlib.metadata.version("numpy")
    assert record["packages"]["zarr"] == importlib.metadata.version("zarr")
    assert record["hardware"]["cpu_count"] == os.cpu_count() and record["hardware"]["ram_bytes"] > 0
    inputs = record["inputs"]
    for name in ("metrics", "train_log", "model"):
        assert inputs[name]["sha256"] == hashlib.sha256(Path(inputs[name]["path"]).read_bytes()).hexdigest()
    assert inputs["data"] == {"path": str(run.store), **store_digest(run.store)}
    assert inputs["data"]["mode"] == "content"
    assert {"pred/extra", "seg/extra", "prediction", "segmentation"} <= set(inputs)
    assert record["wall_time_per_job"]["predict/heldout.0-of-2"]["s"] == 4.0  # mean of two repeats
    assert record["wall_time_per_job"]["train"] == {"s": 12.5, "cpu_time": 6.25, "max_rss_mb": 100.5}
    assert record["wall_time_per_rule_s"] == {"predict": 6.0, "train": 12.5}


def _png_width(path: Path) -> int:
    return struct.unpack(">I", path.read_bytes()[16:20])[0]


def test_every_figure_is_written_as_png_and_pdf(run):
    stems = [*FIGURES, "volume_extra"]
    assert sorted(p.name for p in (run.out / "figures").iterdir()) == sorted(
        f"{s}.{x}" for s in stems for x in ("png", "pdf")
    )
    for stem in stems:
        assert (run.out / "figures" / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
        assert _png_width(run.out / "figures" / f"{stem}.png") >= 1000  # 13 in at 150 dpi, cropped


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.fail("headless Chromium checks index.html; install it: apt-get install -y chromium")


def test_index_html_is_self_contained_and_every_figure_loads_in_chromium(run, tmp_path):
    page = (run.out / "index.html").read_text()
    for attribute, value in re.findall(r'\b(src|href)="([^"]*)"', page):
        if attribute == "src":
            assert value.startswith("data:image/png;base64,")
        else:
            assert (run.out / value).is_file()  # links only to files of the folder
    probe = tmp_path / "page.html"
    probe.write_text(page.replace("</body>", IMAGE_PROBE + "</body>"))
    result = subprocess.run(
        [
            _chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout)
    assert found, result.stderr[-2000:]
    images = {figure: (complete, width) for figure, complete, width in json.loads(found.group(1))}
    stems = [*FIGURES, "volume_extra"]
    assert images == {s: (True, _png_width(run.out / "figures" / f"{s}.png")) for s in stems}


def test_held_out_figure_marks_the_splits_and_merges_evaluate_counted(run):
    per_slice = pd.read_csv(run.metrics.with_name("metrics_per_slice.csv"))
    unet = per_slice[per_slice["method"] == "unet"]
    threshold = unet.loc[unet["metric"] == "n_split", "threshold"].iloc[0]
    fig, counts = held_out_figure(run.store, run.pred, run.seg, [4, 5], threshold=threshold)
    plt.close(fig)
    for kind in ("split", "merge"):
        expected = unet[unet["metric"] == f"n_{kind}"].set_index("slice")["value"]
        assert [counts[z][kind] for z in (4, 5)] == [int(expected[0]), int(expected[1])]
    assert sum(c["split"] + c["merge"] for c in counts.values()) > 0  # the case is not trivial


def test_error_overlay_colours_splits_and_merges_apart():
    classes = np.array([[0, 1], [2, 3]], np.int8)
    rgb = error_overlay(np.array([[True, False], [True, True]]), classes)
    assert rgb[0, 0].tolist() == [0.9, 0.9, 0.9]
    assert rgb[0, 1].tolist() == list(plt.matplotlib.colors.to_rgb(SPLIT_COLOUR))
    assert rgb[1, 0].tolist() == list(plt.matplotlib.colors.to_rgb(MERGE_COLOUR))
    assert rgb[1, 1].tolist() not in (rgb[0, 1].tolist(), rgb[1, 0].tolist(), [0.9, 0.9, 0.9])


def test_label_colours_black_membrane_and_one_colour_per_id():
    rgb = label_colours(np.array([[0, 5, 5], [7, 0, 262]]))
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[1, 1].tolist() == [0, 0, 0]
    assert rgb[0, 1].tolist() == rgb[0, 2].tolist() and rgb[0, 1].tolist() != rgb[1, 0].tolist()
    assert rgb[1, 2].tolist() == rgb[1, 0].tolist()  # 262 = 7 + 255 shares the table entry


def test_choose_slices_takes_lowest_median_and_highest():
    values = [0.5, 0.1, 0.3, 0.9, 0.2]
    frame = pd.DataFrame(
        {"slice": range(5), "metric": "rand_error", "value": values, "threshold": 0.5, "method": "unet"}
    )
    assert choose_slices(frame, first_slice=10) == {11: 0.1, 12: 0.3, 13: 0.9}
    assert choose_slices(frame, first_slice=0, n=1) == {1: 0.1}
    assert choose_slices(frame.iloc[:2], first_slice=0, n=3) == {0: 0.5, 1: 0.1}
    with pytest.raises(ValueError, match="n must be >= 1"):
        choose_slices(frame, first_slice=0, n=0)
    with pytest.raises(ValueError, match="no 'rand_error' of method 'other'"):
        choose_slices(frame, first_slice=0, method="other")


def test_store_digest_by_content_or_by_metadata_and_sizes(tmp_path):
    store = tmp_path / "s.zarr"
    (store / "0").mkdir(parents=True)
    (store / "zarr.json").write_text("{}")
    (store / "0" / "c").write_bytes(b"abc")
    (store / ".snakemake_timestamp").write_text("")
    lines = [
        f"0/c\0{3}\0{hashlib.sha256(b'abc').hexdigest()}\n",
        f"zarr.json\0{2}\0{hashlib.sha256(b'{}').hexdigest()}\n",
    ]
    expected = hashlib.sha256("".join(lines).encode()).hexdigest()
    assert store_digest(store) == {"sha256": expected, "mode": "content", "files": 2, "bytes": 5}
    by_sizes = store_digest(store, max_content_bytes=0)
    assert by_sizes["mode"] == "metadata+sizes" and by_sizes["sha256"] != expected
    (store / "0" / "c").write_bytes(b"xyz")  # same size: only a content hash sees it
    assert store_digest(store, max_content_bytes=0) == by_sizes and store_digest(store)["sha256"] != expected
    (store / "zarr.json").write_text("[]")
    assert store_digest(store, max_content_bytes=0)["sha256"] != by_sizes["sha256"]
    with pytest.raises(ValueError, match="must be a directory store"):
        store_digest(store / "zarr.json")


def test_input_and_config_files_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="input 'model': no such file"):
        input_checksums({"model": tmp_path / "missing.pt"})
    with pytest.raises(FileNotFoundError, match="config file .*nope.yaml"):
        provenance(config={}, config_files=[tmp_path / "nope.yaml"])


def test_git_state_dirty_flag_and_no_repository(tmp_path):
    repo = _git_repo(tmp_path / "repo")
    (repo / "Snakefile").write_text("# changed\n")
    (repo / "new.txt").write_text("x")
    state = git_state(repo)
    assert state["dirty"] is True and state["untracked"] == 1 and len(state["commit"]) == 40
    outside = tmp_path / "plain"
    outside.mkdir()
    state = git_state(outside)
    assert state["commit"] is None and state["dirty"] is None and "not a git repository" in state["error"]
    assert git_state(None)["error"] == "no repository directory given"


def test_benchmark_times_per_job_and_rule(tmp_path):
    _write_benchmark(tmp_path / "prepare.benchmark.tsv", [1.0])
    _write_benchmark(tmp_path / "predict" / "a.benchmark.tsv", [2.0, 4.0])
    (tmp_path / "odd.benchmark.tsv").write_text("x\n1\n")
    jobs = benchmark_times(tmp_path)
    assert {job: t["s"] for job, t in jobs.items()} == {"predict/a": 3.0, "prepare": 1.0}
    assert rule_times(jobs) == {"predict": 3.0, "prepare": 1.0}
    assert benchmark_times(None) == {} and benchmark_times(tmp_path / "none") == {}
    stale_left_out = benchmark_times(
        tmp_path, only=[tmp_path / "prepare.benchmark.tsv", tmp_path / "gone.tsv"]
    )
    assert list(stale_left_out) == ["prepare"]


def test_find_seeds_walks_nested_sections():
    assert find_seeds({"seed": 1, "a": {"seed": 2, "b": {"data_seed": 3}}, "c": 4}) == {
        "seed": 1,
        "a.seed": 2,
        "a.b.data_seed": 3,
    }


def test_report_inputs_name_every_file_and_find_the_csvs_beside_metrics():
    inputs = ReportInputs(
        metrics_csv="eval/metrics.csv",
        train_log="model/train_log.csv",
        data="data.ome.zarr",
        prediction="pred/heldout.ome.zarr",
        segmentation="seg/heldout.ome.zarr",
        volumes={"x": ("pred/x.ome.zarr", "seg/x.ome.zarr")},
        models=["model/best.pt", "model/member1/best.pt"],
    )
    named = inputs.named_paths()
    assert named["metrics_per_threshold"] == Path("eval/metrics_per_threshold.csv")
    assert named["metrics_per_slice"] == Path("eval/metrics_per_slice.csv")
    assert (named["model"], named["model/member1"]) == ("model/best.pt", "model/member1/best.pt")
    assert (named["pred/x"], named["seg/x"]) == ("pred/x.ome.zarr", "seg/x.ome.zarr")
    assert len(named) == 11


def test_pair_volumes_matches_names():
    pairs = pair_volumes(["p/b.ome.zarr", "p/a.zarr"], ["s/a.zarr", "s/b.ome.zarr"])
    assert pairs == {"b": ("p/b.ome.zarr", "s/b.ome.zarr"), "a": ("p/a.zarr", "s/a.zarr")}
    assert volume_name("x/stack.tif") == "stack.tif"
    with pytest.raises(ValueError, match="one segmentation per prediction, got 1 predictions and 0"):
        pair_volumes(["a.ome.zarr"], [])
    with pytest.raises(ValueError, match=r"pair up by name, got \['a'\] and \['b'\]"):
        pair_volumes(["a.ome.zarr"], ["b.ome.zarr"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("method,metric,value\nunet,rand_error,0.1\n", r"missing \['threshold', 'slices'\]"),
        ("method,metric,value,threshold,slices\n", "has no rows"),
        ("method,metric,value,threshold,slices\nunet,rand_error,0.1,0.5,0:1\n", "lacks metrics"),
    ],
)
def test_bad_metrics_csv_is_refused(tmp_path, text, message):
    path = tmp_path / "metrics.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_eval_metrics(path)


def _drop_column(column):
    return lambda frame: frame.drop(columns=column)


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("per_slice", _drop_column("method"), r"needs columns .* missing \['method'\]"),
        ("per_threshold", _drop_column("rand_error"), r"needs columns .* missing \['rand_error'\]"),
        ("train_log", lambda frame: frame.iloc[:0, :0], "not a readable CSV"),
        (
            "train_log",
            lambda frame: frame.assign(loss="oops"),
            "column 'loss' holds values that are not numbers",
        ),
        ("metrics", lambda frame: pd.concat([frame, frame.iloc[:1]]), "pixel_error of 'unet' appears twice"),
        (
            "metrics",
            lambda frame: frame.assign(value="oops"),
            "column 'value' holds values that are not numbers",
        ),
    ],
    ids=[
        "per-slice no method",
        "per-threshold no rand",
        "empty log",
        "log words",
        "metric twice",
        "metric words",
    ],
)
def test_damaged_csv_inputs_name_their_file(run, tmp_path, name, damage, message):
    sources = {
        "metrics": run.metrics,
        "per_threshold": run.metrics.with_name("metrics_per_threshold.csv"),
        "per_slice": run.metrics.with_name("metrics_per_slice.csv"),
        "train_log": run.train_log,
    }
    paths = {key: tmp_path / path.name for key, path in sources.items()}
    for key, path in sources.items():
        frame = pd.read_csv(path)
        (damage(frame) if key == name else frame).to_csv(paths[key], index=False)
    with pytest.raises(ValueError, match=f"{re.escape(str(paths[name]))}: {message}"):
        inputs = ReportInputs(
            metrics_csv=paths["metrics"],
            per_threshold_csv=paths["per_threshold"],
            per_slice_csv=paths["per_slice"],
            train_log=paths["train_log"],
            data=run.store,
            prediction=run.pred,
            segmentation=run.seg,
        )
        build_report(tmp_path / "r", inputs)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("swap", ["data", "prediction"])
def test_images_of_another_volume_name_the_file(run, tmp_path, swap):
    images = {"data": run.store, "prediction": run.pred, "segmentation": run.seg}
    images[swap] = run.pred if swap == "data" else run.extra_pred
    message = "no labels/cells in it" if swap == "data" else r"shape \(3, 20, 30\) differs from"
    with pytest.raises(ValueError, match=f"{re.escape(str(images[swap]))}: {message}"):
        build_report(tmp_path / "r", ReportInputs(metrics_csv=run.metrics, train_log=run.train_log, **images))


def test_build_report_refuses_bad_slices_and_volume_pairs(run, tmp_path):
    common = dict(train_log=run.train_log, data=run.store, prediction=run.pred, segmentation=run.seg)
    with pytest.raises(ValueError, match=r"volumes\['x'\] must be a \(prediction, segmentation\) pair"):
        ReportInputs(metrics_csv=run.metrics, volumes={"x": str(run.extra_pred)}, **common)
    metrics = pd.read_csv(run.metrics).assign(slices="held-out")
    metrics.to_csv(tmp_path / "metrics.csv", index=False)
    with pytest.raises(ValueError, match="column 'slices' must hold 'START:STOP'"):
        build_report(tmp_path / "r", ReportInputs(metrics_csv=tmp_path / "metrics.csv", **common))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("folder", ["eval", "."])
def test_report_folder_that_holds_its_inputs_is_refused(run, folder):
    """The report replaces its folder as a whole: one holding the CSVs (or everything) would be deleted."""
    before = sorted(p.relative_to(run.base) for p in run.base.rglob("*"))
    with pytest.raises(ValueError, match="would overwrite the input"):
        inputs = ReportInputs(
            metrics_csv=run.metrics,
            train_log=run.train_log,
            data=run.store,
            prediction=run.pred,
            segmentation=run.seg,
        )
        build_report(run.base / folder, inputs)
    assert sorted(p.relative_to(run.base) for p in run.base.rglob("*")) == before


def test_figures_refuse_bad_inputs(run):
    with pytest.raises(ValueError, match="train_log needs rows and columns 'iteration' and 'loss'"):
        training_figure(pd.DataFrame({"step": [1]}))
    with pytest.raises(ValueError, match="expected the prediction's"):
        orthoviews_figure(run.extra_pred, run.seg, name="x")


def test_cli_refuses_config_that_is_not_a_json_object(run, tmp_path, capsys):
    base = [
        "report", str(tmp_path / "r"), "--metrics", str(run.metrics), "--train-log", str(run.train_log),
        "--data", str(run.store), "--prediction", str(run.pred), "--segmentation", str(run.seg),
    ]  # fmt: skip
    assert main([*base, "--config-json", "{not json"]) == 2
    assert "--config-json must be a JSON object" in capsys.readouterr().err
    assert main([*base, "--config-json", "[1, 2]"]) == 2
    assert "must be a JSON object, got list" in capsys.readouterr().err


def test_figure_names_import_without_matplotlib():
    """The workflow lists the report's files from `unet_core.report_figures` at every parse: keep it light."""
    heavy = "{'matplotlib', 'zarr', 'torch'}"
    code = f"import sys, unet_core.report_figures; print(sorted({heavy} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_cover_shows_a_caption_with_dollar_signs_as_written(tmp_path):
    """A data path is free text: `$` in it must not be read as matplotlib's math markup."""
    from unet_core.report import cover_figure, save_figure

    name = """a b'$(touch PWNED1);"c`touch PWNED2`; touch PWNED3 #x"""
    caption = f"data {name}/raw {name}.tif, held-out slice z = 5"
    fig = cover_figure(np.zeros((8, 8)), np.ones((8, 8)) / 2, caption=caption)
    save_figure(fig, tmp_path, "cover")
    assert (tmp_path / "cover.png").stat().st_size > 0
    assert any(t.get_text() == caption for t in fig.texts)
