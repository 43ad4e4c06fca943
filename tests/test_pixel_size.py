import doctest
import logging

import numpy as np
import pytest
import tifffile
import torch
from skimage.transform import resize

from unet_core import io, pixel_size
from unet_core.blockwise import predict_dask
from unet_core.checkpoint import CheckpointError, save_checkpoint, training_pixel_size
from unet_core.inference import TilePredictor, encode, predict_array
from unet_core.model import UNet, UNetConfig
from unet_core.pixel_size import ResampledSource, zoom_factors
from unet_core.predict import PredictOptions, predict_file, shard_resources

NORMALIZATION = (10.0, 240.0)


def _checkpoint(path, model, voxel_size=(50.0, 4.0, 4.0), unit="nanometer"):
    state = {
        "model_config": model.config.to_dict(),
        "model_state": model.state_dict(),
        "normalization": list(NORMALIZATION),
    }
    if voxel_size is not None:
        state |= {"voxel_size": list(voxel_size), "unit": unit}
    save_checkpoint(path, state)
    return path


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return UNet(UNetConfig(depth=2, width=4)).eval()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, model):
    return _checkpoint(tmp_path_factory.mktemp("model") / "best.pt", model)


@pytest.fixture(scope="module")
def volume():
    # smooth blobs, so that resampling changes what the network sees but not beyond recognition
    noise = np.random.default_rng(5).random((2, 48, 60))
    from scipy.ndimage import gaussian_filter

    return np.clip(gaussian_filter(noise, (0, 2, 2)) * 255 * 4 - 380, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("given", "unit", "expected"),
    [
        ((50, 6, 6), "nanometer", (1.5, 1.5)),
        ((50, 2, 3), "nm", (0.5, 0.75)),
        ((0.05, 0.006, 0.004), "micrometer", (1.5, 1.0)),
        ((50, 4.15, 3.85), "nanometer", None),  # within 5 %: not worth resampling
        ((50, 4.3, 4.0), "nanometer", (1.075, 1.0)),
        ((50, 6, 6), None, None),  # no unit: unknown size
        ((50, 6, 6), "parsec", None),
    ],
)
def test_zoom_factors_compare_pixel_sizes_across_units(given, unit, expected):
    zoom = zoom_factors(given, unit, (50.0, 4.0, 4.0), "nanometer")
    assert zoom == (None if expected is None else pytest.approx(expected))


def test_the_examples_in_the_docstrings_hold():
    failures, tried = doctest.testmod(pixel_size)
    assert tried >= 2 and failures == 0


def test_an_unknown_training_pixel_size_means_no_resampling():
    assert zoom_factors((50, 6, 6), "nanometer", None, None) is None
    assert zoom_factors((50, 6, 6), "nanometer", (50, 4, 4), None) is None


@pytest.mark.parametrize("zoom", [1.5, 2 / 3, 1.25])
def test_resampled_source_equals_skimage_resize(zoom):
    image = np.random.default_rng(0).random((2, 48, 60)).astype(np.float32)
    source = ResampledSource(image, (zoom, zoom))
    z, y, x = source.shape
    assert (y, x) == (round(48 * zoom), round(60 * zoom))
    whole = source[slice(0, z), slice(0, y), slice(0, x)]
    expected = [resize(s, (y, x), order=1, anti_aliasing=zoom < 1, mode="symmetric") for s in image]
    np.testing.assert_allclose(whole, np.stack(expected), atol=1e-6)
    # any box reads what the whole volume holds there: blocks agree at their seams
    for box in [(slice(1, 2), slice(5, 17), slice(0, 9)), (slice(0, 2), slice(y - 7, y), slice(x - 3, x))]:
        np.testing.assert_array_equal(source[box], whole[box])


def _resampled_reference(model, volume, zoom):
    """Resample the whole volume, predict it whole, resample back (bilinear: no smoothing of the
    probabilities): what blockwise resampling must equal."""
    shape = volume.shape[1:]
    model_grid = tuple(round(s * zoom) for s in shape)
    small = np.stack(
        [resize(s.astype(np.float32), model_grid, order=1, anti_aliasing=zoom < 1, mode="symmetric",
                preserve_range=True) for s in volume]
    )  # fmt: skip
    prob = predict_array(TilePredictor(model, normalization=NORMALIZATION), small)
    return np.stack([resize(p, shape, order=1, mode="edge", anti_aliasing=False) for p in prob])


@pytest.mark.parametrize("pixel", [6.0, 8 / 3])
@pytest.mark.parametrize("block_shape", [(1, 16, 24), (2, 48, 60)])
def test_a_volume_of_another_pixel_size_is_predicted_at_the_training_one(
    tmp_path, model, model_file, volume, pixel, block_shape
):
    source = tmp_path / "in.ome.zarr"
    io.write_image(source, volume, chunks=(1, 24, 24), voxel_size=(50.0, pixel, pixel), unit="nanometer")
    out = tmp_path / "out.ome.zarr"
    options = PredictOptions(block_shape=block_shape, output_dtype="float32")
    predict_file(model_file, source, out, options=options)
    result = io.open_volume(out)
    assert result.shape == volume.shape and result.voxel_size == (50.0, pixel, pixel)
    expected = _resampled_reference(model, volume, pixel / 4.0)
    assert np.abs(np.asarray(result.array[...]) - expected).max() <= 1e-5
    plain = predict_array(TilePredictor(model, normalization=NORMALIZATION), volume)
    assert np.abs(expected - plain).max() > 0.05  # the resampling changed the prediction
    # predict_dask of the same file, or of the array with its pixel size, resamples alike
    lazy = predict_dask(model_file, source, options=options).compute()
    np.testing.assert_allclose(lazy, result.array[...], atol=1e-6)
    in_memory = io.Volume(volume, "in memory", (50.0, pixel, pixel), "nanometer")
    np.testing.assert_allclose(predict_dask(model_file, in_memory, options=options), lazy, atol=1e-6)


def test_the_same_pixel_size_or_the_option_off_predicts_on_the_input_grid(
    tmp_path, model, model_file, volume
):
    plain = encode(predict_array(TilePredictor(model, normalization=NORMALIZATION), volume), "uint8")
    same = tmp_path / "same.ome.zarr"
    io.write_image(same, volume, voxel_size=(50.0, 4.0, 4.0), unit="nanometer")
    other = tmp_path / "other.ome.zarr"
    io.write_image(other, volume, voxel_size=(50.0, 6.0, 6.0), unit="nanometer")
    off = PredictOptions(block_shape=(1, 48, 60), match_pixel_size=False)
    for source, options in [(same, PredictOptions(block_shape=(1, 48, 60))), (other, off)]:
        predict_file(model_file, source, tmp_path / "out.ome.zarr", options=options)
        assert np.abs(io.read_volume(tmp_path / "out.ome.zarr").astype(int) - plain).max() <= 1


def test_a_changed_pixel_size_repredicts_instead_of_resuming(tmp_path, model_file, volume):
    """The sheet's voxel size decides the output: giving another one recomputes every chunk."""
    tifffile.imwrite(tmp_path / "in.tif", volume, photometric="minisblack")
    out = tmp_path / "out.ome.zarr"
    options = PredictOptions(block_shape=(1, 48, 60))
    predict_file(
        model_file, tmp_path / "in.tif", out, options=options, voxel_size=(50, 4, 4), unit="nanometer"
    )
    at_4 = io.read_volume(out)
    predict_file(
        model_file, tmp_path / "in.tif", out, options=options, voxel_size=(50, 6, 6), unit="nanometer"
    )
    assert not np.array_equal(io.read_volume(out), at_4)


def test_a_volume_without_a_pixel_size_is_predicted_as_it_is_with_a_warning(
    tmp_path, model, model_file, volume, caplog
):
    tifffile.imwrite(tmp_path / "in.tif", volume, photometric="minisblack")
    with caplog.at_level(logging.WARNING, logger="unet_core.pixel_size"):
        predict_file(model_file, tmp_path / "in.tif", tmp_path / "out.ome.zarr", options=PredictOptions())
    assert "records no pixel size" in caplog.text and "4 x 4 nanometer" in caplog.text
    plain = encode(predict_array(TilePredictor(model, normalization=NORMALIZATION), volume), "uint8")
    assert np.abs(io.read_volume(tmp_path / "out.ome.zarr").astype(int) - plain).max() <= 1


def test_a_pixel_size_far_from_the_training_one_is_taken_for_wrong_metadata(
    tmp_path, model, model_file, volume, caplog
):
    """A placeholder of 1 micrometre (250x the 4 nm of training) is not resampled: predicted as it is."""
    source = tmp_path / "in.ome.zarr"
    io.write_image(source, volume, voxel_size=(1.0, 1.0, 1.0), unit="micrometer")
    with caplog.at_level(logging.WARNING, logger="unet_core.pixel_size"):
        predict_file(model_file, source, tmp_path / "out.ome.zarr", options=PredictOptions())
    assert "250 x 250 times the 4 x 4 nanometer" in caplog.text and "wrong metadata" in caplog.text
    plain = encode(predict_array(TilePredictor(model, normalization=NORMALIZATION), volume), "uint8")
    assert np.abs(io.read_volume(tmp_path / "out.ome.zarr").astype(int) - plain).max() <= 1


def test_a_shard_asks_for_time_by_the_pixels_the_network_computes(tmp_path, model_file, volume):
    """At 6 nm a 4 nm model computes 2.25x the pixels: SLURM is asked for 2.25x the time (beyond 15 min)."""
    six = tmp_path / "six.ome.zarr"
    io.write_image(six, volume, voxel_size=(50.0, 6.0, 6.0), unit="nanometer")
    tifffile.imwrite(tmp_path / "bare.tif", volume, photometric="minisblack")
    request = dict(shards=1, block_shape=(1, 48, 60), mvox_per_minute=1e-4)
    minutes = {
        "as it is": shard_resources(six, **request)["runtime"],
        "zoomed": shard_resources(six, **request, models=[model_file])["runtime"],
        "option off": shard_resources(six, **request, models=[model_file], match_pixel_size=False)["runtime"],
        "sheet": shard_resources(
            tmp_path / "bare.tif", **request, models=[model_file], voxel_size=(50, 6, 6), unit="nanometer"
        )["runtime"],
    }
    assert minutes["as it is"] == minutes["option off"] == 15 + int(2 * 2 * 48 * 60 / 1e6 / 1e-4)
    assert minutes["zoomed"] == minutes["sheet"] == 15 + int(2.25 * 2 * 2 * 48 * 60 / 1e6 / 1e-4)


def test_an_ensemble_of_other_pixel_sizes_is_refused(tmp_path, model):
    first = _checkpoint(tmp_path / "a.pt", model)
    second = _checkpoint(tmp_path / "b.pt", model, voxel_size=(50.0, 6.0, 6.0))
    assert training_pixel_size([first, first]) == ((50.0, 4.0, 4.0), "nanometer")
    assert training_pixel_size([_checkpoint(tmp_path / "old.pt", model, voxel_size=None)]) is None
    with pytest.raises(CheckpointError, match="different pixel sizes"):
        training_pixel_size([first, second])


def test_a_calibrated_imagej_tiff_is_predicted_at_the_training_pixel_size(
    tmp_path, model, model_file, volume
):
    calibration = dict(resolution=(1 / 0.006, 1 / 0.006), metadata={"axes": "ZYX", "unit": "um"})
    tifffile.imwrite(tmp_path / "in.tif", volume, imagej=True, **calibration)
    out = tmp_path / "out.ome.zarr"
    options = PredictOptions(block_shape=(1, 48, 60), output_dtype="float32")
    predict_file(model_file, tmp_path / "in.tif", out, options=options)
    result = io.open_volume(out)
    assert result.unit == "micrometer" and result.voxel_size[1:] == pytest.approx((0.006, 0.006))
    expected = _resampled_reference(model, volume, 1.5)
    assert np.abs(np.asarray(result.array[...]) - expected).max() <= 1e-5
