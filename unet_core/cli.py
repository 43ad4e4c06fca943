"""The ``unet-core`` command line: one subcommand per workflow stage.

Options of ``prepare``, ``train``, ``predict`` and ``segment`` are generated from the fields of their config
dataclasses, so a new field is a new flag (``tile_size`` -> ``--tile-size``) without touching this file.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import inspect
import logging
import re
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("unet_core")
#: Prefix of the segment options of ``unet-core train`` (``--segment-method``), which validation uses.
VALIDATION_SEGMENT = "segment-"
#: The dashes under a numpydoc section heading.
_RULE = re.compile(r"^\s*-{3,}\s*$")


def attribute_docs(cls: type) -> dict[str, str]:
    """Each attribute's description in the numpydoc ``Attributes`` section of ``cls``'s docstring.

    An entry is a ``name : type`` line (``a, b : type`` for attributes that share a description)
    followed by its indented description, which is joined into one line without the backticks of code
    and cross-references. The section ends at the docstring's next section.

    Parameters
    ----------
    cls : type
        A class with a numpydoc docstring.

    Returns
    -------
    dict
        ``{name: description}`` in the order of the section; empty without one.

    Examples
    --------
    >>> class Example:
    ...     \'\'\'An example.
    ...
    ...     Attributes
    ...     ----------
    ...     low, high : int
    ...         The ``range``,
    ...         half-open.
    ...     \'\'\'
    >>> attribute_docs(Example)
    {'low': 'The range, half-open.', 'high': 'The range, half-open.'}
    """
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    headings = [i for i in range(len(lines) - 1) if lines[i].strip() and _RULE.match(lines[i + 1])]
    start = next((i for i in headings if lines[i].strip() == "Attributes"), None)
    if start is None:
        return {}
    end = next((i for i in headings if i > start), len(lines))
    docs: dict[str, str] = {}
    names: list[str] = []
    for line in lines[start + 2 : end]:
        if line[:1].isspace():  # description of the entry above
            for name in names:
                docs[name] = f"{docs[name]} {line.strip()}".lstrip()
        elif line.strip():  # an entry: ``name : type`` or ``a, b : type``
            names = [name.strip() for name in line.partition(" : ")[0].split(",")]
            docs |= dict.fromkeys(names, "")
    return {name: re.sub(r"`+([^`]*)`+", r"\1", text) for name, text in docs.items()}


def _option_help(description: str, flag: str, default: object) -> str:
    """An option's help: its field's description, and the default as the command line writes it (a tuple
    as its values, a boolean as its flag); no default when unset, which the description explains."""
    text = description.removesuffix(".").replace("%", "%%")  # argparse formats help with %
    if default is None or default == "":
        return text
    if isinstance(default, bool):
        shown = flag if default else f"--no-{flag.removeprefix('--')}"
    elif isinstance(default, tuple):
        shown = " ".join(map(str, default))
    else:
        shown = str(default)
    return f"{text} (default: {shown})"


def _add_dataclass_options(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """One option per field of ``cls``, its help from the class's ``Attributes`` (`attribute_docs`); the
    flags start with ``prefix`` (``segment-``: ``--segment-method``) when given.

    A field without a description, or a description of no field, raises TypeError: every option has help.
    """
    hints = typing.get_type_hints(cls)
    docs = attribute_docs(cls)
    fields = dataclasses.fields(cls)
    if stale := sorted(set(docs) - {f.name for f in fields}):
        raise TypeError(f"{cls.__name__}'s docstring documents {stale}, which are not fields; remove them")
    for f in fields:
        hint, flag = hints[f.name], "--" + prefix + f.name.replace("_", "-")
        if not docs.get(f.name):
            raise TypeError(
                f"{cls.__name__}.{f.name} has no description in the Attributes section of its docstring; "
                f"add one (it is the help of {flag})"
            )
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_ = _option_help(docs[f.name], flag, default)
        args = typing.get_args(hint)
        if isinstance(hint, types.UnionType | typing._UnionGenericAlias):  # Optional[...]
            hint = next(a for a in args if a is not type(None))
            args = typing.get_args(hint)
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_)
        elif typing.get_origin(hint) is typing.Literal:
            parser.add_argument(flag, type=type(args[0]), choices=args, default=default, help=help_)
        elif typing.get_origin(hint) is tuple:
            nargs = "*" if args[-1] is Ellipsis else len(args)  # tuple[int, ...]: any number of values
            parser.add_argument(
                flag, type=args[0], nargs=nargs, default=default, metavar=f.name.upper(), help=help_
            )
        else:
            parser.add_argument(flag, type=hint, default=default, help=help_)


def config_flags(options: dict, prefix: str = "") -> list[str]:
    """A config section as options of its subcommand, the inverse of `_add_dataclass_options` (with the
    same ``prefix``): ``tile_size: 188`` -> ``--tile-size 188``, ``tta: false`` -> ``--no-tta``, a list ->
    its values. Sorted by key: Snakemake reruns a job whose command changed, and the order of keys in a
    config file is not a change."""
    flags = []
    for key, value in sorted(options.items()):
        name = prefix + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no-{name}")
        elif isinstance(value, list | tuple):
            flags += [f"--{name}", *map(str, value)]
        else:
            flags += [f"--{name}", str(value)]
    return flags


def _dataclass_from_args(cls: type, args: argparse.Namespace, prefix: str = ""):
    values = {f.name: getattr(args, prefix.replace("-", "_") + f.name) for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _positive_int(text: str) -> int:
    """argparse type of thread counts: a clear usage error instead of a traceback from torch."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of threads, got {value}")
    return value


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch  # here: the workflow imports this module for `config_flags`, and torch is slow to load

        torch.set_num_threads(threads)


def cmd_prepare(args: argparse.Namespace) -> None:
    from .prepare import PrepareConfig, prepare

    prepare(args.output, _dataclass_from_args(PrepareConfig, args), threads=args.threads)


def cmd_train(args: argparse.Namespace) -> None:
    from .segment import SegmentOptions
    from .train import TrainConfig
    from .training import train

    data, out_dir = Path(args.data).resolve(), Path(args.out_dir).resolve()
    if out_dir == data or data in out_dir.parents:
        raise ValueError(
            f"output folder {args.out_dir} would be inside the input {args.data}; choose another"
        )
    _set_threads(args.threads)
    segment = _dataclass_from_args(SegmentOptions, args, prefix=VALIDATION_SEGMENT)
    train(args.data, args.out_dir, _dataclass_from_args(TrainConfig, args), segment=segment)


def cmd_predict(args: argparse.Namespace) -> None:
    from .predict import PredictOptions, gather_prediction, parse_shard, predict_file

    if args.gather:
        gather_prediction(args.output)
        return
    _set_threads(args.threads)
    shard = parse_shard(args.shard) if args.shard else None
    predict_file(
        args.model,
        args.input,
        args.output,
        options=_dataclass_from_args(PredictOptions, args),
        shard=shard,
        voxel_size=args.voxel_size,
        unit=args.unit,
    )


def cmd_segment(args: argparse.Namespace) -> None:
    from .segment import SegmentOptions, segment_file

    options = _dataclass_from_args(SegmentOptions, args)
    segment_file(args.prediction, args.output, options=options, n_workers=args.threads)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluate import evaluate_files

    evaluate_files(
        args.prediction,
        args.labels,
        args.out,
        slices=args.slices,
        segmentation=args.segmentation,
        n_workers=args.threads,
    )


def cmd_report(args: argparse.Namespace) -> None:
    import json

    from .report import ReportInputs, ReportProvenance, build_report, pair_volumes

    try:
        config = None if args.config_json is None else json.loads(args.config_json)
    except json.JSONDecodeError as err:
        raise ValueError(f"--config-json must be a JSON object: {err}") from err
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"--config-json must be a JSON object, got {type(config).__name__}")
    inputs = ReportInputs(
        metrics_csv=args.metrics,
        per_threshold_csv=args.per_threshold,
        per_slice_csv=args.per_slice,
        train_log=args.train_log,
        data=args.data,
        prediction=args.prediction,
        segmentation=args.segmentation,
        volumes=pair_volumes(args.pred_volumes, args.seg_volumes),
        models=args.model,
        package=args.package,
        crossval=args.crossval,
    )
    provenance = ReportProvenance(
        config=config,
        config_files=args.configfiles,
        repo=args.repo,
        logs=args.logs,
        benchmarks=args.benchmarks,
    )
    build_report(args.out_dir, inputs, provenance=provenance, title=args.title, n_slices=args.n_slices)


def cmd_crossval(args: argparse.Namespace) -> None:
    from .crossval import write_summary

    write_summary(args.out_dir, args.metrics, args.train_logs)


def cmd_export(args: argparse.Namespace) -> None:
    from .export import export_package

    _set_threads(args.threads)
    named = {key: getattr(args, key) for key in ("license", "name") if getattr(args, key) is not None}
    export_package(
        args.model,
        args.output,
        data=args.data,
        metrics=args.metrics,
        cover=args.cover,
        authors=args.authors,
        **named,
    )


def cmd_install_profiles(args: argparse.Namespace) -> None:
    from .profiles import install_profiles

    for path in install_profiles(args.repository):
        print(f"installed profile {path.name}: {path} -> {path.resolve()}")


def build_parser() -> argparse.ArgumentParser:
    from .predict import PredictOptions
    from .prepare import PrepareConfig
    from .segment import SegmentOptions
    from .train import TrainConfig

    parser = argparse.ArgumentParser(prog="unet-core", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="build the training store data.ome.zarr")
    p.add_argument("output", help="path of the store to write (data.ome.zarr)")
    p.add_argument(
        "--threads", type=_positive_int, default=None, help="threads converting slices (default: all)"
    )
    _add_dataclass_options(p, PrepareConfig)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train a U-Net on a prepared store")
    p.add_argument("data", help="prepared store (data.ome.zarr)")
    p.add_argument("out_dir", help="folder for best.pt, last.pt, train_log.csv")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for torch")
    _add_dataclass_options(p, TrainConfig)
    group = p.add_argument_group(
        "validation of cells",
        "on a store of instance labels, validation segments the map as `unet-core segment` will (give it "
        "the segment options) and scores the cells by SEG; stores of membrane labels ignore these",
    )
    _add_dataclass_options(group, SegmentOptions, prefix=VALIDATION_SEGMENT)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="overlap-tile prediction of a volume into an OME-Zarr")
    p.add_argument("model", nargs="+", help="checkpoint (best.pt); several: the mean of their probabilities")
    p.add_argument("input", help="volume: TIFF, Zarr, OME-Zarr or file.h5:/dataset")
    p.add_argument("output", help="OME-Zarr of cell probability to write")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for torch")
    p.add_argument("--shard", default=None, help="I/N: write only the I-th of N disjoint runs of chunks")
    p.add_argument("--gather", action="store_true", help="publish OUTPUT once all shards are written")
    p.add_argument(
        "--voxel-size", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"),
        help="the input's voxel size (default: what its file records): recorded in the output, and "
        "resampled from to the training pixel size (--match-pixel-size)",
    )  # fmt: skip
    p.add_argument("--unit", default=None, help="unit of --voxel-size, e.g. nanometer (default: the input's)")
    _add_dataclass_options(p, PredictOptions)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("segment", help="probabilities to instance labels")
    p.add_argument("prediction", help="probability OME-Zarr from predict")
    p.add_argument("output", help="label OME-Zarr to write")
    p.add_argument(
        "--threads", type=_positive_int, default=None, help="threads labelling blocks (default: all cores)"
    )
    _add_dataclass_options(p, SegmentOptions)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser(
        "evaluate", help="ISBI errors of a prediction against labels; SEG for a store of instance labels"
    )
    p.add_argument("prediction", help="probability OME-Zarr (or any volume) of cell interior")
    p.add_argument(
        "labels", help="ground truth volume (0 = membrane), or a prepared data.ome.zarr (membranes or cells)"
    )
    p.add_argument("--out", required=True, help="metrics.csv to write; per-slice/threshold CSVs go beside")
    p.add_argument(
        "--slices",
        default="held-out",
        help="'held-out' (prepared stores), 'all', 'START:STOP', or 'fold:k/K' (the slices that "
        "cross-validation fold k of K validates on)",
    )
    p.add_argument("--segmentation", help="cell labels of the same volume (unet-core segment), scored too")
    p.add_argument(
        "--threads", type=_positive_int, default=None, help="threads scoring slices (default: all cores)"
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="HTML/CSV/TeX report of a run, with figures and provenance")
    p.add_argument("out_dir", help="report folder to (re)write: index.html, metrics.csv/.tex, figures/")
    p.add_argument("--metrics", required=True, help="eval/metrics.csv from unet-core evaluate")
    p.add_argument("--per-threshold", default=None, help="default: beside --metrics")
    p.add_argument("--per-slice", default=None, help="default: beside --metrics")
    p.add_argument("--train-log", required=True, help="model/train_log.csv")
    p.add_argument("--data", required=True, help="prepared store data.ome.zarr")
    p.add_argument("--prediction", required=True, help="probability OME-Zarr of the held-out volume")
    p.add_argument("--segmentation", required=True, help="label OME-Zarr of the held-out volume")
    p.add_argument("--pred-volumes", nargs="*", default=[], help="pred/<name>.ome.zarr of unlabelled volumes")
    p.add_argument("--seg-volumes", nargs="*", default=[], help="seg/<name>.ome.zarr, same names")
    p.add_argument(
        "--model",
        nargs="*",
        default=[],
        help="checkpoints (ensemble members 0, 1, ...) to checksum into provenance.json",
    )
    p.add_argument("--package", default=None, help="bioimage.io package (unet-core export) to checksum")
    p.add_argument("--crossval", default=None, help="cross-validation summary (unet-core crossval) to show")
    p.add_argument("--config-json", default=None, help="the workflow's config as JSON, for provenance")
    p.add_argument("--configfiles", nargs="*", default=[], help="config files the workflow read")
    p.add_argument("--repo", default=None, help="directory inside the workflow's git repository")
    p.add_argument("--logs", default=None, help="log folder with Snakemake *.benchmark.tsv files")
    p.add_argument("--benchmarks", nargs="*", default=None, help="only these of them (default: all)")
    p.add_argument("--n-slices", type=int, default=3, help="held-out slices shown in the error figure")
    p.add_argument(
        "--title", default="U-Net segmentation report", help="heading of index.html (default: %(default)s)"
    )
    p.set_defaults(func=cmd_report)
    p = sub.add_parser(
        "export", help="a trained model as a bioimage.io model package (.zip) for ilastik, Fiji, napari"
    )
    p.add_argument("model", nargs="+", help="checkpoint (best.pt); several: one package of their mean")
    p.add_argument("output", help="package to write (<name>.zip)")
    p.add_argument("--data", required=True, help="prepared store the model was trained on (data.ome.zarr)")
    p.add_argument("--metrics", required=True, help="eval/metrics.csv, quoted in the package's documentation")
    p.add_argument("--cover", default=None, help="cover image (PNG/JPEG); default: drawn from held-out data")
    p.add_argument("--authors", nargs="*", default=[], help="names of the model's authors")
    p.add_argument("--license", default=None, help="SPDX licence of the weights (default: CC-BY-4.0)")
    p.add_argument("--name", default=None, help="the package's name (default: U-Net EM cell interior)")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for torch")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("crossval", help="mean and spread of the metrics over cross-validation folds")
    p.add_argument("out_dir", help="folder for metrics.csv (summary), folds.csv and curve.csv")
    p.add_argument("--metrics", nargs="+", required=True, help="eval/metrics.csv of folds 0, 1, ...")
    p.add_argument("--train-logs", nargs="+", required=True, help="model/train_log.csv of folds 0, 1, ...")
    p.set_defaults(func=cmd_crossval)
    p = sub.add_parser(
        "install-profiles", help="link profiles/slurm and profiles/local so `--profile slurm` finds them"
    )
    p.add_argument("--repository", default=".", help="the unet-core checkout (default: current folder)")
    p.set_defaults(func=cmd_install_profiles)
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
    except (ValueError, TypeError, OSError) as err:
        # User-caused errors (and a full or read-only disk): one clear line, no traceback.
        message = os_error_message(err, _output_of(args)) if isinstance(err, OSError) else str(err)
        _close_progress_bars()
        print(f"unet-core {args.command}: error: {message}", file=sys.stderr)
        # Zarr's event loop may still hold sibling writes of the failed one (a full disk fails them all);
        # their "Task exception was never retrieved" tracebacks at exit would bury the line above.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
        return 2
    return 0


#: What to do about the OS errors a user can fix; the first three can only come from writing.
OS_ERROR_FIXES = {
    errno.ENOSPC: "free disk space or write the output to another file system",
    errno.EDQUOT: "free space in your quota or write the output to another file system",
    errno.EROFS: "the file system is read-only: write the output to a writable folder",
    errno.EACCES: "check the permissions of the path, or write the output to a folder you own",
    errno.EPERM: "check the permissions of the path, or write the output to a folder you own",
    errno.ENOTDIR: "a part of the path is a file where a folder is needed: fix the path",
    errno.EEXIST: "the path exists already (a file where a folder is needed?): fix the path",
    errno.ENOENT: "check the path",
}


def os_error_message(err: OSError, output: str | None = None) -> str:
    """One line for an OS error: what failed, on which path, and the fix.

    A failed write of a chunk or a file's contents carries no file name, so errors that only writing
    causes (disk full, quota, read-only) name ``output``, the path the command was writing.
    """
    text = f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
    if output and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        text = f"cannot write {output} ({text})"
    fix = OS_ERROR_FIXES.get(err.errno)
    return f"{text}; {fix}" if fix else text


def _close_progress_bars() -> None:
    """Finish the bars an exception left open, so that the error line starts on a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _output_of(args: argparse.Namespace) -> str | None:
    """The output path of a subcommand, whatever its option is called."""
    return next((str(getattr(args, n)) for n in ("output", "out_dir", "out") if getattr(args, n, None)), None)


if __name__ == "__main__":
    sys.exit(main())
