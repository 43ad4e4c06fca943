import dataclasses

import numpy as np
import pytest
import zarr
from scipy import ndimage
from skimage.segmentation import relabel_sequential

from unet_core import io, segment
from unet_core.segment import SegmentOptions, segment_file, segment_slice


def test_components_are_4_connected():
    prob = np.zeros((5, 5))
    prob[1, 1] = prob[2, 2] = 0.9  # diagonal neighbours: two cells under 4-connectivity
    prob[4, :] = 0.8
    labels = segment_slice(prob)
    assert labels.max() == 3 and labels[1, 1] != labels[2, 2]


def test_watershed_keeps_cells_apart_across_a_faint_gap():
    prob = np.ones((9, 20))
    prob[:, 10] = 0.2  # a membrane ...
    prob[4, 10] = 0.6  # ... with a one-pixel gap that merges the cells under plain thresholding
    assert segment_slice(prob).max() == 1
    labels = segment_slice(prob, method="watershed", seed_threshold=0.95)
    assert labels.max() == 2 and labels[4, 10] in (1, 2)


def test_seed_min_size_keeps_a_speck_above_the_seed_level_from_cutting_its_cell():
    prob = np.full((12, 24), 0.6)
    prob[[0, -1], :] = prob[:, [0, -1]] = 0.1  # one cell, walled in
    prob[3:9, 3:11] = 0.95  # its core: a seed of 48 px ...
    prob[5:7, 18:20] = 0.95  # ... and a speck of 4 px above the seed level, apart from it
    options = {"method": "watershed", "threshold": 0.3, "seed_threshold": 0.7}
    assert segment_slice(prob, **options).max() == 2  # the speck seeds a cell of its own: a split
    labels = segment_slice(prob, **options, seed_min_size=5)
    assert labels.max() == 1 and (labels[1:-1, 1:-1] == 1).all()  # the core floods the speck's pixels
    assert segment_slice(prob, **options, seed_min_size=4).max() == 2  # a region of the size seeds
    assert segment_slice(prob, **options, seed_min_size=49).max() == 0  # no seed left: no cell


def test_cell_map_keeps_touching_watershed_cells_apart_with_thin_lines():
    rng = np.random.default_rng(0)
    prob = ndimage.gaussian_filter(rng.random((2, 64, 64)), (0, 3, 3))
    prob = (prob - prob.min()) / np.ptp(prob)
    labels = np.stack([segment_slice(p, method="watershed", threshold=0.0, seed_threshold=0.7) for p in prob])
    assert labels.max() > 4 and (labels[:, 1:-1, 1:-1] > 0).mean() > 0.99  # cells touch: no boundary
    cells = segment.cell_map(labels)
    for z in range(2):
        components, n = ndimage.label(cells[z])  # 4-connected, as the ISBI metrics read cells
        pairs = {(c, label) for c, label in zip(components[cells[z]], labels[z][cells[z]], strict=True)}
        assert len(pairs) == n  # each component lies inside one cell
    lines = (labels > 0) & ~cells
    right, below = np.zeros_like(lines), np.zeros_like(lines)  # lines only where a cell meets another
    right[:, :, :-1] = labels[:, :, 1:] != labels[:, :, :-1]
    below[:, :-1] = labels[:, 1:] != labels[:, :-1]
    assert 0 < lines.mean() < 0.1 and (right | below)[lines].all()
    assert (segment.cell_map(labels[0]) == cells[0]).all()  # a single slice reads the same


def test_distance_watershed_cuts_touching_discs_at_their_neck():
    """Two discs of radius 12 overlapping by 4 px, as a map that does not see their border: one region,
    which components and the watershed on P keep whole, and the distance transform's two peaks cut."""
    yy, xx = np.mgrid[:40, :60]
    discs = [(yy - 20) ** 2 + (xx - x) ** 2 < 144 for x in (20, 40)]
    prob = np.where(discs[0] | discs[1], 0.95, 0.05)
    assert segment_slice(prob).max() == 1 and segment_slice(prob, method="watershed").max() == 1
    labels = segment_slice(prob, method="distance", seed_height=2.0)
    assert labels.max() == 2 and labels[20, 14] != labels[20, 46]
    assert (labels > 0).sum() == (prob > 0.5).sum()  # every pixel of the region goes to a cell
    assert segment_slice(prob, method="distance", seed_height=6.0).max() == 1  # peaks 12, neck 7 px


def test_distance_is_a_whole_slice_method_of_segment_file(tmp_path):
    yy, xx = np.mgrid[:40, :60]
    discs = ((yy - 20) ** 2 + (xx - 20) ** 2 < 144) | ((yy - 20) ** 2 + (xx - 40) ** 2 < 144)
    io.write_image(tmp_path / "p.ome.zarr", np.stack([discs, discs]).astype(np.float32))
    options = SegmentOptions(method="distance")
    assert segment_file(tmp_path / "p.ome.zarr", tmp_path / "s.ome.zarr", options=options) == 4


def test_min_size_drops_specks():
    prob = np.zeros((10, 10))
    prob[0, 0] = 1.0
    prob[5:9, 5:9] = 1.0
    labels = segment_slice(prob, min_size=4)
    assert labels[0, 0] == 0 and (labels[5:9, 5:9] > 0).all()


def test_file_labels_are_unique_across_slices_and_chunks(tmp_path):
    prob = np.zeros((3, 12, 12), np.uint8)
    prob[:, :, :5] = 255
    prob[:, :, 7:] = 200
    io.write_image(tmp_path / "p.ome.zarr", prob, chunks=(2, 5, 5))
    cells = segment_file(tmp_path / "p.ome.zarr", tmp_path / "s.ome.zarr")
    labels = io.read_volume(tmp_path / "s.ome.zarr")
    assert cells == 6 and len(np.unique(labels[labels > 0])) == 6
    assert (labels[:, :, 5:7] == 0).all()


@pytest.mark.parametrize("method", ["components", "watershed"])
def test_integer_probabilities_span_their_type_like_evaluate_reads_them(tmp_path, method):
    prob = np.zeros((1, 8, 9), np.float32)
    prob[0, :, :4], prob[0, :, 5:] = 0.95, 0.3  # one cell, and a region below the 0.5 threshold
    io.write_image(tmp_path / "f.ome.zarr", prob)
    io.write_image(tmp_path / "u16.ome.zarr", np.round(prob * 65535).astype(np.uint16))
    for name in ("f", "u16"):
        options = SegmentOptions(method=method)
        segment_file(tmp_path / f"{name}.ome.zarr", tmp_path / f"{name}_s.ome.zarr", options=options)
    labels = io.read_volume(tmp_path / "u16_s.ome.zarr")
    assert np.array_equal(labels, io.read_volume(tmp_path / "f_s.ome.zarr")) and labels.max() == 1


@pytest.mark.parametrize(("kwargs", "match"), [({"method": "magic"}, "method must be one of")])
def test_bad_method_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        segment_slice(np.zeros((3, 3)), **kwargs)


def test_3d_input_to_slice_function_is_refused():
    with pytest.raises(ValueError, match="2D slice"):
        segment_slice(np.zeros((2, 3, 3)))


# --- chunked components: the same cells as whole-slice labelling ------------------------------------------


def _spiral(shape):
    """A 1-pixel-wide rectangular spiral with 1-pixel gaps between its turns: one 4-connected cell."""
    mask = np.zeros(shape, bool)
    y, x, dy, dx, turns = 0, 0, 0, 1, 0
    mask[0, 0] = True

    def free(a, b):
        return not (0 <= a < shape[0] and 0 <= b < shape[1]) or not mask[a, b]

    while turns < 2:
        ny, nx = y + dy, x + dx
        if 0 <= ny < shape[0] and 0 <= nx < shape[1] and free(ny, nx) and free(ny + dy, nx + dx):
            y, x, turns = ny, nx, 0
            mask[y, x] = True
        else:
            dy, dx, turns = dx, -dy, turns + 1
    return mask


def _snakes(shape=(3, 70, 53), seed=0):
    """uint8 probabilities: slice 0 a spiral; slice 1 a comb (teeth joined by one row), a U whose arms meet
    only in the last row, specks and a 2-pixel cell; slice 2 smooth noise thresholded (many cells)."""
    cells = np.zeros(shape, bool)
    cells[0] = _spiral(shape[1:])
    cells[1, :40:, ::2] = True  # teeth ...
    cells[1, 39] = True  # ... and the row that joins them
    cells[1, 43:, 0] = cells[1, 43:, -1] = cells[1, -1] = True  # U
    cells[1, 50, 10] = cells[1, 55, 20:22] = cells[1, 60:63, 30:33] = True  # specks of 1, 2 and 9 pixels
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape[1:]), 2)
    cells[2] = noise > np.median(noise)
    return np.where(cells, 200, 30).astype(np.uint8)


def _whole_slice_labels(prob, min_size=0):
    """The reference: `segment_slice` on whole slices, ids offset to be unique over the volume."""
    out, offset = np.zeros(prob.shape, np.int64), 0
    for z, p in enumerate(prob.astype(np.float32) / 255):
        labels = relabel_sequential(segment_slice(p, min_size=min_size))[0]
        out[z] = np.where(labels > 0, labels + offset, 0)
        offset += int(labels.max())
    return out


def _assert_same_cells(labels, expected):
    """Equal up to a renumbering: the same background, and a bijection between the non-zero ids."""
    assert np.array_equal(labels == 0, expected == 0)
    pairs = np.unique(np.stack([labels[labels > 0], expected[expected > 0]]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def _segment(tmp_path, prob, chunks, **options):
    io.write_image(tmp_path / "p.ome.zarr", prob, chunks=chunks)
    cells = segment_file(tmp_path / "p.ome.zarr", tmp_path / "s.ome.zarr", options=SegmentOptions(**options))
    return cells, io.read_volume(tmp_path / "s.ome.zarr")


def _tree_bytes(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("chunks", [(1, 16, 16), (2, 7, 50), (1, 70, 1)])
@pytest.mark.parametrize("min_size", [0, 12])
@pytest.mark.filterwarnings("ignore:Only one label was provided")  # the spiral slice, in the reference
def test_chunked_components_are_the_whole_slice_cells(tmp_path, chunks, min_size):
    prob = _snakes()
    cells, labels = _segment(tmp_path, prob, chunks, min_size=min_size)
    expected = _whole_slice_labels(prob, min_size)
    _assert_same_cells(labels, expected)
    assert cells == expected.max() and np.array_equal(np.unique(labels), np.arange(cells + 1))
    assert np.array_equal(labels, expected)  # numbered in raster order of first pixels: as whole slices


@pytest.mark.parametrize("chunks", [(1, 16, 16), (1, 7, 5), (1, 70, 1), (1, 1, 53)])
def test_cells_that_snake_across_many_chunks_are_one_cell(tmp_path, chunks):
    prob = _snakes()
    _, labels = _segment(tmp_path, prob, chunks)
    spiral, comb, u_shape = labels[0, 0, 0], labels[1, 0, 0], labels[1, 43, 0]
    assert spiral > 0 and np.array_equal(labels[0] == spiral, prob[0] > 127)
    assert comb > 0 and set(np.unique(labels[1, :40])) == {0, comb}
    assert u_shape not in (0, comb) and labels[1, 43, -1] == u_shape


def test_min_size_counts_a_cell_over_all_its_chunks(tmp_path):
    prob = np.zeros((1, 8, 8), np.uint8)
    prob[0, 1, 2:6] = 255  # 4 pixels in 4 chunks of 1 x 1 x 1 ...
    prob[0, 5, 5:7] = 255  # ... and a 2-pixel speck
    cells, labels = _segment(tmp_path, prob, (1, 1, 1), min_size=3)
    assert cells == 1 and (labels[0, 1, 2:6] == 1).all() and labels.sum() == 4


@pytest.mark.parametrize(("shape", "chunks"), [((3, 70, 1), (1, 16, 1)), ((2, 1, 53), (2, 1, 7))])
def test_one_pixel_wide_volume(tmp_path, shape, chunks):
    prob = np.where(np.random.default_rng(1).random(shape) > 0.4, 255, 0).astype(np.uint8)
    cells, labels = _segment(tmp_path, prob, chunks)
    expected = _whole_slice_labels(prob)
    _assert_same_cells(labels, expected)
    assert cells == expected.max() > 3


def test_output_is_the_same_bytes_for_any_threads_and_blocks(tmp_path):
    prob = _snakes()
    io.write_image(tmp_path / "p.ome.zarr", prob, chunks=(1, 8, 8))
    outputs = []
    for i, kwargs in enumerate([{"n_workers": 1}, {"n_workers": 3}, {"block_shape": (2, 16, 24)}]):
        out = tmp_path / f"s{i}.ome.zarr"
        assert segment_file(tmp_path / "p.ome.zarr", out, **kwargs) == _whole_slice_labels(prob).max()
        outputs.append(_tree_bytes(out))
    assert outputs[0] == outputs[1] == outputs[2]
    root = zarr.open_group(tmp_path / "s0.ome.zarr", mode="r")
    assert root["0"].chunks == (1, 8, 8) and root["0"].dtype == np.int32
    assert root.attrs["unet_core"]["method"] == "components" and "image-label" in root.attrs["ome"]


def test_first_nonfinite_slice_is_named_whichever_block_holds_it(tmp_path):
    prob = np.zeros((4, 20, 20), np.float32)
    prob[1, 2, 3] = np.nan  # the first block ...
    prob[0, 15, 15] = np.inf  # ... and an earlier slice in the last block of the slab
    io.write_image(tmp_path / "p.ome.zarr", prob, chunks=(2, 10, 10))
    with pytest.raises(io.VolumeError, match=r"p.ome.zarr: slice 0 contains NaN or inf"):
        segment_file(tmp_path / "p.ome.zarr", tmp_path / "s.ome.zarr", n_workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.ome.zarr"]


def test_more_cells_than_int32_holds_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(segment, "MAX_CELLS", 3)
    prob = np.zeros((1, 8, 8), np.uint8)
    prob[0, ::2, ::2] = 255
    io.write_image(tmp_path / "p.ome.zarr", prob, chunks=(1, 4, 4))
    with pytest.raises(io.VolumeError, match=r"16 cells do not fit int32 labels \(at most 3\)"):
        segment_file(tmp_path / "p.ome.zarr", tmp_path / "s.ome.zarr")
    assert not (tmp_path / "s.ome.zarr").exists()


def test_watershed_ids_are_consecutive_after_min_size(tmp_path):
    prob = np.zeros((2, 12, 12), np.uint8)
    prob[:, 1:5, 1:5] = prob[:, 7:11, 7:11] = 255
    prob[:, 0, 11] = 255  # a speck, dropped
    cells, labels = _segment(tmp_path, prob, (1, 6, 6), method="watershed", min_size=4)
    assert cells == 4 and np.array_equal(np.unique(labels), np.arange(5))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_workers": 0}, "n_workers must be a positive number of threads, got 0"),
        (
            {"block_shape": (1, 6, 6)},
            r"block_shape must be 3 positive multiples of the input's chunks \(1, 4, 4\)",
        ),
        ({"block_shape": (1, 8)}, "block_shape must be 3 positive multiples"),
        (
            {"block_shape": (1, 8, 8), "options": SegmentOptions(method="watershed")},
            "block_shape is for method 'components'",
        ),
    ],
)
def test_bad_file_options_are_refused_before_work(tmp_path, kwargs, match):
    io.write_image(tmp_path / "p.ome.zarr", np.zeros((2, 12, 12), np.uint8), chunks=(1, 4, 4))
    with pytest.raises(ValueError, match=match):
        segment_file(tmp_path / "p.ome.zarr", tmp_path / "s.ome.zarr", **kwargs)
    assert not (tmp_path / "s.ome.zarr").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "magic"}, "method must be one of"),
        ({"threshold": 2.0}, r"threshold must be a probability in \[0, 1\), got 2.0"),
        ({"seed_threshold": 1.0, "method": "watershed"}, r"seed_threshold must be a probability in \[0, 1\)"),
        ({"threshold": float("nan")}, "threshold must be a probability"),
        ({"min_size": -3}, "min_size must be >= 0 pixels"),
        ({"seed_min_size": -1}, "seed_min_size must be >= 0 pixels"),
        ({"seed_height": 0.0}, "seed_height must be a finite number of pixels > 0, got 0.0"),
        ({"seed_height": float("inf")}, "seed_height must be a finite number of pixels > 0, got inf"),
    ],
)
def test_bad_segment_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SegmentOptions(**kwargs)


def test_slice_defaults_are_the_options_defaults():
    prob = np.zeros((6, 6))
    prob[1:3, 1:3], prob[4, 4] = 0.95, 0.6  # a cell, and a speck above threshold but below seed_threshold
    defaults = SegmentOptions()
    assert np.array_equal(segment_slice(prob), segment_slice(prob, **dataclasses.asdict(defaults)))
