"""The lazy dask API and the graph `unet-core predict` runs: the same values for any input and chunking,
blocks computed only where asked, a model loaded once per process, and dask.distributed runs byte for
byte equal to the default run."""

import os
import sys
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import tifffile
import torch
import zarr

import unet_core
from unet_core import io
from unet_core.blockwise import ModelHandle, loaded_models, predict_dask
from unet_core.checkpoint import save_checkpoint
from unet_core.cli import main
from unet_core.model import UNet, UNetConfig
from unet_core.predict import PredictOptions, predict_file

OPTIONS = PredictOptions(block_shape=(1, 40, 48), device="cpu")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    model = UNet(UNetConfig(depth=2, width=4))
    path = tmp_path_factory.mktemp("model") / "best.pt"
    state = {"model_config": model.config.to_dict(), "model_state": model.state_dict()}
    save_checkpoint(path, state | {"normalization": [20.0, 230.0]})
    return path


@pytest.fixture(scope="module")
def volume():
    return np.random.default_rng(7).integers(0, 255, (3, 90, 101)).astype(np.uint8)


@pytest.fixture(scope="module")
def stored(tmp_path_factory, checkpoint, volume):
    """What `unet-core predict` stores for ``volume`` (uint8 and float32), and the input as a file."""
    folder = tmp_path_factory.mktemp("stored")
    source = folder / "in.ome.zarr"
    io.write_image(source, volume, chunks=(1, 32, 32))
    outputs = {}
    for dtype in ("uint8", "float32"):
        options = PredictOptions(**{**OPTIONS.__dict__, "output_dtype": dtype})
        predict_file(checkpoint, source, folder / f"{dtype}.ome.zarr", options=options)
        outputs[dtype] = io.read_volume(folder / f"{dtype}.ome.zarr")
    return source, outputs


@pytest.mark.parametrize(
    "chunks", [(1, 90, 101), (2, 33, 41), (3, 7, 100), (1, 64, 5)], ids=["slices", "odd", "thin", "narrow"]
)
def test_any_chunking_of_a_dask_input_gives_what_predict_stores(checkpoint, volume, stored, chunks):
    _, outputs = stored
    prob = predict_dask(checkpoint, da.from_array(volume, chunks=chunks), options=OPTIONS)
    assert prob.chunks == ((1, 1, 1), (40, 40, 10), (48, 48, 5))
    assert prob.dtype == np.uint8
    assert np.array_equal(prob.compute(), outputs["uint8"])


def test_every_kind_of_input_gives_what_predict_stores(checkpoint, volume, stored, tmp_path):
    source, outputs = stored
    tifffile.imwrite(tmp_path / "in.tif", volume, photometric="minisblack")
    inputs = {
        "numpy": volume,
        "zarr": zarr.open_array(str(source / "0"), mode="r"),
        "from_zarr": da.from_zarr(str(source / "0")),
        "ome-zarr path": source,
        "tiff path": str(tmp_path / "in.tif"),
        "io.Volume": io.open_volume(source),
    }
    for name, given in inputs.items():
        prob = predict_dask(checkpoint, given, options=OPTIONS)
        assert np.array_equal(prob.compute(), outputs["uint8"]), name


def test_float_output_and_other_blocks(checkpoint, volume, stored):
    _, outputs = stored
    options = PredictOptions(block_shape=(1, 40, 48), device="cpu", output_dtype="float32")
    prob = predict_dask(checkpoint, da.from_array(volume, chunks=(1, 50, 50)), options=options)
    assert prob.dtype == np.float32
    assert np.abs(prob.compute() - outputs["float32"]).max() <= 1e-6
    whole = predict_dask(checkpoint, volume, options=PredictOptions(block_shape=(3, 90, 101), device="cpu"))
    assert whole.numblocks == (1, 1, 1)  # another tiling: equal up to float rounding, not byte for byte
    assert np.abs(whole.compute().astype(int) - outputs["uint8"].astype(int)).max() <= 1


def test_a_2d_image_is_one_slice(checkpoint, volume, stored):
    _, outputs = stored
    prob = predict_dask(checkpoint, volume[1], options=OPTIONS)
    assert prob.shape == (1, 90, 101)
    assert np.array_equal(prob.compute()[0], outputs["uint8"][1])


def test_a_region_computes_only_the_blocks_under_it(checkpoint, volume, stored):
    """Input chunks beyond the region's block and its halo raise if read: computing the region never
    touches them (block (0, 0) of 40 x 48 reads y < 60, x < 68 with a depth-2 net's halo of 20)."""
    _, outputs = stored

    def guarded(block, block_info=None):
        (z0, _), (y0, _), (x0, _) = block_info[0]["array-location"]
        if z0 != 1 or y0 >= 60 or x0 >= 90:
            raise AssertionError(f"input chunk at {(z0, y0, x0)} was read")
        return block

    source = da.from_array(volume, chunks=(1, 30, 30)).map_blocks(guarded, dtype=volume.dtype)
    prob = predict_dask(checkpoint, source, options=OPTIONS)
    assert np.array_equal(prob[1, 3:30, 10:40].compute(), outputs["uint8"][1, 3:30, 10:40])


def test_the_package_exports_predict_dask_lazily():
    assert unet_core.predict_dask is predict_dask
    # importing the package alone stays light (the workflow imports it to parse the Snakefile)
    code = "import sys, unet_core; sys.exit('torch' in sys.modules or 'dask' in sys.modules)"
    assert os.system(f"{sys.executable} -c {code!r}") == 0


def test_a_process_loads_a_model_once(checkpoint, volume):
    handle = ModelHandle.create(checkpoint, device="cpu")
    assert handle.load()[0] is handle.load()[0]
    before = loaded_models()
    with dask.config.set(scheduler="threads", num_workers=4):
        predict_dask(checkpoint, volume, options=OPTIONS).compute()
        predict_dask(checkpoint, volume, options=OPTIONS).compute()
    assert loaded_models() <= max(before, 1) + 1  # one more at most, however many blocks and threads


def test_a_checkpoint_written_anew_is_loaded_anew(tmp_path, volume):
    path = tmp_path / "m.pt"
    results = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = UNet(UNetConfig(depth=2, width=4))
        state = {"model_config": model.config.to_dict(), "model_state": model.state_dict()}
        save_checkpoint(path, state | {"normalization": [0.0, 255.0]})
        os.utime(path, ns=(seed * 10**9, seed * 10**9))  # distinct stamps even within one clock tick
        results.append(predict_dask(path, volume[:1], options=OPTIONS).compute())
    assert not np.array_equal(*results)


@pytest.mark.parametrize(
    ("given", "match"),
    [
        (np.zeros((2, 2, 3, 4)), "2D image or a .Z, Y, X. stack"),
        (np.zeros((3, 4), complex), "real numbers"),
        (da.zeros((2, 8, 8))[da.zeros((2, 8, 8))[:, 0, 0] > 0], "unknown chunk sizes"),
    ],
)
def test_volumes_that_cannot_be_predicted_are_refused(checkpoint, given, match):
    with pytest.raises(ValueError, match=match):
        predict_dask(checkpoint, given, options=OPTIONS)


def test_a_missing_checkpoint_is_refused_before_any_task(tmp_path, volume):
    with pytest.raises(ValueError, match="no such checkpoint"):
        predict_dask(tmp_path / "missing.pt", volume, options=OPTIONS)


@pytest.mark.slow  # starts a dask.distributed cluster of worker processes
def test_a_cluster_scheduler_writes_the_same_bytes(tmp_path, checkpoint, stored, capsys):
    """`--scheduler` runs the graph on a dask.distributed cluster of worker processes (by address and by
    scheduler file): byte for byte the default run's store; each worker loads the model once."""
    from distributed import Client, LocalCluster

    source, _ = stored
    common = ["predict", str(checkpoint), str(source), "--block-shape", "1", "40", "48", "--device", "cpu"]
    assert main([*common, str(tmp_path / "threads.ome.zarr")]) == 0
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            scheduler_file = tmp_path / "scheduler.json"
            client.write_scheduler_file(str(scheduler_file))
            for name, address in (("address", cluster.scheduler_address), ("file", str(scheduler_file))):
                out = tmp_path / f"{name}.ome.zarr"
                assert main([*common, str(out), "--scheduler", address]) == 0
                assert _tree(out) == _tree(tmp_path / "threads.ome.zarr")
            assert set(client.run(loaded_models).values()) == {1}


def test_an_unreachable_scheduler_is_one_clear_error(tmp_path, checkpoint, stored, capsys):
    source, _ = stored
    argv = ["predict", str(checkpoint), str(source), str(tmp_path / "o.ome.zarr"), "--device", "cpu"]
    assert main([*argv, "--scheduler", "tcp://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "no dask scheduler answers there" in err and "tcp://127.0.0.1:9" in err


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_two_zarr_arrays_of_one_name_and_shape_are_two_predictions(checkpoint, volume, tmp_path):
    """Both are "/0" of shape (3, 90, 101): the lazy arrays must not share a dask name (dask would take
    one's blocks for the other's)."""
    stores = []
    for k, data in enumerate((volume, 255 - volume)):
        io.write_image(tmp_path / f"{k}.ome.zarr", data)
        stores.append(zarr.open_array(str(tmp_path / f"{k}.ome.zarr" / "0"), mode="r"))
    first, second = (predict_dask(checkpoint, s, options=OPTIONS) for s in stores)
    assert first.name != second.name
    together = dask.compute(first, second)
    assert not np.array_equal(*together)
