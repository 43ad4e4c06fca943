import doctest

import numpy as np
import pytest

from unet_core import inference
from unet_core.inference import decode, encode

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
