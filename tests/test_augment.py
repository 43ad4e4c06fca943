"""Tests of unet_core.data.augment: paper-style augmentation of training tiles."""

import dataclasses
import os
import stat

import numpy as np
import pytest
from matplotlib.image import imread
from scipy import ndimage

from unet_core.data.augment import (
    AugmentConfig,
    augment,
    dense_displacement,
    draw_elastic_grid,
    elastic_deform,
    save_augmentation_panel,
    warp,
)

OFF = AugmentConfig(
    flip_rotate=False,
    elastic_sigma=0.0,
    rotation_degrees=0.0,
    contrast=0.0,
    brightness=0.0,
    gamma=0.0,
    noise_std=0.0,
)


def _tile(shape=(24, 24), seed=0, label_dtype=np.int32):
    rng = np.random.default_rng(seed)
    raw = rng.random(shape, dtype=np.float32)
    labels = rng.choice(np.array([0, 3, 7, 255]), size=shape).astype(label_dtype)
    weights = rng.uniform(0.5, 9.0, size=shape).astype(np.float32)
    return raw, labels, weights


def _dihedral_images(image):
    turns = [np.rot90(image, k) for k in range(4)]
    return turns + [turn[:, ::-1] for turn in turns]


def _ramp(shape):
    """Tile whose raw holds the column index and weights the row index: warps show as shifts."""
    rows, cols = np.indices(shape, dtype=np.float32)
    return cols, np.zeros(shape, dtype=np.int32), rows


def _mirror(coordinate, size):
    period = 2 * (size - 1)
    folded = np.abs(coordinate) % period
    return np.where(folded > size - 1, period - folded, folded)


# --- augment ---------------------------------------------------------------------------------


def test_augment_is_deterministic_for_a_seed():
    tile = _tile()
    first = augment(*tile, rng=np.random.default_rng(5), config=AugmentConfig())
    second = augment(*tile, rng=np.random.default_rng(5), config=AugmentConfig())
    other = augment(*tile, rng=np.random.default_rng(6), config=AugmentConfig())
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_augment_is_identity_when_everything_is_disabled():
    tile = _tile()
    out = augment(*tile, rng=np.random.default_rng(0), config=OFF)
    for before, after in zip(tile, out, strict=True):
        np.testing.assert_array_equal(after, before)
        assert after.dtype == before.dtype
        assert not np.shares_memory(after, before)


@pytest.mark.parametrize("label_dtype", [np.uint8, np.int32, np.int64])
@pytest.mark.parametrize("shape", [(24, 24), (20, 31)])
def test_augment_keeps_shapes_label_values_and_weight_range(label_dtype, shape):
    raw, labels, weights = _tile(shape, label_dtype=label_dtype)
    config = AugmentConfig(elastic_sigma=15.0, rotation_degrees=40.0)
    for seed in range(6):
        out_raw, out_labels, out_weights = augment(
            raw, labels, weights, rng=np.random.default_rng(seed), config=config
        )
        assert out_raw.shape == out_labels.shape == out_weights.shape == shape
        assert (out_raw.dtype, out_labels.dtype, out_weights.dtype) == (
            np.float32,
            label_dtype,
            np.float32,
        )
        assert set(np.unique(out_labels)) <= set(np.unique(labels))
        assert weights.min() <= out_weights.min() and out_weights.max() <= weights.max()
        assert 0.0 <= out_raw.min() and out_raw.max() <= 1.0


def test_flip_rotate_alone_gives_exact_dihedral_transforms():
    tile = _tile((6, 6))
    config = dataclasses.replace(OFF, flip_rotate=True)
    seen = set()
    for seed in range(40):
        out = augment(*tile, rng=np.random.default_rng(seed), config=config)
        for before, after in zip(tile, out, strict=True):
            np.testing.assert_array_equal(np.sort(after, axis=None), np.sort(before, axis=None))
        matches = [
            k for k, candidate in enumerate(_dihedral_images(tile[0])) if np.array_equal(candidate, out[0])
        ]
        assert len(matches) == 1
        for before, after in zip(tile[1:], out[1:], strict=True):
            np.testing.assert_array_equal(after, _dihedral_images(before)[matches[0]])
        seen.add(matches[0])
    assert seen == set(range(8))


def test_flip_rotate_on_a_non_square_tile_keeps_the_shape():
    tile = _tile((4, 7))
    config = dataclasses.replace(OFF, flip_rotate=True)
    seen = set()
    for seed in range(30):
        out_raw = augment(*tile, rng=np.random.default_rng(seed), config=config)[0]
        candidates = [np.rot90(tile[0], 2 * k) for k in range(2)]
        candidates += [candidate[:, ::-1] for candidate in candidates]
        matches = [k for k, c in enumerate(candidates) if np.array_equal(c, out_raw)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {0, 1, 2, 3}


def test_gray_values_change_raw_only():
    raw, labels, weights = _tile()
    config = dataclasses.replace(OFF, contrast=0.3, brightness=0.2, gamma=0.5, noise_std=0.05)
    out_raw, out_labels, out_weights = augment(
        raw, labels, weights, rng=np.random.default_rng(1), config=config
    )
    np.testing.assert_array_equal(out_labels, labels)
    np.testing.assert_array_equal(out_weights, weights)
    assert not np.allclose(out_raw, raw, atol=0.01)
    assert 0.0 <= out_raw.min() and out_raw.max() <= 1.0


def test_brightness_shifts_and_contrast_scales_about_the_mean():
    raw = np.linspace(0.3, 0.7, 64, dtype=np.float32).reshape(8, 8)
    tile = (raw, np.zeros((8, 8), dtype=np.int32), np.ones((8, 8), dtype=np.float32))
    rng = np.random.default_rng(3)
    shifted = augment(*tile, rng=rng, config=dataclasses.replace(OFF, brightness=0.2))[0]
    offset = shifted - raw
    np.testing.assert_allclose(offset, offset[0, 0], atol=1e-6)
    assert 0 < abs(offset[0, 0]) <= 0.2
    scaled = augment(*tile, rng=rng, config=dataclasses.replace(OFF, contrast=0.25))[0]
    factor = np.ptp(scaled) / np.ptp(raw)
    assert 0.75 <= factor <= 1.25 and factor != pytest.approx(1.0, abs=1e-4)
    assert scaled.mean() == pytest.approx(raw.mean(), abs=1e-6)


def test_noise_has_the_configured_std():
    raw = np.full((200, 200), 0.5, dtype=np.float32)
    tile = (raw, np.zeros(raw.shape, dtype=np.int32), np.ones(raw.shape, dtype=np.float32))
    config = dataclasses.replace(OFF, noise_std=0.03)
    noisy = augment(*tile, rng=np.random.default_rng(0), config=config)[0]
    assert np.std(noisy - raw) == pytest.approx(0.03, rel=0.05)


def test_rotation_alone_turns_about_the_centre():
    raw, labels, weights = _ramp((31, 31))
    config = dataclasses.replace(OFF, rotation_degrees=20.0)
    out_raw, _, out_weights = augment(raw, labels, weights, rng=np.random.default_rng(2), config=config)
    assert out_raw[15, 15] == pytest.approx(15.0) and out_weights[15, 15] == pytest.approx(15.0)
    assert not np.allclose(out_raw, raw)


def test_zoom_alone_stays_within_its_range_and_spans_it():
    # a centred square of side 21: its side after the zoom is the drawn factor times 21
    raw = np.zeros((101, 101), np.float32)
    raw[40:61, 40:61] = 1
    tile = (raw, (raw > 0).astype(np.int32), np.ones_like(raw))
    config = dataclasses.replace(OFF, scale=0.5)
    sides = [
        np.sqrt(augment(*tile, rng=np.random.default_rng(seed), config=config)[1].sum()) for seed in range(40)
    ]
    assert 21 / 1.5 - 1 <= min(sides) < 17 and 25 < max(sides) <= 21 * 1.5 + 1


def test_zoom_is_drawn_only_when_enabled():
    # with the zoom off, augment draws what it drew before the zoom existed: the seeds keep their tiles
    tile = _tile()
    for scale, draws in ((0.0, 1), (0.3, 2)):
        rng = np.random.default_rng(3)
        augment(*tile, rng=rng, config=dataclasses.replace(OFF, rotation_degrees=10.0, scale=scale))
        expected = np.random.default_rng(3)
        for _ in range(draws):
            expected.uniform()
        assert rng.random() == expected.random()


# --- elastic deformation ---------------------------------------------------------------------


def test_elastic_grid_has_the_paper_std():
    rng = np.random.default_rng(0)
    grids = np.stack([draw_elastic_grid(rng, grid=3, sigma=10.0) for _ in range(500)])
    assert grids.shape == (500, 2, 3, 3)
    assert abs(grids.std() - 10.0) < 1.0
    assert abs(grids.mean()) < 1.0


def test_dense_displacement_is_the_bicubic_zoom_through_the_grid_points():
    coarse = draw_elastic_grid(np.random.default_rng(1), grid=3, sigma=10.0)
    dense = dense_displacement(coarse, (101, 61))
    assert dense.shape == (2, 101, 61)
    for axis in range(2):
        expected = ndimage.zoom(coarse[axis], (101 / 3, 61 / 3), order=3, mode="mirror", grid_mode=False)
        np.testing.assert_allclose(dense[axis], expected, atol=1e-10)
    np.testing.assert_allclose(dense[:, ::50, ::30], coarse, atol=1e-10)


def test_elastic_deform_moves_a_smooth_image_by_the_paper_field():
    shape = (64, 48)
    rows, cols = np.indices(shape)
    for seed in range(10):
        raw, labels, weights = _ramp(shape)
        out_raw, _, out_weights = elastic_deform(
            raw, labels, weights, rng=np.random.default_rng(seed), sigma=10.0, grid=3
        )
        coarse = draw_elastic_grid(np.random.default_rng(seed), grid=3, sigma=10.0)
        field = dense_displacement(coarse, shape)
        np.testing.assert_allclose(out_weights, _mirror(rows + field[0], shape[0]), atol=1e-3)
        np.testing.assert_allclose(out_raw, _mirror(cols + field[1], shape[1]), atol=1e-3)
        moved = np.hypot(out_weights - rows, out_raw - cols)
        assert moved.max() <= 5 * 10.0
        assert moved.mean() > 1.0


def test_warp_by_ninety_degrees_is_rot90():
    raw, labels, weights = _tile((9, 9))
    out_raw, out_labels, out_weights = warp(raw, labels, weights, angle_degrees=90.0)
    np.testing.assert_allclose(out_raw, np.rot90(raw, -1), atol=1e-6)
    np.testing.assert_array_equal(out_labels, np.rot90(labels, -1))
    np.testing.assert_allclose(out_weights, np.rot90(weights, -1), atol=1e-5)


@pytest.mark.parametrize("zoom", [1.0, 0.7])
def test_warp_equals_map_coordinates_with_mirror_boundary(zoom):
    raw, labels, weights = _tile((40, 33), seed=4)
    coarse = draw_elastic_grid(np.random.default_rng(4), sigma=25.0)
    out_raw, out_labels, out_weights = warp(
        raw, labels, weights, angle_degrees=33.0, zoom=zoom, coarse=coarse
    )
    angle = np.radians(33.0)
    centred = np.indices(raw.shape) - ((np.array(raw.shape) - 1) / 2)[:, None, None]
    source = (
        np.stack(
            [
                np.cos(angle) * centred[0] - np.sin(angle) * centred[1],
                np.sin(angle) * centred[0] + np.cos(angle) * centred[1],
            ]
        )
        / zoom
    )
    source += ((np.array(raw.shape) - 1) / 2)[:, None, None] + dense_displacement(coarse, raw.shape)
    assert source.min() < -5 and source[0].max() > raw.shape[0] + 5  # exercises the mirror
    for image, out in ((raw, out_raw), (weights, out_weights)):
        expected = ndimage.map_coordinates(image, source, order=1, mode="mirror")
        np.testing.assert_allclose(out, expected, atol=1e-5)
    expected_labels = ndimage.map_coordinates(labels, source, order=0, mode="mirror")
    np.testing.assert_array_equal(out_labels, expected_labels)


def test_warp_without_rotation_or_field_is_identity():
    tile = _tile((5, 8))
    for before, after in zip(tile, warp(*tile), strict=True):
        np.testing.assert_array_equal(after, before)


# --- configuration and errors ----------------------------------------------------------------


def test_config_is_frozen_and_elastic_grid_zero_disables_elastic():
    config = AugmentConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.noise_std = 0.0
    assert config.elastic and config.gray
    assert not AugmentConfig(elastic_grid=0).elastic
    assert not OFF.gray


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"flip_rotate": 1}, TypeError, "flip_rotate must be a bool, got 1"),
        ({"gamma": "0.2"}, TypeError, "gamma must be a number, got '0.2'"),
        ({"noise_std": -0.1}, ValueError, "noise_std must be a finite number >= 0, got -0.1"),
        ({"elastic_sigma": float("inf")}, ValueError, "elastic_sigma must be a finite number"),
        ({"elastic_grid": 1}, ValueError, "elastic_grid must be an integer >= 2 or 0, got 1"),
        ({"elastic_grid": 2.5}, ValueError, "elastic_grid must be an integer >= 2 or 0, got 2.5"),
        ({"rotation_degrees": 181}, ValueError, "rotation_degrees must be <= 180, got 181"),
        ({"contrast": 1.0}, ValueError, r"contrast must be < 1 .* got 1.0"),
        ({"scale": -0.5}, ValueError, "scale must be a finite number >= 0, got -0.5"),
    ],
)
def test_config_rejects_bad_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        AugmentConfig(**kwargs)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (
            {"labels": np.zeros((4, 5), dtype=np.int32)},
            ValueError,
            r"same shape, got \(4, 4\), \(4, 5\) and \(4, 4\)",
        ),
        ({"raw": np.zeros((2, 4, 4), np.float32)}, ValueError, r"raw must be 2D \(Y, X\)"),
        ({"raw": np.zeros((0, 0), np.float32)}, ValueError, "raw must not be empty"),
        ({"raw": np.zeros((4, 4), np.uint8)}, TypeError, "raw must be floating point"),
        ({"weights": np.ones((4, 4), int)}, TypeError, "weights must be floating point"),
        ({"labels": np.zeros((4, 4))}, TypeError, "labels must have an integer or bool dtype"),
        ({"weights": [[1.0]]}, TypeError, "weights must be a numpy array, got list"),
    ],
)
def test_augment_rejects_bad_tiles(change, error, match):
    tile = {
        "raw": np.zeros((4, 4), np.float32),
        "labels": np.zeros((4, 4), np.int32),
        "weights": np.ones((4, 4), np.float32),
    }
    tile.update(change)
    with pytest.raises(error, match=match):
        augment(
            tile["raw"],
            tile["labels"],
            tile["weights"],
            rng=np.random.default_rng(0),
            config=AugmentConfig(),
        )


def test_augment_rejects_a_seed_or_a_dict_config():
    tile = _tile((4, 4))
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator, got int"):
        augment(*tile, rng=0, config=AugmentConfig())
    with pytest.raises(TypeError, match="config must be an AugmentConfig, got dict"):
        augment(*tile, rng=np.random.default_rng(0), config={})


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: draw_elastic_grid(np.random.default_rng(0), grid=1), "grid must be an integer"),
        (lambda: draw_elastic_grid(np.random.default_rng(0), sigma=-1.0), "sigma must be"),
        (lambda: dense_displacement(np.zeros((2, 3)), (5, 5)), r"coarse must have shape"),
        (lambda: dense_displacement(np.zeros((2, 3, 3)), (5,)), r"shape must be \(Y, X\)"),
        (lambda: warp(*_tile((4, 4)), coarse=np.zeros((3, 3, 3))), "coarse must have shape"),
        (lambda: warp(*_tile((4, 4)), zoom=0.0), "zoom must be a finite number > 0, got 0.0"),
    ],
)
def test_elastic_helpers_reject_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- panel -----------------------------------------------------------------------------------


def test_save_augmentation_panel_writes_one_row_per_example(tmp_path):
    tile = _tile((32, 32))
    rng = np.random.default_rng(0)
    examples = [tile] + [augment(*tile, rng=rng, config=AugmentConfig()) for _ in range(2)]
    path = save_augmentation_panel(tmp_path / "figures" / "panel.png", examples)
    assert path == tmp_path / "figures" / "panel.png"
    assert [p.name for p in path.parent.iterdir()] == ["panel.png"]
    image = imread(path)
    assert image.shape[0] == 3 * 3 * 100 and image.shape[1] == 9 * 100
    assert image[..., :3].std() > 0.05


def test_save_augmentation_panel_gets_the_mode_the_umask_gives(tmp_path):
    old = os.umask(0o027)
    try:  # a temporary file's 0600 mode must not survive the rename
        path = save_augmentation_panel(tmp_path / "panel.png", [_tile()])
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_save_augmentation_panel_sweeps_what_a_killed_writer_left(tmp_path):
    (tmp_path / ".panel.png.tmp-0badc0de").write_bytes(b"half a png")  # no live writer holds its lock
    (tmp_path / "panel.png").write_bytes(b"an older panel")
    save_augmentation_panel(tmp_path / "panel.png", [_tile()])
    assert [p.name for p in tmp_path.iterdir()] == ["panel.png"]
    assert (tmp_path / "panel.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("name", "examples", "match"),
    [
        ("panel.jpg", [_tile()], "path must end in .png"),
        ("panel.png", [], "at least one"),
        ("panel.png", [_tile()[:2]], r"examples\[0\] must be \(raw, labels, weights\), got 2"),
    ],
)
def test_save_augmentation_panel_rejects_bad_input(tmp_path, name, examples, match):
    with pytest.raises(ValueError, match=match):
        save_augmentation_panel(tmp_path / name, examples)
    assert list(tmp_path.iterdir()) == []


def test_warp_stays_within_the_input_range_when_a_fraction_rounds_to_one():
    # frac = 1 - 1e-12 becomes 1.0 in float32, and a + 1.0 * (b - a) overshoots b by an ulp
    image = np.array([[0.00075002364, 0.007552381]], dtype=np.float32)
    coarse = np.zeros((2, 3, 3))
    coarse[1] = 1 - 1e-12
    out_raw, _, out_weights = warp(image, np.zeros((1, 2), np.int32), image, coarse=coarse)
    for out in (out_raw, out_weights):
        assert image.min() <= out.min() and out.max() <= image.max()
        assert out[0, 0] == pytest.approx(image[0, 1], rel=1e-6)
