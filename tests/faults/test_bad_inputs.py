"""Bad inputs to every stage through the command line: one clear error line, exit code 2, no output.

The cases run `unet_core.cli.main` in this process, which is what ``python -m unet_core`` runs, with the
interpreter start saved (a few seconds per case); `test_a_real_subprocess_prints_one_line` shows the
same contract from a real ``python -m unet_core`` process. Covered elsewhere and not repeated: NaN/inf,
complex or bool raw, an empty stack and non-binary labels for ``prepare``
(tests/test_prepare.py::test_bad_input_is_one_clear_error_and_writes_nothing), a corrupt TIFF header
(tests/test_io.py::test_corrupt_tiff_gets_a_clear_error), duplicate volume names in volumes.tsv and three
config typos (tests/test_workflow.py).
"""

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
import zarr

from unet_core import io
from unet_core.checkpoint import load_model
from unet_core.data.synthetic import generate_volume
from unet_core.inference import TilePredictor, encode, predict_array

from ._support import assert_no_output, assert_user_error, cli, run_cli, tree_hash

ROOT = Path(__file__).resolve().parents[2]


def _imwrite(path, data):
    tifffile.imwrite(path, data, photometric="minisblack")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Good and damaged inputs, all (3, 40, 40) where they have a shape."""
    folder = tmp_path_factory.mktemp("inputs")
    raw, labels = generate_volume((3, 40, 40), seed=1)
    _imwrite(folder / "raw.tif", raw)
    _imwrite(folder / "labels.tif", labels)
    _imwrite(folder / "truncated.tif", raw)
    offset = tifffile.TiffFile(folder / "truncated.tif").series[0].dataoffset
    os.truncate(folder / "truncated.tif", offset + 40 * 40 + 600)  # ends inside slice 1
    io.write_image(folder / "corrupt.ome.zarr", raw, chunks=(1, 20, 20))
    (folder / "corrupt.ome.zarr" / "0" / "c" / "1" / "1" / "0").write_bytes(b"not a blosc frame" * 8)
    prob = raw.astype(np.float32) / 255
    prob[1, 5, 7] = np.nan
    zarr.create_array(str(folder / "nan.zarr"), data=prob)
    zarr.create_array(str(folder / "complex.zarr"), data=raw.astype(np.complex64))
    zarr.create_array(str(folder / "empty.zarr"), shape=(0, 40, 40), dtype="uint8")
    _imwrite(folder / "short.tif", labels[:2])
    return folder


def _argv(stage: str, bad: Path, inputs: Path, out: Path, model: Path) -> list:
    """The command of ``stage`` with ``bad`` in the role the case tests."""
    return {
        "prepare": ["prepare", out, "--raw", bad, "--labels", inputs / "labels.tif"],
        "prepare-labels": ["prepare", out, "--raw", inputs / "raw.tif", "--labels", bad],
        "train": ["train", bad, out, "--depth", "2", "--width", "4", "--tile-size", "84"],
        "predict": ["predict", model, bad, out],
        "segment": ["segment", bad, out],
        "evaluate": ["evaluate", bad, inputs / "labels.tif", "--out", out, "--slices", "all"],
        "evaluate-labels": ["evaluate", inputs / "raw.tif", bad, "--out", out, "--slices", "all"],
    }[stage]


TRUNCATED = r"truncated.tif: file ends inside slice 1 \(truncated\?\); re-export the stack"
CORRUPT = r"corrupt.ome.zarr: cannot read slices 1:2 \(RuntimeError: .*\); the file is damaged .* copy or"
EMPTY = r"empty.zarr: empty stack of shape \(0, 40, 40\)"
COMPLEX = r"complex.zarr: unsupported dtype complex64 for \w+; convert to integer or"


def _case(stage: str, bad: str, message: str):
    return pytest.param(stage, bad, message, id=f"{stage}-{bad}")


CASES = [
    _case("prepare", "truncated.tif", TRUNCATED),
    _case("prepare", "corrupt.ome.zarr", CORRUPT.replace("1:2", "0:3")),  # one slab of 3 slices
    _case("prepare-labels", "truncated.tif", TRUNCATED),
    _case(
        "prepare-labels",
        "short.tif",
        r"short.tif: labels shape \(2, 40, 40\) differs from raw .* \(3, 40, 40\)",
    ),
    _case(
        "evaluate",
        "short.tif",
        r"short.tif: shape \(2, 40, 40\) differs from the labelled volume's \(3, 40, 40\)",
    ),
    _case("train", "raw.tif", "raw.tif: not a prepared training store .* create it with `unet-core prepare`"),
    _case("predict", "truncated.tif", TRUNCATED),
    _case("predict", "empty.zarr", EMPTY),
    _case(
        "predict",
        "corrupt.ome.zarr",
        r"corrupt.ome.zarr: cannot read .* the file is damaged",
    ),
    _case("predict", "complex.zarr", COMPLEX),
    _case("predict", "nan.zarr", "nan.zarr: .*NaN"),
    _case("segment", "truncated.tif", TRUNCATED),
    _case("segment", "corrupt.ome.zarr", CORRUPT),
    _case("segment", "empty.zarr", EMPTY),
    _case("segment", "complex.zarr", COMPLEX),
    _case("segment", "nan.zarr", r"nan.zarr: slice 1 contains NaN or inf; predict it again"),
    _case("evaluate", "truncated.tif", TRUNCATED),
    _case("evaluate", "corrupt.ome.zarr", CORRUPT.replace("1:2", "0:3")),
    _case("evaluate", "empty.zarr", EMPTY),
    _case("evaluate", "complex.zarr", COMPLEX),
    _case("evaluate", "nan.zarr", r"nan.zarr: probabilities contain NaN or inf; predict the volume again"),
    _case("evaluate-labels", "truncated.tif", TRUNCATED),
    _case("evaluate-labels", "corrupt.ome.zarr", CORRUPT.replace("1:2", "0:3")),
    _case("evaluate-labels", "complex.zarr", COMPLEX),
    _case("evaluate-labels", "nan.zarr", r"raw.tif against .*nan.zarr: labels must be finite; got 1 NaN"),
]


@pytest.mark.parametrize(("stage", "bad", "message"), CASES)
def test_bad_input_is_one_error_line_and_leaves_nothing(
    tmp_path, capsys, inputs, model_file, stage, bad, message
):
    before = tree_hash(inputs)
    out = tmp_path / "out" / ("metrics.csv" if stage.startswith("evaluate") else "result.ome.zarr")
    code, stderr = cli(capsys, *_argv(stage, inputs / bad, inputs, out, model_file))
    assert_user_error(code, stderr, stage.split("-")[0], message)
    assert_no_output(out)
    resumable = {f".{out.name}.work", f".{out.name}.lock"}  # predict's work store: never taken as output
    assert not (tmp_path / "out").exists() or {p.name for p in (tmp_path / "out").iterdir()} <= resumable
    assert tree_hash(inputs) == before


def test_a_real_subprocess_prints_one_line(tmp_path, inputs):
    result = run_cli("segment", inputs / "truncated.tif", tmp_path / "seg.ome.zarr", check=False)
    assert_user_error(result.returncode, result.stderr, "segment", TRUNCATED)
    assert_no_output(tmp_path / "seg.ome.zarr")


def test_zarr_with_a_missing_chunk_is_prepared_with_a_warning(tmp_path, capsys, caplog, inputs):
    """Zarr reads a chunk that is not stored as its fill value, and writers skip chunks that equal it, so
    a missing chunk cannot be told from a blank one: prepare warns, naming the store and the count."""
    raw, _ = generate_volume((3, 40, 40), seed=1)
    io.write_image(tmp_path / "raw.ome.zarr", raw, chunks=(1, 20, 20))
    (tmp_path / "raw.ome.zarr" / "0" / "c" / "2" / "0" / "1").unlink()
    with caplog.at_level(logging.WARNING, logger="unet_core.prepare"):
        code, stderr = cli(
            capsys,
            "prepare",
            tmp_path / "d.ome.zarr",
            "--raw",
            tmp_path / "raw.ome.zarr",
            "--labels",
            inputs / "labels.tif",
        )
    assert code == 0, stderr
    assert "raw.ome.zarr: 1 of 12 chunks are not stored and read as 0" in caplog.text
    stored = io.read_volume(tmp_path / "d.ome.zarr")
    assert (stored[2, :20, 20:] == 0).all() and np.array_equal(stored[:2], raw[:2])


def test_2d_image_smaller_than_one_tile_goes_through_every_stage(tmp_path, capsys, model_file):
    """A 5 x 7 image is one slice; prediction mirrors it up to the network's 44 x 44 input (depth 2)."""
    raw, labels = generate_volume((1, 16, 16), seed=4)
    image, truth = raw[0, :5, :7], labels[0, :5, :7].copy()
    truth[0, 0], truth[-1, -1] = 0, 255  # membrane and cell in the crop
    _imwrite(tmp_path / "image.tif", image)
    _imwrite(tmp_path / "truth.tif", truth)
    assert cli(capsys, "predict", model_file, tmp_path / "image.tif", tmp_path / "p.ome.zarr")[0] == 0
    model, normalization = load_model(model_file)
    expected = encode(predict_array(TilePredictor(model, normalization=normalization), image[None]), "uint8")
    stored = io.read_volume(tmp_path / "p.ome.zarr")
    assert stored.shape == (1, 5, 7) and np.abs(stored.astype(int) - expected).max() <= 1
    assert cli(capsys, "segment", tmp_path / "p.ome.zarr", tmp_path / "s.ome.zarr")[0] == 0
    assert io.open_volume(tmp_path / "s.ome.zarr").shape == (1, 5, 7)
    code, stderr = cli(
        capsys, "evaluate", tmp_path / "p.ome.zarr", tmp_path / "truth.tif", "--out", tmp_path / "m.csv"
    )
    assert code == 0, stderr
    assert (tmp_path / "m.csv").read_text().count("\nunet,") >= 3
    code, stderr = cli(
        capsys,
        "prepare",
        tmp_path / "d.ome.zarr",
        "--raw",
        tmp_path / "image.tif",
        "--labels",
        tmp_path / "truth.tif",
        "--w0",
        "0",
    )
    assert code == 0, stderr
    assert io.open_volume(tmp_path / "d.ome.zarr").shape == (1, 5, 7)


# -- configuration and the volume sheet -----------------------------------------------------------------

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
GOOD = {"dataset": "t", "prepare": {}, "train": {}}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"prepare": {"chunk": [1, 64, 64]}}, "chunk"),
        ({"prepare": {"raw": 3}}, "raw"),
        ({"predict": {"block_shape": "1,48,48"}}, "block_shape"),
        ({"predict": {"block_shape": [1, 48]}}, "block_shape"),
        ({"predict": {"output_dtype": "int8"}}, "output_dtype"),
        ({"segment": {"threshold": 2}}, "threshold"),
        ({"segment": {"treshold": 0.5}}, "treshold"),
        ({"predict_shards": 0}, "predict_shards"),
        ({"threads": {"train": "two"}}, "train"),
        ({"dataset": "my data"}, "dataset"),
        ({"volume": "config/volumes.tsv"}, "volume"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_schema_refuses_unknown_keys_and_wrong_types(change, key):
    """The check the Snakefile runs first (snakemake.utils.validate on the schema), without snakemake's
    start-up; two real ``snakemake -n`` runs below show the message reaches the user."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    with pytest.raises(WorkflowError, match=key):
        validate(GOOD | change, str(SCHEMA))


def _dry_run(tmp_path: Path, config: dict, sheet: str) -> subprocess.CompletedProcess:
    workdir = tmp_path / "work dir"
    (workdir / "config").mkdir(parents=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (workdir / "config" / "volumes.tsv").write_text(sheet)
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    result = subprocess.run([*command, "-n", "--cores", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert not (workdir / "results").exists()
    return result


@pytest.mark.parametrize(
    ("config", "sheet", "message"),
    [
        (GOOD | {"segment": {"threshold": 2}}, "name\tpath\n", "threshold"),
        (
            GOOD | {"volumes": "config/volumes.tsv"},
            "name\tvoxel_size\nextra\t1,1,1\n",
            "config/volumes.tsv: volume 'extra': 'path' is a required property; fix that row",
        ),
        (
            GOOD | {"volumes": "config/volumes.tsv"},
            "name\tpath\tvoxel_size\nextra\t/x.tif\t0,0,0\n",
            "config/volumes.tsv: volume 'extra': voxel_size '0,0,0' is not valid (optional z,y,x voxel size, "
            "three numbers > 0); fix that row",
        ),
        (
            GOOD | {"volumes": "config/volumes.tsv"},
            "name\tpath\nmy vol\t/x.tif\n",
            "config/volumes.tsv: volume 'my vol': name 'my vol' is not valid (a unique name of letters",
        ),
        (GOOD | {"results": ""}, "name\tpath\n", "results"),
    ],
    ids=[
        "config wrong value",
        "sheet without path column",
        "zero voxel size",
        "name with a space",
        "no results",
    ],
)
def test_snakemake_dry_run_names_the_bad_key(tmp_path, config, sheet, message):
    result = _dry_run(tmp_path, config, sheet)
    assert message in result.stdout + result.stderr
