"""The config schema's stage sections list exactly the options of the matching unet-core commands."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from unet_core.predict import PredictOptions
from unet_core.prepare import PrepareConfig
from unet_core.segment import SegmentOptions
from unet_core.train import TrainConfig

SCHEMA = yaml.safe_load((Path(__file__).parents[1] / "workflow/schemas/config.schema.yaml").read_text())


@pytest.mark.parametrize(
    ("section", "options"),
    [
        ("prepare", PrepareConfig),
        ("train", TrainConfig),
        ("predict", PredictOptions),
        ("segment", SegmentOptions),
    ],
)
def test_schema_section_matches_command_options(section, options):
    listed = set(SCHEMA["properties"][section]["properties"])
    assert listed == {field.name for field in dataclasses.fields(options)}
