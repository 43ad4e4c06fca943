import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import torch
import zarr

from unet_core import io
from unet_core.checkpoint import save_checkpoint
from unet_core.inference import TilePredictor, encode, predict_array, resolve_device
from unet_core.model import UNet, UNetConfig
from unet_core.predict import (
    PROBABILITY_COMPRESSION_LEVEL,
    PredictionStore,
    PredictOptions,
    gather_prediction,
    predict_file,
    shard_blocks,
)

NORMALIZATION = (10.0, 240.0)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=2, width=4))
    path = tmp_path_factory.mktemp("model") / "best.pt"
    save_checkpoint(
        path,
        {
            "model_config": model.config.to_dict(),
            "model_state": model.state_dict(),
            "normalization": list(NORMALIZATION),
        },
    )
    return path, model


@pytest.fixture(scope="module")
def volume():
    return np.random.default_rng(3).integers(0, 255, (3, 45, 70)).astype(np.uint8)


def _whole(model, volume):
    return predict_array(TilePredictor(model, normalization=NORMALIZATION), volume)


@pytest.mark.parametrize("block_shape", [(1, 16, 16), (2, 20, 33), (3, 64, 128)])
def test_file_prediction_equals_whole_image_prediction(tmp_path, model_file, volume, block_shape):
    path, model = model_file
    source = tmp_path / "in.ome.zarr"
    io.write_image(source, volume, chunks=(1, 32, 32), voxel_size=(40.0, 5.0, 5.0), unit="nanometer")
    out = tmp_path / "out.ome.zarr"
    predict_file(path, source, out, options=PredictOptions(block_shape=block_shape, output_dtype="float32"))
    result = io.open_volume(out)
    assert result.voxel_size == (40.0, 5.0, 5.0) and result.unit == "nanometer"
    assert result.array.chunks == tuple(min(b, s) for b, s in zip(block_shape, volume.shape, strict=True))
    assert np.abs(np.asarray(result.array[...]) - _whole(model, volume)).max() <= 1e-5


def test_uint8_output_is_the_rounded_probability(tmp_path, model_file, volume):
    path, model = model_file
    tifffile.imwrite(tmp_path / "in.tif", volume, photometric="minisblack")
    predict_file(
        path,
        tmp_path / "in.tif",
        tmp_path / "out.ome.zarr",
        options=PredictOptions(block_shape=(1, 32, 32)),
    )
    stored = io.read_volume(tmp_path / "out.ome.zarr")
    expected = encode(_whole(model, volume), "uint8")
    assert stored.dtype == np.uint8
    assert np.abs(stored.astype(int) - expected.astype(int)).max() <= 1  # float rounding at .5 edges
    assert (stored == expected).mean() > 0.999


def test_encode_rounds_half_to_even_like_numpy():
    k = np.arange(256, dtype=np.float32)
    prob = np.concatenate([k / 255, (k + 0.5) / 255, [-0.2, 1.3, np.float32(0.5) / 255]]).astype(np.float32)
    prob = np.concatenate([prob, np.random.default_rng(0).random(10_000, dtype=np.float32)])
    expected = np.rint(np.clip(prob, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)
    assert np.array_equal(encode(prob, "uint8"), expected)
    assert np.array_equal(encode(prob, "float16"), prob.astype(np.float16))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float64])
def test_block_encodes_the_cropped_probabilities(model_file, dtype):
    """The pipeline's device-side crop + encode equals encoding the host copy, for any input dtype."""
    _, model = model_file
    predictor = TilePredictor(model, normalization=NORMALIZATION)
    tile = np.random.default_rng(1).integers(0, 255, (2, 60, 76)).astype(dtype)
    crop = (slice(0, 2), slice(3, 15), slice(5, 30))
    prob = predictor.tiles(tile)
    for out_dtype in ("uint8", "float16", "float32"):
        assert np.array_equal(predictor.block(tile, crop, out_dtype), encode(prob[crop], out_dtype))
    assert np.array_equal(prob, predictor.tiles(tile.astype(np.float32)))


def test_blocks_dominated_by_their_halo_get_a_suggestion(tmp_path, model_file, volume, caplog):
    path, _ = model_file
    io.write_image(tmp_path / "in.ome.zarr", volume, chunks=(1, 45, 70))
    for block, warned in (((1, 16, 16), True), ((1, 45, 70), False)):  # whole slices: nothing to gain
        caplog.clear()
        options = PredictOptions(block_shape=block)
        predict_file(path, tmp_path / "in.ome.zarr", tmp_path / f"{block[1]}.ome.zarr", options=options)
        assert ("block_shape (1, 180, 180) or larger keeps that <= 1.5" in caplog.text) is warned


def _normalised_model_file(tmp_path, norm):
    """A checkpoint with ``norm`` layers whose batch statistics are not the identity, as after training."""
    torch.manual_seed(1)
    model = UNet(UNetConfig(depth=2, width=4, norm=norm))
    with torch.no_grad():
        model.train()(torch.rand(2, 1, 92, 92) * 3.0)  # moves BatchNorm's running statistics
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d | torch.nn.GroupNorm):
                module.weight.uniform_(0.5, 1.5), module.bias.uniform_(-0.3, 0.3)
    path = tmp_path / f"{norm}.pt"
    state = {"model_config": model.config.to_dict(), "model_state": model.state_dict()}
    save_checkpoint(path, {**state, "normalization": list(NORMALIZATION)})
    return path


@pytest.mark.parametrize(("norm", "seamless"), [("batch", True), ("group", False)])
def test_only_group_norm_makes_the_output_depend_on_the_blocks(tmp_path, volume, caplog, norm, seamless):
    path = _normalised_model_file(tmp_path, norm)
    io.write_image(tmp_path / "in.ome.zarr", volume, chunks=(1, 45, 70))
    outputs = {}
    for block in ((1, 45, 70), (1, 16, 16)):  # whole slices, then blocks smaller than them
        caplog.clear()
        out = tmp_path / f"{block[1]}.ome.zarr"
        predict_file(
            path,
            tmp_path / "in.ome.zarr",
            out,
            options=PredictOptions(block_shape=block, output_dtype="float32"),
        )
        outputs[block] = np.asarray(io.open_volume(out).array[...])
        warned = "group normalisation, whose output changes with the block" in caplog.text
        assert warned is (not seamless and block == (1, 16, 16))
    difference = np.abs(outputs[(1, 45, 70)] - outputs[(1, 16, 16)]).max()
    assert bool(difference <= 1e-5) is seamless, difference


def test_hdf5_input_and_no_partial_output_on_failure(tmp_path, model_file, volume):
    path, _ = model_file
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["raw"] = volume
    predict_file(path, f"{tmp_path}/v.h5:raw", tmp_path / "ok.ome.zarr", options=PredictOptions())
    assert io.open_volume(tmp_path / "ok.ome.zarr").shape == volume.shape
    with pytest.raises(io.VolumeError, match="no dataset 'missing'"):
        predict_file(path, f"{tmp_path}/v.h5:missing", tmp_path / "bad.ome.zarr", options=PredictOptions())
    assert not (tmp_path / "bad.ome.zarr").exists()
    assert not any(p.name.startswith(".bad") for p in tmp_path.iterdir())


def test_output_metadata_is_ngff(tmp_path, model_file, volume):
    path, _ = model_file
    source = tmp_path / "in.ome.zarr"
    io.write_image(source, volume)
    predict_file(path, source, tmp_path / "out.ome.zarr", options=PredictOptions(output_dtype="float16"))
    root = zarr.open_group(str(tmp_path / "out.ome.zarr"), mode="r")
    assert root.attrs["ome"]["version"] == "0.5"
    assert root["0"].dtype == np.float16


def test_probabilities_are_stored_at_the_fast_compression_level(tmp_path, model_file, volume):
    # level 5 took 5x the time of level 1 for the same size on ISBI maps (unet_core.predict)
    path, _ = model_file
    source = tmp_path / "in.ome.zarr"
    io.write_image(source, volume)
    predict_file(path, source, tmp_path / "out.ome.zarr", options=PredictOptions())
    (codec,) = zarr.open_array(str(tmp_path / "out.ome.zarr" / "0"), mode="r").compressors
    assert (codec.cname.value, codec.clevel) == ("zstd", PROBABILITY_COMPRESSION_LEVEL) == ("zstd", 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"output_dtype": "int8"}, "output_dtype must be one of"),
        ({"block_shape": (1, 0, 4)}, "block_shape"),
    ],
)
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PredictOptions(**kwargs)


def test_two_slice_one_pixel_wide_volume(tmp_path, model_file):
    path, model = model_file
    thin = np.random.default_rng(4).integers(0, 255, (2, 30, 1)).astype(np.uint8)
    io.write_image(tmp_path / "thin.ome.zarr", thin)
    options = PredictOptions(block_shape=(1, 16, 1), output_dtype="float32")
    predict_file(path, tmp_path / "thin.ome.zarr", tmp_path / "out.ome.zarr", options=options)
    assert np.abs(io.read_volume(tmp_path / "out.ome.zarr") - _whole(model, thin)).max() <= 1e-5


def _store_bytes(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_shards_write_disjoint_chunks_and_gather_publishes(tmp_path, model_file, volume):
    path, _ = model_file
    source = tmp_path / "in.ome.zarr"
    io.write_image(source, volume, chunks=(1, 16, 16))
    options = PredictOptions(block_shape=(1, 16, 32))
    predict_file(path, source, tmp_path / "whole.ome.zarr", options=options)
    sharded = tmp_path / "sharded.ome.zarr"
    for i in range(3):
        predict_file(path, source, sharded, options=options, shard=(i, 3))
        assert not sharded.exists()  # nothing looks finished before the gather
        if i == 1:
            with pytest.raises(ValueError, match="chunks are not written yet"):
                gather_prediction(sharded)
    gather_prediction(sharded)
    assert _store_bytes(sharded) == _store_bytes(tmp_path / "whole.ome.zarr")
    assert not PredictionStore(sharded).work.exists()


def test_shard_runs_are_disjoint_and_cover_all_blocks():
    blocks = list(range(10))
    runs = [shard_blocks(blocks, (i, 4)) for i in range(4)]
    assert sorted(b for run in runs for b in run) == blocks


def test_changed_model_invalidates_old_chunks(tmp_path, model_file, volume):
    path, _ = model_file
    source = tmp_path / "in.ome.zarr"
    io.write_image(source, volume)
    options = PredictOptions(block_shape=(1, 16, 16), output_dtype="float32")
    predict_file(path, source, tmp_path / "out.ome.zarr", options=options, shard=(0, 2))
    torch.manual_seed(9)
    other = UNet(UNetConfig(depth=2, width=4))
    other_path = tmp_path / "other.pt"
    save_checkpoint(
        other_path,
        {
            "model_config": other.config.to_dict(),
            "model_state": other.state_dict(),
            "normalization": list(NORMALIZATION),
        },
    )
    predict_file(other_path, source, tmp_path / "out.ome.zarr", options=options)
    assert np.abs(io.read_volume(tmp_path / "out.ome.zarr") - _whole(other, volume)).max() <= 1e-5


def test_input_written_anew_invalidates_old_chunks(tmp_path, model_file, volume):
    path, model = model_file
    source = tmp_path / "in.ome.zarr"
    io.write_image(source, np.zeros_like(volume))
    options = PredictOptions(block_shape=(1, 16, 16), output_dtype="float32")
    predict_file(path, source, tmp_path / "out.ome.zarr", options=options, shard=(0, 2))
    io.write_image(source, volume)  # the same path, shape and dtype: another volume
    predict_file(path, source, tmp_path / "out.ome.zarr", options=options)
    assert np.abs(io.read_volume(tmp_path / "out.ome.zarr") - _whole(model, volume)).max() <= 1e-5


def _interrupted_prediction(tmp_path, model_file, volume, shard):
    """A prediction that ran ``shard`` only, beside the uninterrupted one: (predict again, out, whole)."""
    path, _ = model_file
    source = tmp_path / "in.ome.zarr"
    io.write_image(source, volume)
    options = PredictOptions(block_shape=(1, 16, 32))
    predict_file(path, source, tmp_path / "whole.ome.zarr", options=options)
    out = tmp_path / "out.ome.zarr"
    predict_file(path, source, out, options=options, shard=shard)
    return lambda: predict_file(path, source, out, options=options), out, tmp_path / "whole.ome.zarr"


def test_gather_killed_after_checking_the_chunks_finishes_on_rerun(tmp_path, model_file, volume, monkeypatch):
    rerun, out, whole = _interrupted_prediction(tmp_path, model_file, volume, shard=(0, 1))

    def killed(*args, **kwargs):  # a kill while the chunk markers are being removed
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr("unet_core.predict.shutil.rmtree", killed)
        with pytest.raises(KeyboardInterrupt):
            gather_prediction(out)
    shutil.rmtree(PredictionStore(out).done)  # the markers are gone, the store not yet in place
    assert not out.exists()
    rerun()
    assert _store_bytes(out) == _store_bytes(whole)


def test_a_failed_gather_leaves_the_previous_prediction_in_place(tmp_path, model_file, volume, monkeypatch):
    _, out, _ = _interrupted_prediction(tmp_path, model_file, volume, shard=(0, 1))
    io.write_image(out, np.zeros_like(volume))  # what an earlier run published
    work, rename = PredictionStore(out).work, os.replace

    def failing(source, target):  # the store cannot be moved into place (an I/O error)
        if Path(source) == work:
            raise OSError(errno.EIO, "Input/output error")
        rename(source, target)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", failing)
        with pytest.raises(OSError, match="Input/output error"):
            gather_prediction(out)
    assert np.array_equal(io.read_volume(out), np.zeros_like(volume))
    assert work.exists()


def test_a_gather_killed_just_before_the_rename_finishes_on_rerun(tmp_path, model_file, volume, monkeypatch):
    _, out, whole = _interrupted_prediction(tmp_path, model_file, volume, shard=(0, 1))
    work, rename = PredictionStore(out).work, os.replace

    def killed(source, target):  # the output's own attributes are written, the rename never happens
        if Path(source) == work:
            raise KeyboardInterrupt
        rename(source, target)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", killed)
        with pytest.raises(KeyboardInterrupt):
            gather_prediction(out)
    assert not out.exists() and work.exists()
    gather_prediction(out)
    assert _store_bytes(out) == _store_bytes(whole)


@pytest.mark.parametrize("leftover", ["root metadata lost", "deletion killed"])
def test_a_work_store_a_kill_left_unreadable_is_started_afresh(tmp_path, model_file, volume, leftover):
    rerun, out, whole = _interrupted_prediction(tmp_path, model_file, volume, shard=(0, 2))
    work = PredictionStore(out).work
    if leftover == "root metadata lost":  # killed while zarr created it, or while it was deleted
        (work / "zarr.json").unlink()
    else:  # a discard killed between its rename and the end of the deletion
        work.rename(work.with_name(f".{work.name}.old-0123abcd"))
    rerun()
    assert _store_bytes(out) == _store_bytes(whole)
    assert [p.name for p in tmp_path.iterdir() if ".old-" in p.name or p.name.endswith(".work")] == []


def test_big_endian_input_predicts_as_native(tmp_path, model_file, volume):
    path, model = model_file
    zarr.create_array(str(tmp_path / "be.zarr"), data=volume.astype(">f4"), zarr_format=2)
    options = PredictOptions(block_shape=(1, 16, 16), output_dtype="float32")
    predict_file(path, tmp_path / "be.zarr", tmp_path / "out.ome.zarr", options=options)
    assert np.abs(io.read_volume(tmp_path / "out.ome.zarr") - _whole(model, volume)).max() <= 1e-5


def test_output_path_that_is_a_file_is_refused_before_predicting(tmp_path, model_file, volume):
    path, _ = model_file
    io.write_image(tmp_path / "in.ome.zarr", volume)
    (tmp_path / "out.ome.zarr").write_text("not a store")
    with pytest.raises(ValueError, match="out.ome.zarr: a file, not an OME-Zarr folder"):
        predict_file(path, tmp_path / "in.ome.zarr", tmp_path / "out.ome.zarr", options=PredictOptions())
    assert not PredictionStore(tmp_path / "out.ome.zarr").work.exists()


@pytest.mark.parametrize(
    ("device", "match"),
    [("gpu", "'gpu' is not a torch device; use auto, cpu, cuda"), ("cuda:99", "'cuda:99': torch sees")],
)
def test_devices_this_machine_lacks_are_refused(device, match):
    with pytest.raises(ValueError, match=match):
        resolve_device(device)


@pytest.mark.slow  # real processes killed
def test_killed_prediction_resumes_to_identical_bytes(tmp_path, model_file):
    path, _ = model_file
    big = np.random.default_rng(5).integers(0, 255, (6, 64, 96)).astype(np.uint8)
    source = tmp_path / "in.ome.zarr"
    io.write_image(source, big)
    args = [str(path), str(source), "--block-shape", "1", "16", "16", "--threads", "1"]
    run = [sys.executable, "-m", "unet_core", "predict"]
    subprocess.run([*run, args[0], args[1], str(tmp_path / "straight.ome.zarr"), *args[2:]], check=True)

    killed = tmp_path / "killed.ome.zarr"
    done = PredictionStore(killed).done
    for attempt in range(2):  # kill twice at different points, then let it finish
        proc = subprocess.Popen([*run, args[0], args[1], str(killed), *args[2:]])
        deadline = time.time() + 120
        while time.time() < deadline and (not done.exists() or len(list(done.iterdir())) < 5 + 40 * attempt):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not killed.exists()
    n_done = len(list(done.iterdir()))
    assert 0 < n_done < 6 * 4 * 6
    subprocess.run([*run, args[0], args[1], str(killed), *args[2:]], check=True)
    assert _store_bytes(killed) == _store_bytes(tmp_path / "straight.ome.zarr")


def test_output_inside_the_input_is_refused(tmp_path, model_file, volume):
    path, _ = model_file
    io.write_image(tmp_path / "in.ome.zarr", volume)
    with pytest.raises(ValueError, match="would overwrite the input"):
        predict_file(
            path, tmp_path / "in.ome.zarr", tmp_path / "in.ome.zarr" / "pred", options=PredictOptions()
        )


@pytest.mark.slow  # torch.compile on the CPU
def test_compiled_network_predicts_the_same(model_file, volume):
    _, model = model_file
    compiled = TilePredictor(model, normalization=NORMALIZATION, compile=True)
    assert np.abs(predict_array(compiled, volume[:1]) - _whole(model, volume[:1])).max() <= 1e-4


def _checkpoint(path, model, normalization=NORMALIZATION):
    state = {"model_config": model.config.to_dict(), "model_state": model.state_dict()}
    save_checkpoint(path, state | {"normalization": list(normalization)})
    return path


def test_several_checkpoints_predict_the_mean_of_their_probabilities(tmp_path, model_file, volume):
    from unet_core.cli import main

    path, model = model_file
    torch.manual_seed(1)
    other = UNet(UNetConfig(depth=2, width=6))
    other_path = _checkpoint(tmp_path / "other.pt", other)
    source = tmp_path / "in.ome.zarr"
    io.write_image(source, volume, chunks=(1, 32, 32))
    out = tmp_path / "mean.ome.zarr"
    argv = ["predict", str(path), str(other_path), str(source), str(out), "--output-dtype", "float32"]
    assert main([*argv, "--block-shape", "1", "20", "33"]) == 0
    expected = (_whole(model, volume) + _whole(other, volume)) / 2
    assert np.abs(io.read_volume(out) - expected).max() <= 1e-5
    assert np.abs(expected - _whole(model, volume)).max() > 0.01  # the second model counts

    predict_file(
        [path, path], source, tmp_path / "twice.ome.zarr", options=PredictOptions(output_dtype="float32")
    )
    assert np.abs(io.read_volume(tmp_path / "twice.ome.zarr") - _whole(model, volume)).max() <= 1e-5


@pytest.mark.parametrize(
    ("other", "normalization", "match"),
    [
        (UNetConfig(depth=2, width=4), (0.0, 255.0), "normalise their input differently"),
        (UNetConfig(depth=3, width=4), NORMALIZATION, "one depth"),
    ],
)
def test_checkpoints_that_cannot_be_averaged_are_refused(
    tmp_path, model_file, volume, other, normalization, match
):
    from unet_core.checkpoint import CheckpointError

    other_path = _checkpoint(tmp_path / "other.pt", UNet(other), normalization)
    source = tmp_path / "in.ome.zarr"
    io.write_image(source, volume, chunks=(1, 32, 32))
    with pytest.raises(CheckpointError, match=f"other.pt: .*{match}"):
        predict_file([model_file[0], other_path], source, tmp_path / "out.ome.zarr", options=PredictOptions())
    assert not (tmp_path / "out.ome.zarr").exists()
