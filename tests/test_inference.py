import copy
import doctest

import numpy as np
import pytest
import torch

from unet_core import inference, model
from unet_core.inference import TilePredictor, decode, encode
from unet_core.model import UNet, UNetConfig, native_bf16

STORED = [np.uint8, np.uint16, np.int16, np.int32, np.float16, np.float32, np.float64]


@pytest.mark.parametrize("stored", STORED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decode_divides_integers_by_their_maximum_in_the_asked_type(stored, dtype):
    rng = np.random.default_rng(0)
    if np.issubdtype(stored, np.integer):
        values = rng.integers(0, np.iinfo(stored).max, 1000, endpoint=True).astype(stored)
        expected = values.astype(dtype) / dtype(np.iinfo(stored).max)
    else:
        values = rng.random(1000).astype(stored)
        expected = values.astype(dtype)
    decoded = decode(values, dtype)
    assert decoded.dtype == dtype
    assert np.array_equal(decoded, expected)


def test_decode_scales_integers_by_their_type_and_casts_floats():
    assert decode(np.array([0, 51, 255], np.uint8), np.float64).tolist() == [0.0, 0.2, 1.0]
    assert decode(np.array([0, 65535], np.uint16)).tolist() == [0.0, 1.0]
    assert decode(np.array([0.25], np.float16)).dtype == np.float32  # the default type


@pytest.mark.parametrize("stored", ["uint8", "float16", "float32"])
def test_decode_inverts_encode(stored):
    prob = np.random.default_rng(1).random(10_000, dtype=np.float32)
    error = {"uint8": 0.5 / 255, "float16": 2.0**-11, "float32": 0.0}[stored]
    assert np.abs(decode(encode(prob, stored)) - prob).max() <= error


def test_docstring_examples():
    failures, tried = doctest.testmod(inference)
    assert tried > 0 and failures == 0


def test_the_cpu_defaults_bf16_and_nhwc_agree_with_float32_nchw():
    """bf16 autocast (on CPUs with AMX or AVX512-BF16) and channels_last are the CPU's defaults: they
    change the probabilities by bf16's rounding at most, never by a misplaced axis."""
    torch.manual_seed(0)
    net = UNet(UNetConfig(depth=2, width=8, norm="batch")).eval()
    with torch.no_grad():  # statistics away from 0 and 1, so the probabilities spread
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    tiles = np.random.default_rng(0).integers(0, 256, (2, 124, 124), dtype=np.uint8)
    fast = TilePredictor(copy.deepcopy(net), device="cpu").tiles(tiles)
    plain = TilePredictor(copy.deepcopy(net), device="cpu", bf16=False, channels_last=False).tiles(tiles)
    assert fast.shape == plain.shape == (2, 84, 84)
    assert plain.std() > 0.01  # a map with something to get wrong
    tolerance = 0.02 if native_bf16(torch.device("cpu")) else 1e-5
    assert np.abs(fast - plain).max() <= tolerance


def test_native_bf16_is_cuda_or_a_cpu_with_amx_or_avx512_bf16(monkeypatch):
    assert native_bf16(torch.device("cuda"))
    native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    assert native_bf16(torch.device("cpu")) == native
    assert isinstance(model.bf16_autocast(torch.device("cpu"), True), torch.autocast) == native
    assert not isinstance(model.bf16_autocast(torch.device("cpu"), False), torch.autocast)
    for amx, avx512_bf16 in [(True, False), (False, True), (False, False)]:  # each unit alone is enough
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        assert native_bf16(torch.device("cpu")) == (amx or avx512_bf16)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")  # a torch without the private probes
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert not native_bf16(torch.device("cpu"))
