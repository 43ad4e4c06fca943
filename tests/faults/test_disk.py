"""Unwritable outputs: a read-only folder, a full disk, a path through a file.

Tests run as root here, where ``chmod 0o555`` does not stop writes. Where ``unshare -m`` may mount (root,
or a user namespace), a read-only bind mount and a 128 KiB tmpfs give the real errors in a private mount
namespace that vanishes with the command; elsewhere those two tests skip, and the monkeypatched ones below
(a disk that fills after some writes, for every stage) cover the same outcome. Every case asserts: exit
code 2 and one error line naming the output and the fix, inputs unchanged, and no output or temporary
copy left that a later run could take for finished.
"""

import errno
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import tifffile
import zarr.storage._local as zarr_local

from unet_core import io
from unet_core.data.synthetic import generate_volume

from ._support import (
    CLI,
    ENV,
    assert_no_output,
    assert_user_error,
    cli,
    leftovers,
    random_volume,
    tree_bytes,
    tree_hash,
)

FULL = r"cannot write {out} \(No space left on device\); free disk space or write the output to another"
READ_ONLY = (
    r"cannot write {out} \(Read-only file system: .*\); the file system is read-only: write the output"
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stack")
    raw, labels = generate_volume((4, 96, 96), seed=6)
    for name, data in (("raw", raw), ("labels", labels)):
        tifffile.imwrite(folder / f"{name}.tif", data, photometric="minisblack")
    io.write_image(folder / "prob.ome.zarr", random_volume((4, 96, 96), seed=7), chunks=(1, 48, 48))
    return folder


def _can_mount(tmp_path: Path) -> bool:
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=4k tmpfs {shlex.quote(str(tmp_path))}"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.fixture
def private_mount(tmp_path):
    """Run a command with ``folder`` mounted by ``mount_args`` in a private mount namespace; returns the
    result and the files under ``folder`` just before the namespace went away."""
    if not _can_mount(tmp_path):
        pytest.skip("needs `unshare -m` with mount rights; the monkeypatched tests cover the outcome")

    def run(mount: str, folder: Path, argv: list) -> tuple[subprocess.CompletedProcess, list[str]]:
        listing = tmp_path / "listing.txt"
        q = shlex.quote
        script = (
            f"{mount} && {shlex.join([*CLI, *map(str, argv)])}; rc=$?; "
            f"find {q(str(folder))} -mindepth 1 -printf '%P\\n' > {q(str(listing))}; exit $rc"
        )
        result = subprocess.run(
            ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=ENV
        )
        return result, sorted(listing.read_text().split())

    return run


def test_read_only_output_folder_is_one_clear_error(tmp_path, private_mount, stack):
    folder = tmp_path / "read only"
    folder.mkdir()
    out = folder / "data" / "d.ome.zarr"
    q = shlex.quote(str(folder))
    before = tree_hash(stack)
    argv = ["prepare", out, "--raw", stack / "raw.tif", "--labels", stack / "labels.tif"]
    result, files = private_mount(f"mount --bind {q} {q} && mount -o remount,bind,ro {q}", folder, argv)
    assert_user_error(result.returncode, result.stderr, "prepare", READ_ONLY.format(out=out))
    assert files == [] and tree_hash(stack) == before


@pytest.mark.parametrize("stage", ["prepare", "evaluate"])
def test_disk_full_midway_is_one_clear_error_and_leaves_nothing(tmp_path, private_mount, stack, stage):
    """A 128 KiB tmpfs: the store's weights (144 KiB as float32) or the CSVs do not fit."""
    folder = tmp_path / "small disk"
    folder.mkdir()
    before = tree_hash(stack)
    if stage == "prepare":
        out = folder / "d.ome.zarr"
        argv = ["prepare", out, "--raw", stack / "raw.tif", "--labels", stack / "labels.tif"]
        argv += ["--compression-level", "0", "--chunks", "1", "48", "48"]
        size = "128k"
    else:
        out = folder / "metrics.csv"
        argv = ["evaluate", stack / "prob.ome.zarr", stack / "labels.tif", "--out", out, "--slices", "all"]
        size = "4k"  # one page: the per-threshold table does not fit
    q = shlex.quote(str(folder))
    result, files = private_mount(f"mount -t tmpfs -o size={size} tmpfs {q}", folder, argv)
    assert_user_error(result.returncode, result.stderr, stage, FULL.format(out=out))
    assert files == [] and tree_hash(stack) == before


# -- simulated: a disk that fills up after some writes ------------------------------------------------


@pytest.fixture
def fill_disk(monkeypatch):
    """``fill_disk(folder, after=n)``: writes under ``folder`` fail with ENOSPC after ``n`` Zarr chunks;
    plain files (CSV, checkpoints) fail half-written."""

    def arm(folder: Path, *, after: int) -> None:
        folder = str(folder)
        stored = []
        put, fdopen = zarr_local._put, os.fdopen

        def full_put(path, value, exclusive=False):
            if str(path).startswith(folder) and path.name != "zarr.json":
                if len(stored) >= after:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                stored.append(path)
            return put(path, value, exclusive=exclusive)

        def full_fdopen(fd, *args, **kwargs):
            handle = fdopen(fd, *args, **kwargs)
            if not os.readlink(f"/proc/self/fd/{fd}").startswith(folder):
                return handle
            write = handle.write

            def half_then_full(data):
                write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            handle.write = half_then_full
            return handle

        monkeypatch.setattr(zarr_local, "_put", full_put)
        monkeypatch.setattr(os, "fdopen", full_fdopen)

    return arm


def _stage_argv(stage: str, out: Path, stack: Path, tiny_store: Path, predict_case) -> list:
    """The CLI call of ``stage`` writing ``out`` from this module's inputs (options can be appended)."""
    return {
        "prepare": ["prepare", out],
        "segment": ["segment", stack / "prob.ome.zarr", out],
        "predict": predict_case.argv(out),
        "train": ["train", tiny_store, out, "--depth", "2", "--width", "4", "--tile-size", "84"],
        "evaluate": [
            "evaluate",
            stack / "prob.ome.zarr",
            stack / "labels.tif",
            "--out",
            out,
            "--slices",
            "all",
        ],
    }[stage]


def test_full_disk_in_every_stage(tmp_path, capsys, fill_disk, stack, tiny_store, predict_case):
    """prepare, segment, predict, train and evaluate: the first chunk or file past the limit fails."""
    out_dir = tmp_path / "out"
    cases = {
        "prepare": (out_dir / "d.ome.zarr", ["--raw", stack / "raw.tif", "--labels", stack / "labels.tif"]),
        "segment": (out_dir / "s.ome.zarr", []),
        "predict": (out_dir / "p.ome.zarr", []),
        "train": (out_dir / "model", []),
        "evaluate": (out_dir / "metrics.csv", []),
    }
    inputs = [stack, tiny_store, predict_case.source, predict_case.model]
    before = tree_hash(*inputs)
    fill_disk(out_dir, after=3)  # prepare writes 4: one shard per array
    for stage, (out, extra) in cases.items():
        code, stderr = cli(capsys, *_stage_argv(stage, out, stack, tiny_store, predict_case), *extra)
        assert_user_error(code, stderr, stage, FULL.format(out=out))
        assert_no_output(out / "best.pt" if stage == "train" else out)
    assert tree_hash(*inputs) == before
    # Left: predict's resumable work store (never taken for output) and train's .work/ resume state,
    # without any temporary file of a failed write.
    assert sorted(p.name for p in out_dir.iterdir()) == [".p.ome.zarr.lock", ".p.ome.zarr.work", "model"]
    assert sorted(p.name for p in (out_dir / "model").iterdir()) == [".work"]
    assert not [p for p in (out_dir / "model" / ".work").iterdir() if ".tmp" in p.name]


def test_predict_finishes_after_the_disk_is_freed(tmp_path, capsys, monkeypatch, fill_disk, predict_case):
    out = tmp_path / "p.ome.zarr"
    fill_disk(tmp_path, after=40)
    assert cli(capsys, *predict_case.argv(out))[0] == 2
    monkeypatch.undo()  # space freed
    assert cli(capsys, *predict_case.argv(out))[0] == 0
    assert tree_bytes(out) == predict_case.reference


@pytest.mark.parametrize("stage", ["prepare", "train", "predict", "segment", "evaluate"])
def test_output_path_through_a_file_is_one_clear_error(
    tmp_path, capsys, stage, stack, tiny_store, predict_case
):
    """What a read-only or misspelt folder looks like without root: a path whose folder is a file."""
    (tmp_path / "a file").write_text("not a folder")
    out = tmp_path / "a file" / "sub" / ("metrics.csv" if stage == "evaluate" else "out.ome.zarr")
    extra = {"prepare": ["--synthetic-shape", "2", "32", "32"], "train": ["--iterations", "1"]}
    code, stderr = cli(
        capsys, *_stage_argv(stage, out, stack, tiny_store, predict_case), *extra.get(stage, [])
    )
    assert_user_error(
        code, stderr, stage, "Not a directory: .*a file/sub.*; a part of the path is a file where a folder is"
    )
    assert (tmp_path / "a file").read_text() == "not a folder"
    assert not leftovers(out)
