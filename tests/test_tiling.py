import numpy as np
import pytest
import torch

from unet_core.inference import TilePredictor, predict_array
from unet_core.model import UNet, UNetConfig
from unet_core.tiling import (
    Roi,
    block_side_for_overhead,
    halo_overhead,
    network_input,
    plan_blocks,
    read_mirrored,
)


def test_read_mirrored_uses_real_data_inside_and_mirror_outside():
    volume = np.arange(2 * 5 * 6).reshape(2, 5, 6)
    inside = read_mirrored(volume, Roi((0, 1, 1), (2, 3, 3)))
    assert np.array_equal(inside, volume[:, 1:4, 1:4])
    border = read_mirrored(volume, Roi((1, -2, 4), (1, 4, 4)))
    expected = np.pad(volume[1:2], ((0, 0), (2, 0), (0, 2)), mode="symmetric")[:, :4, 4:8]
    assert np.array_equal(border, expected)


def test_plan_blocks_cover_volume_disjointly_with_stable_ids():
    shape, block = (3, 10, 7), (2, 4, 4)
    covered = np.zeros(shape, dtype=int)
    blocks = plan_blocks(shape, block)
    for blk in blocks:
        covered[blk.write_roi.to_slices()] += 1
    assert (covered == 1).all()
    assert [b.block_id for b in blocks] == list(range(len(blocks)))
    assert plan_blocks(shape, block) == blocks


def test_plan_blocks_rejects_bad_block_shape():
    with pytest.raises(ValueError, match="block_shape"):
        plan_blocks((3, 4, 4), (1, 0, 4))


def test_roi_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match="differ in dimensions"):
        Roi((0, 0), (1,))


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=3, width=4))
    return TilePredictor(model, normalization=(0.0, 255.0))


@pytest.mark.parametrize(
    ("shape", "tile"),
    [
        ((2, 77, 53), (16, 16)),
        ((2, 77, 53), (13, 7)),
        ((1, 77, 53), (77, 1)),
        ((2, 40, 1), (8, 1)),
        ((1, 30, 30), (64, 64)),
    ],
)
def test_tiled_prediction_equals_whole_image_prediction(predictor, shape, tile):
    image = np.random.default_rng(1).integers(0, 255, shape).astype(np.uint8)
    whole = predict_array(predictor, image)
    tiled = predict_array(predictor, image, tile_shape=tile)
    assert whole.shape == shape
    assert np.abs(whole - tiled).max() <= 1e-5


def test_test_time_augmentation_is_tiling_invariant_and_differs_from_plain(predictor):
    image = np.random.default_rng(2).integers(0, 255, (1, 45, 38)).astype(np.uint8)
    tta = TilePredictor(predictor.model, normalization=(0.0, 255.0), tta=True)
    whole = predict_array(tta, image)
    assert np.abs(whole - predict_array(tta, image, tile_shape=(16, 24))).max() <= 1e-5
    assert np.abs(whole - predict_array(predictor, image)).max() > 1e-4


@pytest.mark.parametrize(("block", "depth"), [((512, 512), 3), ((1024, 1024), 4), ((100, 300), 2)])
def test_halo_overhead_is_the_network_input_over_the_block(block, depth):
    roi, _ = network_input(Roi((0, 0, 0), (1, *block)), depth)
    assert halo_overhead(block, depth) == pytest.approx(np.prod(roi.shape) / np.prod(block))


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_block_side_for_overhead_is_the_smallest_such_side(depth):
    side = block_side_for_overhead(depth, 1.5)
    assert side % 2**depth == 0 and halo_overhead((side, side), depth) <= 1.5
    assert halo_overhead((side - 2**depth, side - 2**depth), depth) > 1.5
