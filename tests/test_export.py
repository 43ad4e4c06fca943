"""bioimage.io model packages: valid and tested offline by the field's own tools, equal to `unet-core
predict`, read back by predict, and refused cleanly when the inputs are wrong."""

import dataclasses
import hashlib
import socket
import zipfile
from io import BytesIO

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from tests.faults._support import assert_no_output, assert_user_error, cli
from unet_core import io
from unet_core.checkpoint import CheckpointError, load_models, save_checkpoint, training_pixel_size
from unet_core.dataset import TrainingStore, intensity_range
from unet_core.export import CellProbability, export_package, halo, min_input
from unet_core.inference import TilePredictor, predict_array
from unet_core.model import UNet, UNetConfig
from unet_core.predict import PredictOptions, predict_file

# float32, as the package computes (predict's bf16 default applies on CPUs with AMX or AVX512-BF16)
FLOAT = PredictOptions(output_dtype="float32", block_shape=(1, 32, 32), bf16=False)


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """Everything here runs offline, exports included: a connection attempt fails the tests, whatever the
    library that tried does with the error."""
    attempts = []

    def refuse(sock, address, *args):
        attempts.append(address)
        raise OSError(f"no network in tests: {address}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        yield
    assert not attempts, f"tried to reach {attempts}"


def _checkpoint(path, store, *, seed=0, depth=2, normalization=None):
    torch.manual_seed(seed)
    model = UNet(UNetConfig(depth=depth, width=4))
    raw = np.asarray(TrainingStore.open(store).raw[0:3])
    save_checkpoint(
        path,
        {
            "model_config": model.config.to_dict(),
            "model_state": model.state_dict(),
            "normalization": list(normalization or intensity_range(raw)),
            "train_config": {"seed": seed, "depth": depth, "width": 4},
            "best_iteration": 30,
            "data_sha256": "0" * 64,
            "voxel_size": [50.0, 4.0, 4.0],  # the tiny store's, as training records it
            "unit": "nanometer",
        },
    )
    return path


@pytest.fixture(scope="module")
def inputs(tiny_store, tmp_path_factory):
    """Two checkpoints of the tiny store (an ensemble's members) and its metrics.csv."""
    folder = tmp_path_factory.mktemp("export")
    models = [_checkpoint(folder / f"best{k}.pt", tiny_store, seed=k) for k in range(2)]
    rows = [("unet", m, v, 0.5, "4:5") for m, v in [("pixel_error", 0.0412), ("rand_error", 0.1234)]]
    rows += [("unet", "warping_error", 0.00056, 0.4, "4:5")]
    metrics = folder / "metrics.csv"
    pd.DataFrame(rows, columns=["method", "metric", "value", "threshold", "slices"]).to_csv(
        metrics, index=False
    )
    return {"models": models, "data": tiny_store, "metrics": metrics, "folder": folder}


@pytest.fixture(scope="module")
def package(inputs):
    """One model exported through the command line."""
    out = inputs["folder"] / "model.zip"
    code = _main(
        "export", inputs["models"][0], out, "--data", inputs["data"], "--metrics", inputs["metrics"],
        "--authors", "Ada Lovelace", "Alan Turing", "--license", "MIT", "--name", "Tiny U-Net (test)",
    )  # fmt: skip
    assert code == 0
    return out


def _main(*argv):
    from unet_core.cli import main

    return main([str(a) for a in argv])


def _description(package):
    with zipfile.ZipFile(package) as archive:
        return yaml.safe_load(archive.read("bioimageio.yaml"))


def _array(package, name):
    with zipfile.ZipFile(package) as archive, archive.open(name) as handle:
        return np.load(handle)


def test_package_is_valid_for_bioimageio_spec(package):
    from bioimageio.spec import load_description

    description = load_description(package, perform_io_checks=True)  # checks every file's sha256
    assert description.validation_summary.status == "valid-format", description.validation_summary.format()
    rdf = _description(package)
    assert rdf["format_version"].startswith("0.5")
    assert [a["name"] for a in rdf["authors"]] == ["Ada Lovelace", "Alan Turing"]
    assert rdf["license"] == "MIT" and rdf["name"] == "Tiny U-Net (test)"
    assert rdf["cite"][0]["doi"] == "10.1007/978-3-319-24574-4_28"
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}


def test_geometry_and_normalisation_are_declared(package, inputs):
    rdf = _description(package)
    (raw,), (out,) = rdf["inputs"], rdf["outputs"]
    y = next(a for a in raw["axes"] if a.get("id") == "y")
    assert y["size"] == {"min": min_input(2), "step": 4}
    out_y = next(a for a in out["axes"] if a.get("id") == "y")
    assert out_y["halo"] == halo(2) and out_y["size"] == {"tensor_id": "raw", "axis_id": "y"}
    # the training data's pixel size, in bioimage.io's terms and in our marker for predict
    assert y["scale"] == out_y["scale"] == 4.0 and y["unit"] == out_y["unit"] == "nanometer"
    assert training_pixel_size([package]) == ((50.0, 4.0, 4.0), "nanometer")
    low, high = load_models([inputs["models"][0]])[1]
    scale = next(p for p in raw["preprocessing"] if p["id"] == "scale_linear")["kwargs"]
    assert scale["gain"] == pytest.approx(1 / (high - low)) and scale["offset"] == pytest.approx(
        -low / (high - low)
    )


def test_bioimageio_core_model_test_passes_offline(package):
    """The field's own test: each weight format reproduces the test output and runs at three tile sizes
    and two batch sizes."""
    from bioimageio.core import test_model

    summary = test_model(package)
    assert summary.status == "passed", summary.format()
    passed = {d.name for d in summary.details if d.status == "passed"}
    for weights in ("pytorch_state_dict", "torchscript", "onnx"):
        assert f"Reproduce test outputs from test inputs ({weights})" in passed


def test_test_output_equals_unet_core_predict(package, inputs, tmp_path):
    """The test input is a crop of a training slice whose kept part starts on predict's pooling grid, so
    inside the halo the package's output equals `unet-core predict` of the whole store (predicting the
    crop alone would mirror it at its own border and shift the grid); the halo holds zeros."""
    test_input, test_output = _array(package, "test_input.npy"), _array(package, "test_output.npy")
    z, y, x = _description(package)["config"]["unet_core"]["test_input_origin"]
    side, margin = test_input.shape[-1], halo(2)
    predict_file(inputs["models"][0], inputs["data"], tmp_path / "p.ome.zarr", options=FLOAT)
    predicted = io.read_volume(tmp_path / "p.ome.zarr")[z]
    raw = np.asarray(TrainingStore.open(inputs["data"]).raw[z])
    rows, cols = slice(y + margin, y + side - margin), slice(x + margin, x + side - margin)
    assert np.array_equal(test_input[0, 0, margin:-margin, margin:-margin], raw[rows, cols])
    assert np.abs(test_output[0, 0, margin:-margin, margin:-margin] - predicted[rows, cols]).max() <= 1e-4
    frame = test_output[0, 0].copy()
    frame[margin:-margin, margin:-margin] = 0
    assert not frame.any()


def test_bioimageio_core_tiles_like_unet_core_predict(package, inputs, tmp_path):
    """A consumer's tiled prediction (halo as overlap, mirrored border) equals `unet-core predict` of the
    image, at every pixel, for sides that are multiples of 2**depth."""
    from bioimageio.core import load_description, predict
    from bioimageio.core.tensor import Tensor

    image = np.random.default_rng(2).integers(0, 255, (1, 88, 108)).astype(np.uint8)
    io.write_image(tmp_path / "image.ome.zarr", image)
    predict_file(inputs["models"][0], tmp_path / "image.ome.zarr", tmp_path / "p.ome.zarr", options=FLOAT)
    expected = io.read_volume(tmp_path / "p.ome.zarr")[0]
    model = load_description(package)
    raw = Tensor(image[0][None, None].astype(np.float32), dims=("batch", "channel", "y", "x"))
    for blocksize in (1, 3):
        sample = predict(model=model, inputs={"raw": raw}, blocksize_parameter=blocksize)
        tiled = sample.members["cell_probability"].data.to_numpy()[0, 0]
        assert np.abs(tiled - expected).max() <= 1e-4


@pytest.mark.parametrize("depth", [2, 3])
def test_kept_pixels_of_any_aligned_tile_equal_whole_image_prediction(depth):
    """The halo (context/2 + 4) and the wrapper's padding make every tile whose kept part starts on the
    pooling grid compute predict's values; a tile one pixel off the grid does not."""
    torch.manual_seed(0)
    net = CellProbability([UNetConfig(depth=depth, width=2).to_dict()]).eval()
    step, margin = 2**depth, halo(depth)
    side = min_input(depth) + step

    first = -(-margin // step) * step  # the first grid line with a halo's room before it
    extent = first + side + 3 * step
    image = np.random.default_rng(0).random((1, extent, extent)).astype(np.float32)
    whole = predict_array(TilePredictor(net.members[0], normalization=(0.0, 1.0), bf16=False), image)[0]

    def kept_error(y, x):
        tile = torch.from_numpy(
            image[:, y - margin : y - margin + side, x - margin : x - margin + side][None]
        )
        with torch.no_grad():
            kept = net(tile)[0, 0, margin:-margin, margin:-margin].numpy()
        return np.abs(kept - whole[y : y + side - 2 * margin, x : x + side - 2 * margin]).max()

    origins = [(first, first), (first + step, first), (first, first + 2 * step)]
    assert all(kept_error(y, x) <= 1e-5 for y, x in origins)
    assert kept_error(first + 1, first) > 1e-3


def test_predict_accepts_its_own_package(package, inputs, tmp_path):
    predict_file(package, inputs["data"], tmp_path / "zip.ome.zarr", options=FLOAT)
    predict_file(inputs["models"][0], inputs["data"], tmp_path / "pt.ome.zarr", options=FLOAT)
    from_zip, from_pt = (io.read_volume(tmp_path / f"{n}.ome.zarr") for n in ("zip", "pt"))
    assert np.abs(from_zip - from_pt).max() <= 1e-6
    # at another pixel size both predict at the training one: the package carries it
    other = tmp_path / "six_nm.ome.zarr"
    io.write_image(other, from_pt[:1] * 200, voxel_size=(50.0, 6.0, 6.0), unit="nanometer")
    for name, model in (("zip6", package), ("pt6", inputs["models"][0])):
        predict_file(model, other, tmp_path / f"{name}.ome.zarr", options=FLOAT)
    from_zip, from_pt = (io.read_volume(tmp_path / f"{n}.ome.zarr") for n in ("zip6", "pt6"))
    assert np.abs(from_zip - from_pt).max() <= 1e-6
    plain = dataclasses.replace(FLOAT, match_pixel_size=False)
    predict_file(package, other, tmp_path / "plain.ome.zarr", options=plain)
    assert np.abs(io.read_volume(tmp_path / "plain.ome.zarr") - from_zip).max() > 1e-3


def test_documentation_carries_metrics_provenance_and_cover(package, inputs):
    with zipfile.ZipFile(package) as archive:
        readme = archive.read("README.md").decode()
        cover = archive.read("cover.png")
    sha = hashlib.sha256(inputs["models"][0].read_bytes()).hexdigest()
    for fragment in ("0.1234 (t = 0.5)", "0.00056 (t = 0.4)", "held-out slices 4:5", sha, "synthetic"):
        assert fragment in readme
    assert "## Validation" in readme and "10.1007/978-3-319-24574-4_28" in readme
    assert "train [0, 3], validation [3, 4], test [4, 5]" in readme
    assert "trained on 4 x 4 nanometer pixels" in readme
    width, height = Image.open(BytesIO(cover)).size
    assert width == 2 * height
    assert _description(package)["config"]["unet_core"]["checkpoints"][0]["sha256"] == sha


@pytest.mark.slow  # a second export, about 40 s on two shared cores
def test_an_ensemble_exports_as_one_package_of_the_mean_with_a_given_cover(inputs, tmp_path):
    out, cover = tmp_path / "ensemble.zip", tmp_path / "mine.PNG"
    Image.new("RGB", (200, 100), "white").save(cover, format="png")
    export_package(inputs["models"], out, data=inputs["data"], metrics=inputs["metrics"], cover=cover)
    assert zipfile.ZipFile(out).read("cover.png") == cover.read_bytes()
    members = _description(out)["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["members"]
    assert len(members) == 2
    predict_file(out, inputs["data"], tmp_path / "zip.ome.zarr", options=FLOAT)
    predict_file(inputs["models"], inputs["data"], tmp_path / "both.ome.zarr", options=FLOAT)
    predict_file(inputs["models"][0], inputs["data"], tmp_path / "one.ome.zarr", options=FLOAT)
    from_zip, both, one = (io.read_volume(tmp_path / f"{n}.ome.zarr") for n in ("zip", "both", "one"))
    assert np.abs(from_zip - both).max() <= 1e-5 and np.abs(from_zip - one).max() > 1e-3
    assert "mean of 2 U-Nets" in zipfile.ZipFile(out).read("README.md").decode()


def _zip(path, files):
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


@pytest.mark.parametrize(
    ("files", "match"),
    [
        (
            {"bioimageio.yaml": "type: model\nname: someone else's\nconfig: {}\n"},
            "another program; only packages",
        ),
        ({"weights.pt": "x"}, "without bioimageio.yaml"),
    ],
)
def test_other_packages_are_refused_naming_what_works(tmp_path, files, match):
    package = _zip(tmp_path / "other.zip", files)
    with pytest.raises(CheckpointError, match=match):
        load_models([package])


def test_other_package_through_predict_is_one_line(tmp_path, tiny_store, capsys):
    package = _zip(tmp_path / "other.zip", {"rdf.yaml": "type: model\n"})
    code, err = cli(capsys, "predict", package, tiny_store, tmp_path / "p.ome.zarr")
    assert_user_error(code, err, "predict", "other.zip", "unet-core export", "ilastik")


def test_a_package_with_checkpoints_is_refused(package, inputs):
    with pytest.raises(CheckpointError, match="give a package"):
        load_models([package, inputs["models"][0]])


def test_missing_package_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such package"):
        load_models([tmp_path / "absent.zip"])


def _other_project(path):
    torch.save({"state_dict": UNet(UNetConfig(depth=2, width=4)).state_dict()}, path)
    return path


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda i, t: {"models": [_other_project(t / "theirs.pt")]}, "not a unet_core checkpoint"),
        (
            lambda i, t: {
                "models": [i["models"][0], _checkpoint(t / "m.pt", i["data"], normalization=(0, 9))]
            },
            "normalise their input differently",
        ),
        (
            lambda i, t: {"models": [i["models"][0], _checkpoint(t / "m.pt", i["data"], depth=3)]},
            "one depth",
        ),
        (lambda i, t: {"metrics": t / "absent.csv"}, "no such metrics file.*unet-core evaluate"),
        (lambda i, t: {"cover": t / "absent.png"}, "no such cover image"),
        (lambda i, t: {"data": t / "absent.ome.zarr"}, "not a prepared training store"),
        (lambda i, t: {"output": t / "model.tar"}, "name the output <name>.zip"),
        (lambda i, t: {"license": "MIT-ish"}, "not an SPDX identifier"),
        (lambda i, t: {"name": "U-Net v1.0"}, "5-128 characters"),
    ],
)
def test_bad_input_is_one_clear_error_and_no_zip(inputs, tmp_path, change, match):
    args = {"models": inputs["models"][:1], "output": tmp_path / "out.zip", "data": inputs["data"]}
    args |= {"metrics": inputs["metrics"]} | change(inputs, tmp_path)
    with pytest.raises(ValueError, match=match):
        export_package(args.pop("models"), args.pop("output"), **args)
    for name in ("out.zip", "model.tar"):
        assert_no_output(tmp_path / name)


def test_a_failure_while_building_leaves_the_old_package_alone(inputs, tmp_path, monkeypatch):
    from unet_core.export import _package

    out = tmp_path / "model.zip"
    out.write_bytes(b"previous package")

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_package, "_onnx", broken)
    with pytest.raises(OSError, match="No space"):
        export_package(inputs["models"][:1], out, data=inputs["data"], metrics=inputs["metrics"])
    assert out.read_bytes() == b"previous package"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.zip")]


def test_cli_error_is_one_line(inputs, tmp_path, capsys):
    code, err = cli(
        capsys, "export", inputs["models"][0], tmp_path / "out.zip", "--data", inputs["data"],
        "--metrics", tmp_path / "absent.csv",
    )  # fmt: skip
    assert_user_error(code, err, "export", "absent.csv", "unet-core evaluate")
    assert_no_output(tmp_path / "out.zip")


@pytest.mark.parametrize("authors", [[], ["Ada Lovelace"]])
def test_config_section_becomes_export_options(authors):
    """workflow config `export:` (schema keys, an empty author list included) parses as the rule passes it."""
    from pathlib import Path

    from unet_core.cli import build_parser, config_flags

    schema = yaml.safe_load((Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    section = {"authors": authors, "license": "CC-BY-4.0", "name": "U-Net (ours)"}
    assert set(section) == set(schema["properties"]["export"]["properties"])
    args = build_parser().parse_args(
        ["export", "best.pt", "out.zip", "--data", "d", "--metrics", "m"] + config_flags(section)
    )
    assert (args.authors, args.license, args.name) == (authors, "CC-BY-4.0", "U-Net (ours)")
