"""Concurrent writers: predict shards of one volume at once, and two writers of one atomic output."""

import subprocess
import threading

import numpy as np
import pytest

from unet_core import io
from unet_core.cli import main
from unet_core.predict import PredictionStore, PredictOptions, predict_file
from unet_core.segment import segment_file

from ._support import CLI, ENV, leftovers, random_volume, torch_threads, tree_bytes


def _together(*argvs) -> None:
    """Run ``unet-core argv`` for every argv at the same time; all must succeed."""
    procs = [
        subprocess.Popen([*CLI, *map(str, argv)], stderr=subprocess.PIPE, text=True, env=ENV)
        for argv in argvs
    ]
    errors = [proc.communicate(timeout=600)[1] for proc in procs]
    for proc, err in zip(procs, errors, strict=True):
        assert proc.returncode == 0, err[-3000:]


def _gather_and_compare(out, case) -> None:
    assert not out.exists()  # nothing published before the gather
    assert main([str(a) for a in case.argv(out, "--gather")]) == 0
    assert tree_bytes(out) == case.reference  # no chunk lost, torn or different
    assert not PredictionStore(out).work.exists()


def test_two_shards_at_once_gather_to_the_single_process_bytes(tmp_path, predict_case):
    out = tmp_path / "pred.ome.zarr"
    _together(predict_case.argv(out, "--shard", "0/2"), predict_case.argv(out, "--shard", "1/2"))
    _gather_and_compare(out, predict_case)


def test_the_same_shard_twice_at_once_gathers_to_the_single_process_bytes(tmp_path, predict_case):
    out = tmp_path / "pred.ome.zarr"
    _together(predict_case.argv(out, "--shard", "0/2"), predict_case.argv(out, "--shard", "0/2"))
    with pytest.raises(ValueError, match="72 of 144 chunks are not written yet"):
        PredictionStore(out).finish()
    with torch_threads(1):
        options = PredictOptions(block_shape=(1, 16, 16))
        predict_file(predict_case.model, predict_case.source, out, options=options, shard=(1, 2))
    _gather_and_compare(out, predict_case)


def test_two_writers_of_one_atomic_output_both_succeed(tmp_path):
    """Each writer builds its own temporary store, and neither sweeps away the other's live one."""
    prob = random_volume((8, 96, 96), seed=3)
    io.write_image(tmp_path / "prob.ome.zarr", prob, chunks=(1, 24, 24))
    segment_file(tmp_path / "prob.ome.zarr", tmp_path / "alone.ome.zarr")
    out = tmp_path / "seg.ome.zarr"
    results, errors, start = [], [], threading.Barrier(4)

    def writer():
        start.wait()
        try:
            results.append(segment_file(tmp_path / "prob.ome.zarr", out))
        except Exception as err:  # collected: an exception in a thread would go unseen
            errors.append(err)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    assert np.array_equal(io.read_volume(out), io.read_volume(tmp_path / "alone.ome.zarr"))
    assert not leftovers(out)


def test_sweep_removes_only_what_dead_writers_left(tmp_path):
    out = tmp_path / "out.ome.zarr"
    stale = [tmp_path / ".out.ome.zarr.tmp-0badc0de", tmp_path / ".out.ome.zarr.old-00000000"]
    for path in stale:
        (path / "0").mkdir(parents=True)
    (tmp_path / ".out.ome.zarr.tmp-1234abcd").write_bytes(b"half a file")  # a killed file write
    (tmp_path / ".out.ome.zarr.work").mkdir()  # predict's resumable work store is not a leftover
    (tmp_path / ".other.ome.zarr.tmp-0badc0de").mkdir()  # another output's
    with io.atomic_directory(out) as live:
        assert sorted(p.name for p in io.sweep_leftovers(out)) == []  # swept on entry already
        assert live.exists()  # a live writer's store survives a sweep by another writer
        assert not any(p.exists() for p in stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".other.ome.zarr.tmp-0badc0de",
        ".out.ome.zarr.work",
        "out.ome.zarr",
    ]
