"""The ``unet-core`` command line: one subcommand per workflow stage.

Options of ``prepare``, ``train`` and ``predict`` are generated from the fields of their config dataclasses,
so a new field is a new flag (``tile_size`` -> ``--tile-size``) without touching this file.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import types
import typing
from collections.abc import Sequence

import torch

log = logging.getLogger("unet_core")


def _add_dataclass_options(parser: argparse.ArgumentParser, cls: type) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint, flag = hints[f.name], "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        args = typing.get_args(hint)
        if isinstance(hint, types.UnionType | typing._UnionGenericAlias):  # Optional[...]
            hint = next(a for a in args if a is not type(None))
            args = typing.get_args(hint)
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif typing.get_origin(hint) is tuple:
            parser.add_argument(flag, type=args[0], nargs=len(args), default=default, metavar=f.name.upper())
        else:
            parser.add_argument(flag, type=hint, default=default)


def _dataclass_from_args(cls: type, args: argparse.Namespace):
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def cmd_prepare(args: argparse.Namespace) -> None:
    from .prepare import PrepareConfig, prepare

    prepare(args.output, _dataclass_from_args(PrepareConfig, args))


def cmd_train(args: argparse.Namespace) -> None:
    from .train import TrainConfig, train

    _set_threads(args.threads)
    train(args.data, args.out_dir, _dataclass_from_args(TrainConfig, args))


def cmd_predict(args: argparse.Namespace) -> None:
    from .predict import PredictOptions, predict_file

    _set_threads(args.threads)
    predict_file(args.model, args.input, args.output, options=_dataclass_from_args(PredictOptions, args))


def cmd_segment(args: argparse.Namespace) -> None:
    from .segment import segment_file

    segment_file(
        args.prediction,
        args.output,
        threshold=args.threshold,
        method=args.method,
        seed_threshold=args.seed_threshold,
        min_size=args.min_size,
    )


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluate import evaluate_files

    evaluate_files(args.prediction, args.labels, args.out, slices=args.slices, n_workers=args.threads)


def cmd_report(args: argparse.Namespace) -> None:
    from .report import build_report

    build_report(
        args.out_dir,
        metrics_csv=args.metrics,
        train_log=args.train_log,
        data=args.data,
        prediction=args.prediction,
        segmentation=args.segmentation,
        title=args.title,
    )


def build_parser() -> argparse.ArgumentParser:
    from .predict import PredictOptions
    from .prepare import PrepareConfig
    from .train import TrainConfig

    parser = argparse.ArgumentParser(prog="unet-core", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="build the training store data.ome.zarr")
    p.add_argument("output", help="path of the store to write (data.ome.zarr)")
    _add_dataclass_options(p, PrepareConfig)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train a U-Net on a prepared store")
    p.add_argument("data", help="prepared store (data.ome.zarr)")
    p.add_argument("out_dir", help="folder for best.pt, last.pt, train_log.csv")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    _add_dataclass_options(p, TrainConfig)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="overlap-tile prediction of a volume into an OME-Zarr")
    p.add_argument("model", help="checkpoint (best.pt)")
    p.add_argument("input", help="volume: TIFF, Zarr, OME-Zarr or file.h5:/dataset")
    p.add_argument("output", help="OME-Zarr of cell probability to write")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    _add_dataclass_options(p, PredictOptions)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("segment", help="probabilities to instance labels")
    p.add_argument("prediction", help="probability OME-Zarr from predict")
    p.add_argument("output", help="label OME-Zarr to write")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--method", choices=("components", "watershed"), default="components")
    p.add_argument("--seed-threshold", type=float, default=0.9)
    p.add_argument("--min-size", type=int, default=0)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("evaluate", help="ISBI pixel and Rand errors of a prediction against labels")
    p.add_argument("prediction", help="probability OME-Zarr (or any volume) of cell interior")
    p.add_argument("labels", help="ground truth volume (0 = membrane), or a prepared data.ome.zarr")
    p.add_argument("--out", required=True, help="metrics.csv to write; per-slice/threshold CSVs go beside")
    p.add_argument("--slices", default="held-out", help="'held-out' (prepared stores), 'all' or 'START:STOP'")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="HTML/CSV/TeX report of a run")
    p.add_argument("out_dir")
    p.add_argument("--metrics", required=True)
    p.add_argument("--train-log", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--prediction", required=True)
    p.add_argument("--segmentation", required=True)
    p.add_argument("--title", default="U-Net segmentation report")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        # User-caused errors: one clear line, no traceback from deep inside numpy.
        print(f"unet-core {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
