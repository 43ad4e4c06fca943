"""Safety: no stage writes over its input, no checkpoint runs code, no path reaches a shell unquoted, and a
workflow run writes nowhere but its results/ and logs/ folders.

Covered elsewhere: a checkpoint carrying code is refused by `load_checkpoint` without running it
(tests/test_train.py::test_checkpoint_with_code_in_it_is_refused); predict refuses an output inside its
input (tests/test_predict.py::test_output_inside_the_input_is_refused).
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from unet_core import io
from unet_core.data.synthetic import generate_volume

from ._support import assert_user_error, cli, random_volume, tree_hash

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Raw, labels, a probability store and a prepared store, in one folder."""
    folder = tmp_path_factory.mktemp("data")
    raw, labels = generate_volume((3, 48, 48), seed=8)
    for name, volume in (("raw", raw), ("labels", labels)):
        tifffile.imwrite(folder / f"{name}.tif", volume, photometric="minisblack")
    io.write_image(folder / "prob.ome.zarr", random_volume((3, 48, 48), seed=2), chunks=(1, 48, 48))
    return folder


RAW_LABELS = ("--raw", "raw.tif", "--labels", "labels.tif")
TINY_NET = ("--depth", "2", "--width", "4", "--tile-size", "84")
#: Commands whose output is, lies inside, or contains one of their inputs; names are relative to the data
#: folder ("." is the folder itself), MODEL and STORE stand for a checkpoint and a prepared store.
OVERWRITING = {
    "prepare onto raw": ["prepare", "raw.tif", *RAW_LABELS],
    "prepare into the folder of raw": ["prepare", ".", *RAW_LABELS],
    "predict onto input": ["predict", "MODEL", "prob.ome.zarr", "prob.ome.zarr"],
    "predict over the input's folder": ["predict", "MODEL", "prob.ome.zarr", "."],
    "segment onto input": ["segment", "prob.ome.zarr", "prob.ome.zarr"],
    "segment inside input": ["segment", "prob.ome.zarr", "prob.ome.zarr/seg"],
    "evaluate onto labels": ["evaluate", "prob.ome.zarr", "labels.tif", "--out", "labels.tif"],
    "evaluate inside prediction": ["evaluate", "prob.ome.zarr", "labels.tif", "--out", "prob.ome.zarr/m.csv"],
    "train onto data": ["train", "STORE", "STORE", *TINY_NET],
    "train inside data": ["train", "STORE", "STORE/model", *TINY_NET],
}


def _place(arg: str, data: Path, places: dict[str, Path]) -> str | Path:
    """An argument of OVERWRITING with its file name or placeholder made a path."""
    if arg.startswith("-") or arg.isdigit() or arg in ("prepare", "predict", "segment", "evaluate", "train"):
        return arg
    head, _, rest = arg.partition("/")
    return places.get(head, data / head) / rest


@pytest.mark.parametrize("case", OVERWRITING)
def test_output_onto_or_around_the_input_is_refused(tmp_path, capsys, data, model_file, tiny_store, case):
    before = tree_hash(data, tiny_store)
    argv = [_place(a, data, {"MODEL": model_file, "STORE": tiny_store}) for a in OVERWRITING[case]]
    stage = argv[0]
    message = (
        "would be inside the input" if stage == "train" else "would overwrite the input .*; choose an output"
    )
    assert_user_error(*cli(capsys, *argv), stage, message)
    assert tree_hash(data, tiny_store) == before
    assert not [p for p in data.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("kind", ["code", "truncated"])
def test_unsafe_or_damaged_checkpoint_is_one_line_through_the_command_line(
    tmp_path, capsys, data, model_file, kind
):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    checkpoint = tmp_path / f"{kind}.pt"
    if kind == "code":
        torch.save({"format": "unet_core.checkpoint", "version": 1, "model_state": Payload()}, checkpoint)
    else:
        checkpoint.write_bytes(model_file.read_bytes()[:1000])
    code, stderr = cli(capsys, "predict", checkpoint, data / "prob.ome.zarr", tmp_path / "p.ome.zarr")
    line = assert_user_error(code, stderr, "predict", f"{kind}.pt: not a safe unet_core checkpoint")
    assert "weights_only" not in line and "\x1b" not in line  # not torch's advice to load it anyway
    assert not marker.exists() and not (tmp_path / "p.ome.zarr").exists()


# -- a real workflow run with hostile paths --------------------------------------------------------------

#: Spaces, both quotes, $(...), ;, backticks and # in file names: any of them reaching a shell unquoted
#: would create a file called PWNED*, or break the command.
HOSTILE = "a b'$(touch PWNED1);\"c`touch PWNED2`; touch PWNED3 #x"


@pytest.mark.slow  # a real snakemake run
def test_hostile_paths_run_through_the_workflow_and_stay_inside_results(tmp_path):
    data_dir = tmp_path / f"data {HOSTILE}"
    data_dir.mkdir()
    raw, labels = generate_volume((6, 96, 96), seed=3)
    tifffile.imwrite(data_dir / f"raw {HOSTILE}.tif", raw, photometric="minisblack")
    tifffile.imwrite(data_dir / f"labels {HOSTILE}.tif", labels, photometric="minisblack")
    volume = tmp_path / f"volume {HOSTILE}.tif"
    tifffile.imwrite(volume, random_volume((2, 50, 70), seed=1), photometric="minisblack")
    config = {
        "dataset": "hostile",
        "volumes": "config/volumes.tsv",
        "gpus_per_job": 0,
        "predict_shards": 1,
        "threads": {"prepare": 1, "train": 1, "predict": 1, "segment": 1, "evaluate": 1},
        "prepare": {
            "data_dir": str(data_dir),
            "raw": f"raw {HOSTILE}.tif",
            "labels": f"labels {HOSTILE}.tif",
            "train_slices": [0, 4],
            "val_slices": [4, 5],
            "test_slices": [5, 6],
            "chunks": [1, 64, 64],
            "w0": 0,
        },
        "train": {"depth": 2, "width": 4, "tile_size": 84, "iterations": 2, "val_every": 1, "seed": 0},
        "predict": {"block_shape": [1, 48, 48]},
    }
    workdir = tmp_path / "work dir"
    (workdir / "config").mkdir(parents=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (workdir / "config" / "volumes.tsv").write_text(
        f"name\tpath\n# a comment line\nhostile_volume\t{volume}\n"
    )
    before = tree_hash(data_dir, volume)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(ROOT / "Snakefile"),
            "--directory",
            str(workdir),
            "--cores",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    for folder in (tmp_path, ROOT, Path.cwd()):
        found = list(folder.rglob("PWNED*")) if folder == tmp_path else list(folder.glob("PWNED*"))
        assert not found, found
    results = workdir / "results" / "hostile"
    assert io.open_volume(results / "seg" / "hostile_volume.ome.zarr").shape == (2, 50, 70)
    assert (results / "eval" / "metrics.csv").is_file() and (results / "report" / "index.html").is_file()
    assert np.array_equal(io.read_volume(results / "data.ome.zarr"), raw)
    allowed = {"results", "logs", "config", ".snakemake"}
    strays = [p for p in workdir.rglob("*") if p.is_file() and p.relative_to(workdir).parts[0] not in allowed]
    assert not strays, strays
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([data_dir.name, volume.name, "work dir"])
    assert tree_hash(data_dir, volume) == before
