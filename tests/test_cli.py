import argparse
import dataclasses
import subprocess
import sys

import pytest

from unet_core.cli import (
    VALIDATION_SEGMENT,
    _add_dataclass_options,
    _dataclass_from_args,
    attribute_docs,
    build_parser,
    config_flags,
    main,
)
from unet_core.segment import SegmentOptions


def test_help_lists_every_stage(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for stage in ("prepare", "train", "predict", "segment", "evaluate", "report"):
        assert stage in out


def test_options_come_from_the_config_dataclasses(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--tile-size" in out and "--augment, --no-augment" in out


def test_config_sections_become_the_options_that_parse_back_to_them():
    from unet_core.predict import PredictOptions
    from unet_core.train import TrainConfig

    train = {"tile_size": 188, "augment": False, "lr": 0.002, "norm": "batch", "aug_gamma": 0.0}
    flags = config_flags(train)
    assert flags[:3] == ["--aug-gamma", "0.0", "--no-augment"]
    assert config_flags(dict(reversed(train.items()))) == flags  # key order is no reason to rerun
    args = build_parser().parse_args(["train", "data", "out", *flags])
    assert _dataclass_from_args(TrainConfig, args) == TrainConfig(**train)
    predict = {"block_shape": [1, 256, 256], "tta": True, "output_dtype": "float16"}
    args = build_parser().parse_args(["predict", "a.pt", "in", "out", *config_flags(predict)])
    assert _dataclass_from_args(PredictOptions, args) == PredictOptions(
        **predict | {"block_shape": (1, 256, 256)}
    )
    segment = {
        "method": "watershed",
        "threshold": 0.3,
        "seed_threshold": 0.8,
        "seed_min_size": 20,
        "min_size": 5,
    }
    args = build_parser().parse_args(["segment", "in", "out", *config_flags(segment)])
    assert _dataclass_from_args(SegmentOptions, args) == SegmentOptions(**segment)


def test_train_takes_the_segment_options_that_validation_of_cells_uses():
    segment = {"method": "distance", "threshold": 0.4, "seed_height": 3.0, "min_size": 100}
    flags = config_flags(segment, prefix=VALIDATION_SEGMENT)
    assert flags[:2] == ["--segment-method", "distance"]
    args = build_parser().parse_args(["train", "data", "out", *flags])
    assert _dataclass_from_args(SegmentOptions, args, prefix=VALIDATION_SEGMENT) == SegmentOptions(**segment)
    defaults = build_parser().parse_args(["train", "data", "out"])
    assert _dataclass_from_args(SegmentOptions, defaults, prefix=VALIDATION_SEGMENT) == SegmentOptions()


@pytest.mark.parametrize(("values", "expected"), [(["3", "8"], (3, 8)), ([], ())])
def test_a_tuple_of_any_length_takes_any_number_of_values(values, expected):
    from unet_core.prepare import PrepareConfig

    args = build_parser().parse_args(
        ["prepare", "out", "--labels-kind", "instances", "--partial-slices", *values]
    )
    assert _dataclass_from_args(PrepareConfig, args).partial_slices == expected


def test_segment_defaults_are_those_of_segment_options():
    args = build_parser().parse_args(["segment", "in", "out"])
    assert _dataclass_from_args(SegmentOptions, args) == SegmentOptions()
    assert args.method == "components"


def test_user_error_is_one_line_and_exit_code_2(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "unet_core",
            "predict",
            str(tmp_path / "none.pt"),
            "x.tif",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("unet-core predict: error:")
    assert "none.pt: no such checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_tile_size_names_the_fix(tmp_path, capsys):
    code = main(["train", str(tmp_path / "d"), str(tmp_path / "m"), "--depth", "2", "--tile-size", "102"])
    assert code == 2
    assert "valid_input_size(102, 2) = 104" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["prepare"],
        ["nonsense"],
        ["predict", "m.pt", "in.zarr", "out.zarr", "--threads", "-1"],
        ["segment", "p.zarr", "s.zarr", "--method", "magic"],
    ],
)
def test_usage_errors_exit_nonzero(argv):
    assert main(argv) == 2


def _stages(parser):
    """The subcommands' parsers by name."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_option_of_every_stage_has_help():
    parser = build_parser()
    stages = _stages(parser)
    assert {"prepare", "train", "predict", "segment", "evaluate", "report", "install-profiles"} <= set(stages)
    for name, command in {"unet-core": parser, **stages}.items():
        for action in command._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help and action.help.strip() and action.help != argparse.SUPPRESS, (
                    name,
                    action.option_strings or action.dest,
                )


def test_generated_help_is_the_field_documentation_with_the_default(capsys):
    assert main(["prepare", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--raw RAW The stack and its labels, both or neither" in out
    assert "so one key moves a dataset --labels-kind" in out  # no default shown for an empty string
    assert "(default: 10.0)" in out and "first 80 % train" in out
    assert "(default: 1 512 512)" in out  # a tuple as the command line writes it
    assert main(["predict", "--help"]) == 0
    assert "(default: --no-tta)" in " ".join(capsys.readouterr().out.split())
    assert main(["segment", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "{components,watershed,distance}" in out and "(default: components)" in out


def test_attribute_docs_reads_grouped_entries_and_stops_at_the_next_section():
    class Documented:
        """Summary.

        Attributes
        ----------
        low, high : int
            The ``range``,
            half-open.

        flag : bool
            On or off.

        Notes
        -----
        not : an attribute
        """

    assert attribute_docs(Documented) == {
        "low": "The range, half-open.",
        "high": "The range, half-open.",
        "flag": "On or off.",
    }
    assert attribute_docs(int) == {}


def test_a_field_without_documentation_fails_loudly():
    @dataclasses.dataclass
    class Options:
        """Attributes
        ----------
        a : int
            Documented.
        """

        a: int = 0
        b: int = 1

    with pytest.raises(TypeError, match=r"Options.b has no description in the Attributes section .* --b\)"):
        _add_dataclass_options(argparse.ArgumentParser(), Options)


def test_documentation_of_a_field_that_does_not_exist_fails_loudly():
    @dataclasses.dataclass
    class Options:
        """Attributes
        ----------
        a, gone : int
            Documented.
        """

        a: int = 0

    with pytest.raises(TypeError, match=r"Options's docstring documents \['gone'\], which are not fields"):
        _add_dataclass_options(argparse.ArgumentParser(), Options)
