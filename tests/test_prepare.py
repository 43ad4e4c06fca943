import asyncio
import logging
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
import zarr

from unet_core import io
from unet_core import prepare as prepare_module
from unet_core.data.weights import instances_from_binary, weight_volume
from unet_core.dataset import TrainingStore
from unet_core.prepare import (
    OUTPUT_BYTES,
    SHUFFLE,
    PrepareConfig,
    make_split,
    prepare,
)

ROOT = Path(__file__).resolve().parents[1]
ISBI = Path(__file__).parents[2] / "shared/data/isbi2012"


def _imwrite(path, data):
    tifffile.imwrite(path, data, photometric="minisblack")


def _cells_and_raw(n=4, size=24, seed=0):
    """Binary ISBI-style labels (a membrane cross per slice, moving with z) and textured raw."""
    labels = np.full((n, size, size), 255, np.uint8)
    for z in range(n):
        labels[z, 6 + z, :] = 0
        labels[z, :, 10 + z] = 0
    raw = np.random.default_rng(seed).integers(100, 200, labels.shape).astype(np.uint8)
    raw[labels == 0] //= 4
    return raw, labels


def _tiff_inputs(tmp_path, raw, labels):
    _imwrite(tmp_path / "raw.tif", raw)
    _imwrite(tmp_path / "labels.tif", labels)
    return {"raw": str(tmp_path / "raw.tif"), "labels": str(tmp_path / "labels.tif")}


def test_synthetic_store_has_every_part(tiny_store):
    store = TrainingStore.open(tiny_store)
    raw, cells = store.raw, store.cells
    assert raw.shape == cells.shape == store.weights.shape == (5, 64, 64)
    assert set(np.unique(cells[...])) == {0, 255}
    instances = store.instances[...]
    assert ((instances > 0) == (cells[...] > 0)).all()
    assert store.weights[...].min() > 0
    split = store.split
    assert (split.train, split.val, split.test) == ((0, 3), (3, 4), (4, 5))
    assert io.open_volume(tiny_store).voxel_size == (50.0, 4.0, 4.0)
    assert io.open_volume(tiny_store).unit == "nanometer"
    assert store.root["labels"].attrs["ome"]["labels"] == ["cells", "instances"]


def test_tiff_stack_with_isbi_polarity(tmp_path):
    raw, labels = _cells_and_raw()
    prepare(tmp_path / "d.ome.zarr", PrepareConfig(**_tiff_inputs(tmp_path, raw, labels)))
    root = zarr.open_group(str(tmp_path / "d.ome.zarr"), mode="r")
    assert np.array_equal(root["0"][...], raw) and np.array_equal(root["labels/cells/0"][...], labels)
    split = TrainingStore.open(tmp_path / "d.ome.zarr").split
    assert split.train == (0, 3) and split.val == (3, 4)
    assert int(root["labels/instances/0"][0].max()) == 4  # the membrane cross cuts each slice in four


def test_compressed_tiffs_convert_without_a_false_missing_chunks_warning(tmp_path, caplog):
    """tifffile's zarr view of a compressed TIFF lists no chunk keys; that is not an incomplete copy."""
    raw, labels = _cells_and_raw()
    for name, data in (("raw.tif", raw), ("labels.tif", labels)):
        tifffile.imwrite(tmp_path / name, data, compression="zlib", photometric="minisblack")
    cfg = PrepareConfig(raw=str(tmp_path / "raw.tif"), labels=str(tmp_path / "labels.tif"))
    with caplog.at_level(logging.WARNING):
        prepare(tmp_path / "d.ome.zarr", cfg, threads=1)
    assert "not stored" not in caplog.text
    root = zarr.open_group(str(tmp_path / "d.ome.zarr"), mode="r")
    assert np.array_equal(root["0"][...], raw) and np.array_equal(root["labels/cells/0"][...], labels)


def test_inverted_polarity_gives_the_same_store(tmp_path):
    raw, labels = _cells_and_raw()
    prepare(tmp_path / "a.ome.zarr", PrepareConfig(**_tiff_inputs(tmp_path, raw, labels)))
    _imwrite(tmp_path / "inverted.tif", np.where(labels == 0, 1, 0).astype(np.uint8))
    cfg = PrepareConfig(
        raw=str(tmp_path / "raw.tif"), labels=str(tmp_path / "inverted.tif"), membrane_value=1
    )
    prepare(tmp_path / "b.ome.zarr", cfg)
    a, b = (zarr.open_group(str(tmp_path / n), mode="r") for n in ("a.ome.zarr", "b.ome.zarr"))
    for name in ("labels/cells/0", "labels/instances/0", "weights/0"):
        assert np.array_equal(a[name][...], b[name][...]), name


@pytest.fixture
def slow_disk(monkeypatch):
    """Every chunk write to disk takes 20 ms longer."""
    write = zarr.storage.LocalStore.set

    async def slow(self, key, value):
        await asyncio.sleep(0.02)
        return await write(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", slow)


def _peak_mib(run) -> float:
    """Peak of the memory Python and numpy allocate (traced) while ``run()`` runs, in MiB."""
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_memory_stays_within_the_slab_budget_whatever_the_stack_and_disk(tmp_path, monkeypatch, slow_disk):
    """A 64-slice stack whose outputs alone take 40 MiB converts within its 16 MiB slab budget on a slow
    disk (each slab waits for the write before it), at the peak of a 16-slice stack, and streaming in
    slabs writes what a whole-volume computation gives. (Shards of 4 slices: a shard file is read back
    and rewritten whole, so shards bound memory too.)"""
    monkeypatch.setattr(prepare_module, "SHARD_PIXELS", 4 * 256 * 256)
    peaks = {}
    for n in (16, 32, 64):
        raw, labels = _cells_and_raw(n=n, size=256)
        (tmp_path / str(n)).mkdir()
        inputs = _tiff_inputs(tmp_path / str(n), raw, labels)
        out = tmp_path / str(n) / "d.ome.zarr"
        cfg = PrepareConfig(**inputs, chunks=(2, 128, 128), slab_mb=16, w0=0.0)
        peaks[n] = _peak_mib(lambda out=out, cfg=cfg: prepare(out, cfg, threads=2))
        store = TrainingStore.open(out)
        instances = store.instances[...]
        assert np.array_equal(instances, instances_from_binary(labels))  # ids unique over the volume
        assert np.array_equal(store.weights[...], weight_volume(instances, w0=0.0))
        assert store.raw.chunks == (2, 128, 128)
    assert 64 * 256 * 256 * OUTPUT_BYTES / 2**20 == 40  # what holding the stack's outputs would take
    assert peaks[64] <= 16 and peaks[64] <= 1.25 * peaks[16], peaks


@pytest.mark.parametrize(("labels_kind", "shard"), [("binary", 9), ("instances", 9), ("binary", 4)])
def test_threads_and_slabs_do_not_change_a_byte_of_the_store(tmp_path, monkeypatch, labels_kind, shard):
    """Slices converted by four threads, in slabs written behind the next slab's conversion, give the
    same files as one thread converting two slices at a time (and ids unique over the volume), although
    neither slab size fits the shards, which are then rewritten slab by slab."""
    monkeypatch.setattr(prepare_module, "SHARD_PIXELS", shard * 96 * 96)
    raw, labels = _cells_and_raw(n=9, size=96)
    instances = instances_from_binary(labels)
    if labels_kind == "instances":
        labels = (instances * 5).astype(np.uint16)
    inputs = _tiff_inputs(tmp_path, raw, labels)
    stores = {}
    for cpus, slab_mb in ((1, 1), (4, 3)):  # slabs of 2 slices, one thread; of 3 slices, four threads
        monkeypatch.setattr(prepare_module, "usable_cpus", lambda cpus=cpus: cpus)
        out = tmp_path / f"{cpus}.ome.zarr"
        prepare(out, PrepareConfig(**inputs, labels_kind=labels_kind, chunks=(1, 48, 96), slab_mb=slab_mb))
        stores[cpus] = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        root = zarr.open_group(str(out), mode="r")
        expected = instances if labels_kind == "binary" else labels
        assert np.array_equal(root["labels/instances/0"][...], expected), cpus
    shards = {p for p in stores[1] if p.name.startswith("c.")}
    assert len(shards) == 4 * -(-9 // shard) and stores[4] == stores[1]


def test_slabs_write_whole_shards_with_flat_keys(tmp_path, monkeypatch):
    """Slabs of whole shards (of 2 slices here) write the same files as one slab of the whole stack;
    chunk keys are flat (no folder per shard); Zarr and our readers follow the layout."""
    monkeypatch.setattr(prepare_module, "SHARD_PIXELS", 2 * 128 * 128)
    raw, labels = _cells_and_raw(n=7, size=128)
    inputs = _tiff_inputs(tmp_path, raw, labels)
    stores = {}
    for slab_mb in (3, 256):  # room for 5 slices (2 shards) per slab, or for the whole stack
        out = tmp_path / f"{slab_mb}.ome.zarr"
        prepare(out, PrepareConfig(**inputs, chunks=(1, 64, 64), slab_mb=slab_mb), threads=1)
        stores[slab_mb] = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert stores[3] == stores[256]
    out = tmp_path / "3.ome.zarr"
    for name in ("0", "labels/cells/0", "labels/instances/0", "weights/0"):
        assert sorted(p.name for p in (out / name).iterdir()) == [
            "c.0.0.0",
            "c.1.0.0",
            "c.2.0.0",
            "c.3.0.0",
            "zarr.json",
        ]
        array = zarr.open_array(str(out / name), mode="r")
        assert array.shards == (2, 128, 128) and array.chunks == (1, 64, 64), name
    assert np.array_equal(zarr.open_array(str(out / "0"), mode="r")[...], raw)
    assert np.array_equal(io.read_volume(out), raw)  # the NGFF reader
    assert np.array_equal(TrainingStore.open(out).cells[...], labels)


def test_instance_labels_keep_their_ids(tmp_path):
    raw, labels = _cells_and_raw(n=2)
    instances = instances_from_binary(labels) * 3
    inputs = _tiff_inputs(tmp_path, raw, instances.astype(np.uint16))
    prepare(tmp_path / "d.ome.zarr", PrepareConfig(**inputs, labels_kind="instances"))
    root = zarr.open_group(str(tmp_path / "d.ome.zarr"), mode="r")
    assert root["labels/instances/0"].dtype == np.int32
    assert np.array_equal(root["labels/instances/0"][...], instances)
    assert np.array_equal(root["labels/cells/0"][...], labels)


def _write_formats(tmp_path, raw, labels):
    """The same stack as a PNG folder, HDF5, Zarr v2, Zarr v3 and OME-Zarr; (raw, labels) per format."""
    import h5py
    from PIL import Image

    for name, data in (("raw", raw), ("labels", labels)):
        (tmp_path / f"{name}_png").mkdir()
        for z, plane in enumerate(data):  # s0, s1, ..., s10, s11: natural order differs from sorted()
            Image.fromarray(plane).save(tmp_path / f"{name}_png" / f"s{z}.png")
        zarr.create_array(str(tmp_path / f"{name}_v2.zarr"), data=data, zarr_format=2)
        zarr.create_array(str(tmp_path / f"{name}_v3.zarr"), data=data)
        with h5py.File(tmp_path / "both.h5", "a") as f:
            f[f"volumes/{name}"] = data
    io.write_image(tmp_path / "raw.ome.zarr", raw, voxel_size=(30.0, 5.0, 5.0), unit="nanometer")
    return {
        "png": ("raw_png", "labels_png"),
        "hdf5": ("both.h5:/volumes/raw", "both.h5:/volumes/labels"),
        "zarr2": ("raw_v2.zarr", "labels_v2.zarr"),
        "zarr3": ("raw_v3.zarr", "labels_v3.zarr"),
        "ome": ("raw.ome.zarr", "labels_v3.zarr"),
    }


def test_every_input_format_gives_the_same_store(tmp_path):
    raw, labels = _cells_and_raw(n=12)
    raw[:, 0, 0] = np.arange(12)  # tells slices apart
    for kind, (raw_path, labels_path) in _write_formats(tmp_path, raw, labels).items():
        cfg = PrepareConfig(data_dir=str(tmp_path), raw=raw_path, labels=labels_path, w0=0.0)
        prepare(tmp_path / f"{kind}.ome.zarr", cfg)
        root = zarr.open_group(str(tmp_path / f"{kind}.ome.zarr"), mode="r")
        assert np.array_equal(root["0"][...], raw), kind
        assert np.array_equal(root["labels/cells/0"][...], labels), kind
    assert io.open_volume(tmp_path / "ome.ome.zarr").voxel_size == (30.0, 5.0, 5.0)  # taken from the input
    assert io.open_volume(tmp_path / "ome.ome.zarr").unit == "nanometer"


@pytest.mark.parametrize("dtype", [np.uint16, np.int8, np.float32])
def test_raw_dtype_is_preserved(tmp_path, dtype):
    raw, labels = _cells_and_raw(n=2)
    raw = raw.astype(dtype)
    zarr.create_array(str(tmp_path / "raw.zarr"), data=raw)
    zarr.create_array(str(tmp_path / "labels.zarr"), data=labels)
    prepare(
        tmp_path / "d.ome.zarr",
        PrepareConfig(raw=str(tmp_path / "raw.zarr"), labels=str(tmp_path / "labels.zarr")),
    )
    stored = zarr.open_group(str(tmp_path / "d.ome.zarr"), mode="r")["0"]
    assert stored.dtype == dtype and np.array_equal(stored[...], raw)


def test_storage_options_reach_the_store(tmp_path):
    raw, labels = _cells_and_raw(n=2)
    cfg = PrepareConfig(
        **_tiff_inputs(tmp_path, raw, labels),
        voxel_size=(50.0, 4.0, 4.0),
        unit="nanometer",
        chunks=(1, 8, 16),
        compression_level=0,
        w0=0.0,
    )
    prepare(tmp_path / "d.ome.zarr", cfg)
    root = zarr.open_group(str(tmp_path / "d.ome.zarr"), mode="r")
    for name, key in zip(("0", "labels/cells/0", "labels/instances/0", "weights/0"), SHUFFLE, strict=True):
        assert root[name].chunks == (1, 8, 16), name
        assert root[name].compressors[0].clevel == 0, name
        assert root[name].compressors[0].shuffle.value == SHUFFLE[key], name
    ome = dict(root["weights"].attrs)["ome"]["multiscales"][0]
    assert ome["datasets"][0]["coordinateTransformations"][0]["scale"] == [50.0, 4.0, 4.0]
    assert ome["axes"][2] == {"name": "x", "type": "space", "unit": "nanometer"}
    weights = root["weights/0"][...]  # w0 = 0: class balance only, two values
    meta = dict(root.attrs)["unet_core"]
    assert sorted(np.unique(weights).tolist()) == pytest.approx(sorted(meta["weights"]["class_weights"]))


@pytest.mark.parametrize("balance", [0.0, 0.5])
def test_class_balance_sets_the_stored_class_weights(tmp_path, balance):
    raw, labels = _cells_and_raw(n=2)
    membrane = np.count_nonzero(labels == 0)
    full = (labels.size / (2 * membrane), labels.size / (2 * (labels.size - membrane)))
    cfg = PrepareConfig(**_tiff_inputs(tmp_path, raw, labels), w0=0.0, class_balance=balance)
    prepare(tmp_path / "d.ome.zarr", cfg)
    root = zarr.open_group(str(tmp_path / "d.ome.zarr"), mode="r")
    expected = [w**balance for w in full]
    assert dict(root.attrs)["unet_core"]["weights"]["class_weights"] == pytest.approx(expected)
    weights = root["weights/0"][...]
    assert np.allclose(weights[labels == 0], expected[0]) and np.allclose(weights[labels > 0], expected[1])
    # With the border term too: what the whole-volume helper gives at that balance.
    bordered = PrepareConfig(**_tiff_inputs(tmp_path, raw, labels), class_balance=balance)
    prepare(tmp_path / "bordered.ome.zarr", bordered)
    store = TrainingStore.open(tmp_path / "bordered.ome.zarr")
    assert np.array_equal(store.weights[...], weight_volume(store.instances[...], class_balance=balance))


def test_wrong_polarity_is_flagged(tmp_path, caplog):
    raw, labels = _cells_and_raw(n=2)
    with caplog.at_level(logging.WARNING, logger="unet_core.prepare"):
        prepare(
            tmp_path / "d.ome.zarr", PrepareConfig(**_tiff_inputs(tmp_path, raw, labels), membrane_value=255)
        )
    assert "is membrane_value the right polarity?" in caplog.text


def _bad_case(tmp_path, case):
    """Inputs for one kind of bad input: (config keywords, expected message)."""
    raw, labels = _cells_and_raw()
    if case == "shape mismatch":
        labels = labels[:3]
    elif case == "labels not binary":
        labels[1, 0, 0] = 7
    elif case == "constant raw slice":
        raw[2] = 17
    elif case == "empty label slice":
        labels[3] = 0
    elif case == "no membrane at all":
        labels[...] = 255
    elif case == "NaN in raw":
        raw = raw.astype(np.float32)
        raw[1, 3, 3] = np.nan
    elif case == "inf in labels":
        labels = labels.astype(np.float32)
        labels[0, 0, 0] = np.inf
    elif case == "negative instance":
        labels = labels.astype(np.int16)
        labels[0, 0, 0] = -1
    elif case in ("complex raw", "bool raw"):
        raw = raw.astype(np.complex64 if case == "complex raw" else bool)
    elif case == "float instances":
        labels = labels.astype(np.float32)
    elif case == "empty stack":
        raw, labels = raw[:0], labels[:0]
    kind = {"negative instance": "instances", "float instances": "instances"}.get(case, "binary")
    paths = {}
    for name, data in (("raw", raw), ("labels", labels)):
        zarr.create_array(str(tmp_path / f"{name}.zarr"), data=data)
        paths[name] = str(tmp_path / f"{name}.zarr")
    return {**paths, "labels_kind": kind}


BAD_CASES = {
    "shape mismatch": r"labels.zarr: labels shape \(3, 24, 24\) differs from raw .*raw.zarr shape \(4, 24,",
    "labels not binary": r"labels.zarr: binary labels expected with membrane = 0 .* values \[0, 7, 255\]",
    "constant raw slice": r"raw.zarr: slice 2 is constant \(every pixel 17\): a blank or missing section",
    "empty label slice": "labels.zarr: label slice 3 has no cell pixels",
    "no membrane at all": r"labels.zarr: no membrane pixels \(value 0\) anywhere; fix membrane_value",
    "NaN in raw": "raw.zarr: slice 1 contains NaN or inf",
    "inf in labels": "labels.zarr: labels contain NaN or inf",
    "negative instance": "labels.zarr: instance labels must be cell ids from 0 .* found -1 to 255",
    "complex raw": "raw.zarr: unsupported dtype complex64 for raw; convert to signed integer or unsigned",
    "bool raw": "raw.zarr: unsupported dtype bool for raw",
    "float instances": "labels.zarr: unsupported dtype float32 for instances labels",
    "empty stack": r"raw.zarr: empty stack of shape \(0, 24, 24\)",
}


@pytest.mark.parametrize(("case", "match"), BAD_CASES.items(), ids=list(BAD_CASES))
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, case, match):
    cfg = PrepareConfig(**_bad_case(tmp_path, case))
    with pytest.raises(io.VolumeError, match=match):
        prepare(tmp_path / "out" / "d.ome.zarr", cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stage", ["converting", "writing"])
def test_failure_while_writing_leaves_no_store(tmp_path, monkeypatch, stage):
    """A slice's conversion (on a worker thread) or a chunk's write to disk (behind, on the writer
    thread) fails in the second slab: the error reaches the caller and no store is left."""
    raw, labels = _cells_and_raw(size=128)  # 1 MiB holds one chunk of 2 slices: 2 slabs
    (tmp_path / "in").mkdir()
    inputs = _tiff_inputs(tmp_path / "in", raw, labels)
    calls = []
    if stage == "converting":
        original = prepare_module.weight_map

        def failing(*args, **kwargs):
            calls.append(1)
            if len(calls) > 2:
                raise RuntimeError("killed")
            return original(*args, **kwargs)

        monkeypatch.setattr(prepare_module, "weight_map", failing)
    else:
        write = zarr.storage.LocalStore.set

        async def failing(self, key, value):
            if not key.endswith("zarr.json"):
                calls.append(1)
                if len(calls) > 4:  # the four arrays of the first slab are written
                    raise RuntimeError("killed")
            return await write(self, key, value)

        monkeypatch.setattr(zarr.storage.LocalStore, "set", failing)
    with pytest.raises(RuntimeError, match="killed"):
        prepare(tmp_path / "d.ome.zarr", PrepareConfig(**inputs, chunks=(2, 64, 64), slab_mb=1))
    assert [p.name for p in tmp_path.iterdir()] == ["in"]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"raw": "missing.tif"}, "missing.tif: no such file or directory"),
        ({"labels": "raw.h5:/wrong"}, r"raw.h5: no dataset '/wrong'; datasets in the file: \['volume'\]"),
        ({"labels": "rgb.tif"}, "rgb.tif: expected a 2D image .* RGB and multi-channel"),
        (
            {"train_slices": (0, 3), "val_slices": (2, 4)},
            r"train_slices \[0, 3\] and val_slices \[2, 4\] overlap",
        ),
        (
            {"test_slices": (3, 6)},
            r"raw.h5:/volume: test_slices \[3, 6\] must satisfy 0 <= start <= stop <= 4",
        ),
    ],
)
def test_bad_paths_and_splits_write_nothing(tmp_path, change, match):
    import h5py

    raw, labels = _cells_and_raw()
    with h5py.File(tmp_path / "raw.h5", "w") as f:
        f["volume"] = raw
    _imwrite(tmp_path / "labels.tif", labels)
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((4, 24, 24, 3), np.uint8), photometric="rgb")
    cfg = PrepareConfig(
        **{"data_dir": str(tmp_path), "raw": "raw.h5:/volume", "labels": "labels.tif", **change}
    )
    with pytest.raises(ValueError, match=match):
        prepare(tmp_path / "out" / "d.ome.zarr", cfg)
    assert not (tmp_path / "out").exists()


def test_default_split_is_80_20():
    split = make_split(PrepareConfig(), 20, "x")
    assert (split.train, split.val, split.test) == ((0, 16), (16, 20), (20, 20))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train_slices": (0, 12), "val_slices": (10, 20)}, r"train_slices \[0, 12\] and val_slices"),
        ({"val_slices": (0, 4)}, r"val_slices \[0, 4\] and train_slices \[0, 16\] \(the default\) overlap"),
        ({"train_slices": (3, 3)}, r"stack.tif: train_slices \[3, 3\] is empty; give training at least one"),
        ({"test_slices": (4, 6)}, r"train_slices \[0, 16\] \(the default\) and test_slices \[4, 6\] overlap"),
        ({"train_slices": (0, 25)}, r"train_slices \[0, 25\] must satisfy"),
        ({"train_slices": (5, 2)}, r"train_slices \[5, 2\] must satisfy 0 <= start <= stop"),
    ],
)
def test_bad_split_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_split(PrepareConfig(**kwargs), 20, "stack.tif")


def test_wrong_membrane_value_lists_only_values_in_the_file(tmp_path):
    raw, labels = _cells_and_raw()
    inputs = _tiff_inputs(tmp_path, raw, labels)
    with pytest.raises(ValueError, match=r"membrane = 1 and one cell value, found values \[0, 255\];"):
        prepare(tmp_path / "d.ome.zarr", PrepareConfig(**inputs, membrane_value=1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"raw": "a.tif"}, "give both raw and labels"),
        ({"labels_kind": "semantic"}, "labels_kind must be one of"),
        ({"chunks": (1, 0, 64)}, r"chunks must be 3 positive integers \(z, y, x\), got \(1, 0, 64\)"),
        ({"synthetic_shape": (4, 64)}, "synthetic_shape must be 3 positive integers"),
        ({"voxel_size": (50.0, 0.0, 4.0)}, "voxel_size must be 3 finite numbers > 0"),
        ({"slab_mb": 0}, "slab_mb must be a positive integer"),
        ({"compression_level": 12}, "compression level must be an integer from 0 to 9, got 12"),
        ({"w0": -1.0}, "w0 must be a finite number >= 0"),
        ({"sigma": 0.0}, "sigma must be a finite number > 0"),
        ({"class_balance": 1.5}, r"class balance must lie in \[0, 1\]"),
    ],
)
def test_bad_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PrepareConfig(**kwargs)


def test_data_dir_resolves_relative_paths_only(tmp_path):
    cfg = PrepareConfig(data_dir="/data/isbi", raw="a.tif", labels=str(tmp_path / "b.tif"))
    assert cfg.path("raw") == "/data/isbi/a.tif" and cfg.path("labels") == str(tmp_path / "b.tif")


def test_isbi_config_merged_over_the_default_gives_a_valid_split():
    """snakemake --configfile merges config/isbi2012.yaml over config/config.yaml, key by key."""
    default, isbi = (yaml.safe_load((ROOT / f"config/{n}.yaml").read_text()) for n in ("config", "isbi2012"))
    section = {**default["prepare"], **isbi["prepare"]}
    cfg = PrepareConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in section.items()})
    split = make_split(cfg, 20, "isbi")
    assert (split.train, split.val, split.test) == ((0, 16), (16, 20), (20, 20))
    assert Path(ROOT / cfg.path("raw")).resolve() == (ISBI / "train-volume.tif").resolve()


def test_isbi_workflow_dry_run_tracks_the_data():
    target = "results/isbi2012/data.ome.zarr"  # the prepare job only: later rules have tests of their own
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", target, "--configfile", "config/isbi2012.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    inputs = "input: ../shared/data/isbi2012/train-volume.tif, ../shared/data/isbi2012/train-labels.tif"
    assert inputs in result.stdout


def test_isbi_2012_training_data_through_the_command_line(tmp_path):
    assert ISBI.is_dir(), f"ISBI 2012 data expected at {ISBI} (../shared/data/isbi2012 beside the clone)"
    out = tmp_path / "isbi.ome.zarr"
    args = ["--data-dir", str(ISBI), "--raw", "train-volume.tif", "--labels", "train-labels.tif"]
    args += ["--train-slices", "0", "2", "--val-slices", "2", "3", "--voxel-size", "50", "4", "4"]
    args += ["--unit", "nanometer", "--chunks", "1", "256", "256"]
    command = [sys.executable, "-m", "unet_core", "prepare", str(out), *args]  # = unet-core prepare
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    store = TrainingStore.open(out)
    assert store.raw.shape == store.cells.shape == store.weights.shape == (20, 512, 512)
    labels = tifffile.imread(ISBI / "train-labels.tif")
    cells = store.cells[...]
    assert np.array_equal(cells, labels)  # ISBI polarity kept: 255 = cell, 0 = membrane
    assert 0.15 < (cells == 0).mean() < 0.35  # membranes are the minority class
    assert np.array_equal(store.raw[...], tifffile.imread(ISBI / "train-volume.tif"))
    split = store.split
    assert (split.train, split.val, split.test) == ((0, 2), (2, 3), (20, 20))
    weights = store.weights[0]
    assert weights[cells[0] == 0].mean() > 2 * weights[cells[0] > 0].mean()  # membranes weigh more
    assert io.open_volume(out).voxel_size == (50.0, 4.0, 4.0)
