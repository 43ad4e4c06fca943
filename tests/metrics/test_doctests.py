"""The examples in the metric docstrings run and print what they claim."""

import doctest
import importlib

import pytest

MODULES = ["_pixel", "_rand", "_info", "_warping", "_iou", "_scores"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"unet_core.metrics.{name}")
    failures, tried = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0
    assert failures == 0
