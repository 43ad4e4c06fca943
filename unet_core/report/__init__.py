"""The report folder a paper author lifts from.

``build_report`` writes, atomically, into ``results/<ds>/report/``::

    index.html         self-contained page (figures inline), opens offline
    metrics.csv        our rows beside the U-Net paper's Table 1, with thresholds
    metrics.tex        the same as a booktabs table fragment
    provenance.json    config and its hash, git commit, packages, seeds, input checksums, machine, timings
    figures/<name>.png and .pdf, names in FIGURES (plus volume_<name> per extra volume)

A store of instance labels (cells) gets SEG beside the paper's Table 2 and the figures of CELL_FIGURES
instead (`build_cell_report`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import io
from ..dataset import TrainingStore
from ..paths import refuse_overwriting_input
from ..report_figures import FIGURES, volume_figure_name
from . import _provenance
from ._cells import build_cell_report
from ._figures import (
    cover_figure,
    held_out_figure,
    label_colours,
    orthoviews_figure,
    per_slice_figure,
    save_figure,
    threshold_figure,
    training_figure,
)
from ._html import render_page
from ._provenance import (
    MAX_CONTENT_BYTES,
    benchmark_times,
    find_seeds,
    git_state,
    hardware,
    input_checksums,
    package_versions,
    provenance,
    rule_times,
    sha256_file,
    store_digest,
)
from ._tables import (
    CROSSVAL_COLUMNS,
    DEFINITIONS,
    EVALUATE,
    ISBI_METRICS,
    PAPER_SOURCE,
    PUBLISHED,
    crossval_note,
    crossval_table_html,
    held_out_note,
    html_table,
    latex_table,
    read_checked_csv,
    read_eval_metrics,
    read_run_tables,
    slice_range_text,
    summary_table,
)

__all__ = [
    "FIGURES",
    "MAX_CONTENT_BYTES",
    "PUBLISHED",
    "ReportInputs",
    "ReportProvenance",
    "benchmark_times",
    "build_report",
    "choose_slices",
    "cover_figure",
    "find_seeds",
    "git_state",
    "hardware",
    "held_out_figure",
    "input_checksums",
    "label_colours",
    "latex_table",
    "orthoviews_figure",
    "package_versions",
    "pair_volumes",
    "per_slice_figure",
    "provenance",
    "read_eval_metrics",
    "rule_times",
    "sha256_file",
    "store_digest",
    "summary_table",
    "threshold_figure",
    "training_figure",
    "volume_figure_name",
    "volume_name",
]

log = logging.getLogger(__name__)


def volume_name(path: str | os.PathLike) -> str:
    """``pred/<name>.ome.zarr`` -> ``<name>`` (also ``.zarr``; other paths: the file name)."""
    name = Path(path).name
    for suffix in (".ome.zarr", ".zarr"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name.removesuffix(suffix)
    return name


def pair_volumes(
    predictions: Iterable[str | os.PathLike], segmentations: Iterable[str | os.PathLike]
) -> dict[str, tuple[str, str]]:
    """``{name: (prediction, segmentation)}`` from two lists matched by volume name.

    Raises
    ------
    ValueError
        If the lists differ in length, or a name has no partner or occurs twice.
    """
    predictions, segmentations = [os.fspath(p) for p in predictions], [os.fspath(s) for s in segmentations]
    if len(predictions) != len(segmentations):
        raise ValueError(
            f"need one segmentation per prediction, got {len(predictions)} predictions and "
            f"{len(segmentations)} segmentations"
        )
    preds = {volume_name(p): p for p in predictions}
    segs = {volume_name(s): s for s in segmentations}
    if len(preds) != len(predictions) or preds.keys() != segs.keys():
        raise ValueError(
            "prediction and segmentation volumes must pair up by name, "
            f"got {sorted(preds)} and {sorted(segs)}"
        )
    return {name: (preds[name], segs[name]) for name in preds}


def _scored_range(metrics: pd.DataFrame, path: str | os.PathLike) -> tuple[int, int]:
    text = str(metrics["slices"].iloc[0])
    start, _, stop = text.partition(":")
    if not (start.isdigit() and stop.isdigit() and int(stop) > int(start)):
        raise ValueError(f"{path}: column 'slices' must hold 'START:STOP' (e.g. '20:24'), got {text!r}")
    return int(start), int(stop)


def choose_slices(
    per_slice: pd.DataFrame, *, first_slice: int, n: int = 3, method: str = "unet", metric: str = "rand_error"
) -> dict[int, float]:
    """Slices to show: lowest, median and highest ``metric`` of ``method`` (``n`` spread over the ranking).

    Parameters
    ----------
    per_slice : pandas.DataFrame
        ``eval/metrics_per_slice.csv`` (``slice`` counts from the first scored slice).
    first_slice : int
        Absolute z of scored slice 0.
    n : int, optional
        How many slices to pick at most.
    method, metric : str, optional
        The ranking.

    Returns
    -------
    dict
        ``{z: value}`` in increasing z (absolute slice index).

    Raises
    ------
    ValueError
        If ``n`` < 1 or ``per_slice`` has no row of ``method`` and ``metric``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 slice to show, got {n}")
    rows = per_slice[(per_slice["method"] == method) & (per_slice["metric"] == metric)]
    if rows.empty:
        raise ValueError(
            f"per-slice metrics have no {metric!r} of method {method!r}; rerun `unet-core evaluate`"
        )
    ranked = rows.sort_values(["value", "slice"], kind="stable")
    picks = np.unique(np.round(np.linspace(0, len(ranked) - 1, min(n, len(ranked)))).astype(int))
    chosen = ranked.iloc[picks]
    return dict(sorted(zip((chosen["slice"] + first_slice).tolist(), chosen["value"].tolist(), strict=True)))


def _sibling(metrics_csv: str | os.PathLike, kind: str) -> Path:
    path = Path(metrics_csv)
    return path.with_name(f"{path.stem}_{kind}.csv")


def _write_figures(
    directory: Path,
    *,
    table: pd.DataFrame,
    per_threshold: pd.DataFrame,
    per_slice: pd.DataFrame,
    train_log: pd.DataFrame,
    scored: tuple[int, int],
    images: Mapping[str, str | os.PathLike],
    volumes: Mapping[str, tuple[str | os.PathLike, str | os.PathLike]],
    select_metric: str,
    n_slices: int,
) -> list[tuple[Path, str]]:
    ours = table[table["source"] != PAPER_SOURCE]
    method = "unet" if "unet" in set(ours["method"]) else str(ours["method"].iloc[0])
    unet = ours.set_index("method").loc[method]
    zs = choose_slices(per_slice, first_slice=scored[0], n=n_slices, method=method)
    fig, _ = held_out_figure(
        images["data"],
        images["prediction"],
        images["segmentation"],
        list(zs),
        threshold=float(unet["warping_error_threshold"]),
        notes={z: f"Rand error {value:.3f}" for z, value in zs.items()},
    )
    figures = [(save_figure(fig, directory, "held_out"), FIGURES["held_out"])]
    made = {
        "training": training_figure(train_log, select_metric=select_metric),
        "thresholds": threshold_figure(per_threshold, ours),
        "per_slice": per_slice_figure(per_slice, ours, first_slice=scored[0]),
    }
    figures += [(save_figure(f, directory, name), FIGURES[name]) for name, f in made.items()]
    return figures + volume_figures(directory, volumes)


def volume_figures(
    directory: Path, volumes: Mapping[str, tuple[str | os.PathLike, str | os.PathLike]]
) -> list[tuple[Path, str]]:
    """The orthogonal views of each unlabelled volume, saved into ``directory``, with their captions."""
    figures = []
    for name, (prediction, segmentation) in volumes.items():
        stem = volume_figure_name(name)
        fig = orthoviews_figure(prediction, segmentation, name=name)
        caption = (
            f"Volume {name}: orthogonal views through its centre (xy, with yz to the right and xz below; "
            "dashed lines show where the planes cut) of the U-Net probability of cell interior and of the "
            "cells; no ground truth. Cells are labelled slice by slice, so their colours change along z."
        )
        figures.append((save_figure(fig, directory, stem), caption))
    return figures


@dataclasses.dataclass(frozen=True)
class ReportInputs:
    """The files of a finished run that a report is built from.

    Attributes
    ----------
    metrics_csv : str or path-like
        ``eval/metrics.csv`` from ``unet-core evaluate``.
    train_log : str or path-like
        ``model/train_log.csv``.
    data, prediction, segmentation : str or path-like
        The prepared store and the held-out volume's probability and label stores.
    per_threshold_csv, per_slice_csv : str or path-like, optional
        Default: ``metrics_per_threshold.csv`` and ``metrics_per_slice.csv`` beside ``metrics_csv``.
    volumes : mapping, optional
        ``{name: (prediction, segmentation)}`` of volumes without labels, shown as orthogonal views.
    models : sequence of path-like, optional
        The checkpoints predict averaged (ensemble members 0, 1, ...), checksummed into the provenance as
        ``model``, ``model/member1``, ...
    package : str or path-like, optional
        The bioimage.io model package (``unet-core export``), checksummed into the provenance as
        ``bioimageio_package``.
    crossval : str or path-like, optional
        The cross-validation summary (``unet-core crossval``'s metrics.csv), shown as its own table and
        copied as ``crossval.csv``.

    Raises
    ------
    ValueError
        If a value of ``volumes`` is not a pair of paths.
    """

    metrics_csv: str | os.PathLike
    train_log: str | os.PathLike
    data: str | os.PathLike
    prediction: str | os.PathLike
    segmentation: str | os.PathLike
    per_threshold_csv: str | os.PathLike | None = None
    per_slice_csv: str | os.PathLike | None = None
    volumes: Mapping[str, tuple[str | os.PathLike, str | os.PathLike]] = dataclasses.field(
        default_factory=dict
    )
    models: Sequence[str | os.PathLike] = ()
    package: str | os.PathLike | None = None
    crossval: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        for name, pair in self.volumes.items():
            if isinstance(pair, str | os.PathLike) or len(pair) != 2:
                raise ValueError(
                    f"volumes[{name!r}] must be a (prediction, segmentation) pair of paths, got {pair!r}"
                )
        # frozen: the defaults that depend on metrics_csv, and copies the caller cannot change, are set here
        for name, kind in (("per_threshold_csv", "per_threshold"), ("per_slice_csv", "per_slice")):
            object.__setattr__(self, name, getattr(self, name) or _sibling(self.metrics_csv, kind))
        object.__setattr__(self, "volumes", dict(self.volumes))
        object.__setattr__(self, "models", tuple(self.models))

    def named_paths(self) -> dict[str, str | os.PathLike]:
        """Every input under the name provenance.json records it by."""
        return {
            "metrics": self.metrics_csv,
            "metrics_per_threshold": self.per_threshold_csv,
            "metrics_per_slice": self.per_slice_csv,
            "train_log": self.train_log,
            "data": self.data,
            "prediction": self.prediction,
            "segmentation": self.segmentation,
            **{"model" if k == 0 else f"model/member{k}": path for k, path in enumerate(self.models)},
            **({"bioimageio_package": self.package} if self.package is not None else {}),
            **({"crossval": self.crossval} if self.crossval is not None else {}),
            **{
                f"{kind}/{name}": path
                for name, pair in self.volumes.items()
                for kind, path in zip(("pred", "seg"), pair, strict=True)
            },
        }


@dataclasses.dataclass(frozen=True)
class ReportProvenance:
    """How the run came about, recorded in provenance.json beside the checksums of the inputs.

    Attributes
    ----------
    config : mapping, optional
        The workflow's configuration, recorded with its hash and seeds.
    config_files : iterable of path-like, optional
        The config files it came from.
    repo : str or path-like, optional
        A directory in the workflow's git repository.
    logs : str or path-like, optional
        The dataset's log folder with Snakemake benchmark files.
    benchmarks : iterable of path-like, optional
        Only these benchmark files count (the current configuration's jobs); default: all below ``logs``.
    max_content_bytes : int, optional
        Stores larger than this are fingerprinted by metadata and sizes, not content.
    """

    config: Mapping | None = None
    config_files: Iterable[str | os.PathLike] = ()
    repo: str | os.PathLike | None = None
    logs: str | os.PathLike | None = None
    benchmarks: Iterable[str | os.PathLike] | None = None
    max_content_bytes: int = MAX_CONTENT_BYTES

    def record(self, inputs: Mapping[str, str | os.PathLike]) -> dict:
        """The provenance.json record of a report made of ``inputs`` (name: path)."""
        return _provenance.provenance(
            config=self.config,
            config_files=self.config_files,
            repo=self.repo,
            inputs=inputs,
            logs=self.logs,
            benchmarks=self.benchmarks,
            max_content_bytes=self.max_content_bytes,
        )


def build_report(
    out_dir: str | os.PathLike,
    inputs: ReportInputs,
    *,
    provenance: ReportProvenance | None = None,
    title: str = "U-Net segmentation report",
    n_slices: int = 3,
) -> Path:
    """Write the report folder: tables, figures, provenance and a self-contained ``index.html``.

    Parameters
    ----------
    out_dir : str or path-like
        The folder to (re)write; it is replaced only once everything is written.
    inputs : ReportInputs
        The run's files.
    provenance : ReportProvenance, optional
        Config, repository and logs to record; default: none of them.
    title : str, optional
        Heading of index.html.
    n_slices : int, optional
        Held-out slices shown in the ``held_out`` figure.

    Returns
    -------
    pathlib.Path
        ``out_dir/index.html``.
    """
    provenance = provenance or ReportProvenance()
    store = TrainingStore.find(inputs.data)
    if store is not None and store.labels_kind == "instances":  # cells: SEG and the paper's Table 2
        return build_cell_report(out_dir, inputs, provenance=provenance, title=title, n_slices=n_slices)
    metrics = read_eval_metrics(inputs.metrics_csv)
    scored = _scored_range(metrics, inputs.metrics_csv)
    table = summary_table(metrics)
    named = inputs.named_paths()
    refuse_overwriting_input(out_dir, *named.values())  # the folder is replaced as a whole
    metric_columns = [*ISBI_METRICS, "threshold"]
    per_threshold = read_checked_csv(
        inputs.per_threshold_csv, ["method", *metric_columns], numeric=metric_columns, writer=EVALUATE
    )
    per_slice, training_log = read_run_tables(inputs)
    record = provenance.record(named)
    select_metric = (provenance.config or {}).get("train", {}).get("select_metric", "rand_error")
    crossval = None
    if inputs.crossval is not None:
        numeric = ["mean", "std", "min", "max", "folds"]
        crossval = read_checked_csv(
            inputs.crossval, CROSSVAL_COLUMNS, numeric=numeric, writer="`unet-core crossval`"
        )
    with io.atomic_directory(out_dir) as tmp:
        table.to_csv(tmp / "metrics.csv", index=False)
        (tmp / "metrics.tex").write_text(latex_table(table))
        (tmp / "provenance.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        figures = _write_figures(
            tmp / "figures",
            table=table,
            per_threshold=per_threshold,
            per_slice=per_slice,
            train_log=training_log,
            scored=scored,
            images={
                "data": inputs.data,
                "prediction": inputs.prediction,
                "segmentation": inputs.segmentation,
            },
            volumes=inputs.volumes,
            select_metric=select_metric,
            n_slices=n_slices,
        )
        files = ["metrics.csv", "metrics.tex", "provenance.json"]
        sections = []
        if crossval is not None:
            crossval.to_csv(tmp / "crossval.csv", index=False)
            files.append("crossval.csv")
            final = bool((provenance.config or {}).get("crossval", {}).get("final", False))
            note = crossval_note(int(crossval["folds"].max()), final=final)
            sections.append(("Cross-validated errors", crossval_table_html(crossval), note))
        files += [f"figures/{png.stem}.{suffix}" for png, _ in figures for suffix in ("png", "pdf")]
        page = render_page(
            title,
            table_html=html_table(table),
            notes=[held_out_note(slice_range_text(f"{scored[0]}:{scored[1]}")), DEFINITIONS],
            figures=figures,
            record=record,
            files=files,
            sections=sections,
        )
        (tmp / "index.html").write_text(page)
    log.info("report written to %s (%d figures)", out_dir, len(figures))
    return Path(out_dir) / "index.html"
