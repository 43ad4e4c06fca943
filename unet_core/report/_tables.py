"""The results table: our held-out scores beside the U-Net paper's Table 1, as CSV, LaTeX and HTML."""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # the package imports this module
    from . import ReportInputs

#: Columns of ``eval/metrics.csv`` as ``unet-core evaluate`` writes it (long form).
EVAL_COLUMNS = ("method", "metric", "value", "threshold", "slices")
#: The three ISBI 2012 scores of Table 1, in the paper's column order.
ISBI_METRICS = ("warping_error", "rand_error", "pixel_error")
EVALUATE = "`unet-core evaluate`"
#: Further scores of ours that the CSV carries (no published counterpart).
EXTRA_METRICS = ("pixel_error_at_0.5", "n_split", "n_merge", "vrand", "vinfo")
METRIC_NAMES = {"warping_error": "Warping error", "rand_error": "Rand error", "pixel_error": "Pixel error"}
OUR_LABELS = {
    "unet": "U-Net (ours)",
    "segmentation": "U-Net + segment (ours)",
    "intensity_threshold": "Intensity threshold (ours)",
}
PAPER_SOURCE = "Ronneberger et al. 2015, Table 1 (ISBI 2012 test set)"
# U-Net paper, Table 1 (ISBI 2012 test set, March 2015): docs/metrics.md.
PUBLISHED = pd.DataFrame(
    [
        ("human values", 0.000005, 0.0021, 0.0010),
        ("u-net", 0.000353, 0.0382, 0.0611),
        ("DIVE-SCI", 0.000355, 0.0305, 0.0584),
        ("IDSIA", 0.000420, 0.0504, 0.0613),
    ],
    columns=["method", *ISBI_METRICS],
)
DEFINITIONS = (
    "Errors are the ISBI 2012 challenge's (Fiji Trainable Segmentation metrics): pixel error = 1 - max F "
    "of the cell class, Rand error = 1 - max foreground-restricted Rand F-score, warping error = "
    "(split + merge pixels) / pixels after warping the ground truth by simple points; each is minimised "
    "over thresholds t on P(cell) (0.0-1.0 in steps of 0.1, warping 0.0-0.9; the intensity baseline "
    "sweeps 51 thresholds). U-Net + segment scores the cells that the segment step delivers (a binary "
    "map: label 0 and a 1-px line between touching cells are membrane), a post-processing the paper's "
    "entry did not use."
)
_DECIMALS = {"warping_error": 6, "rand_error": 4, "pixel_error": 4}


def slice_range_text(slices: str) -> str:
    """Half-open ``"START:STOP"`` as the inclusive ``"START-LAST"`` a reader expects; others unchanged."""
    start, _, stop = str(slices).partition(":")
    if start.isdigit() and stop.isdigit() and int(stop) > int(start):
        return str(start) if int(stop) == int(start) + 1 else f"{start}-{int(stop) - 1}"
    return str(slices)


def held_out_note(slices: str) -> str:
    """The footnote every table with our rows carries: where our numbers come from."""
    return (
        f"Our rows are measured on held-out slices {slices} (z, 0-based) of the training volume, "
        "not on the hidden ISBI 2012 test labels; the published rows are the U-Net paper's Table 1 "
        "on the challenge test set, so the two are not directly comparable."
    )


def read_checked_csv(
    path: str | os.PathLike, columns: Sequence[str], *, numeric: Sequence[str] = (), writer: str
) -> pd.DataFrame:
    """A CSV that ``writer`` wrote, with ``columns`` present and ``numeric`` ones holding numbers; any
    other content is one ValueError naming the file."""
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path}: not a readable CSV ({type(err).__name__}: {err}); write it with {writer}"
        ) from err
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: needs columns {list(columns)}, missing {missing}; write it with {writer}")
    if frame.empty:
        raise ValueError(f"{path}: has no rows; write it with {writer}")
    for column in numeric:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise ValueError(
                f"{path}: column {column!r} holds values that are not numbers; write it with {writer}"
            )
    return frame


def read_eval_metrics(path: str | os.PathLike, *, required: Sequence[str] = ISBI_METRICS) -> pd.DataFrame:
    """``eval/metrics.csv`` checked for the columns and the metrics the report needs.

    Parameters
    ----------
    path : str or path-like
        Long-form CSV written by ``unet-core evaluate``: ``method, metric, value, threshold, slices``.
    required : sequence of str, optional
        The metrics every method must have: the ISBI errors (membranes), or SEG, foreground IoU and Dice
        (cells, `evaluate_cells.CELL_METRICS`).

    Returns
    -------
    pandas.DataFrame
        The CSV as read.

    Raises
    ------
    ValueError
        If a column is missing, or a method lacks one of the ``required`` metrics.
    """
    frame = read_checked_csv(path, EVAL_COLUMNS, numeric=("value", "threshold"), writer=EVALUATE)
    twice = frame[frame.duplicated(["method", "metric"])]
    if not twice.empty:
        first = twice.iloc[0]
        raise ValueError(
            f"{path}: {first['metric']} of {first['method']!r} appears twice; write it with {EVALUATE}"
        )
    for method, rows in frame.groupby("method", sort=False):
        lacking = sorted(set(required) - set(rows["metric"]))
        if lacking:
            raise ValueError(f"{path}: method {method!r} lacks metrics {lacking}; rerun `unet-core evaluate`")
    return frame


def summary_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per method: ours (value and threshold of every metric), then the paper's Table 1.

    Parameters
    ----------
    metrics : pandas.DataFrame
        Long-form evaluation metrics (see :func:`read_eval_metrics`).

    Returns
    -------
    pandas.DataFrame
        Columns ``method, label, source, slices``, then ``<metric>`` and ``<metric>_threshold`` for the
        three ISBI errors, then ``pixel_error_at_0.5, n_split, n_merge, vrand, vinfo`` (ours only).
        Published rows carry NaN where the paper gives no number.
    """
    rows = []
    for method, group in metrics.groupby("method", sort=False):
        by_metric = group.set_index("metric")
        row = {
            "method": method,
            "label": OUR_LABELS.get(method, f"{method} (ours)"),
            "source": f"this run, held-out slices {group['slices'].iloc[0]}",
            "slices": group["slices"].iloc[0],
        }
        for name in ISBI_METRICS:
            row[name] = float(by_metric.loc[name, "value"])
            row[f"{name}_threshold"] = float(by_metric.loc[name, "threshold"])
        for name in EXTRA_METRICS:
            row[name] = float(by_metric.loc[name, "value"]) if name in by_metric.index else np.nan
        rows.append(row)
    published = PUBLISHED.assign(label=PUBLISHED["method"], source=PAPER_SOURCE, slices=None)
    table = pd.concat([pd.DataFrame(rows), published], ignore_index=True)
    columns = ["method", "label", "source", "slices"]
    for name in ISBI_METRICS:
        columns += [name, f"{name}_threshold"]
    return table[[*columns, *EXTRA_METRICS]]


def _display_frame(table: pd.DataFrame, *, marker: str, escape: Callable[[str], str]) -> pd.DataFrame:
    """Strings per cell, with two-level columns (metric, error | t), for LaTeX and HTML.

    Labels are escaped for the target format and our rows get ``marker``; numbers need no escaping.
    """
    ours = table["source"] != PAPER_SOURCE
    columns = [("", "Method")]
    labels = [
        escape(label) + (marker if mine else "") for label, mine in zip(table["label"], ours, strict=True)
    ]
    data: dict[tuple[str, str], list[str]] = {("", "Method"): labels}
    for name in ISBI_METRICS:
        value, threshold = (METRIC_NAMES[name], "error"), (METRIC_NAMES[name], "$t$")
        columns += [value, threshold]
        data[value] = [_number(v, _DECIMALS[name]) for v in table[name]]
        data[threshold] = [_number(t, 2) for t in table[f"{name}_threshold"]]
    return pd.DataFrame(data, columns=pd.MultiIndex.from_tuples(columns))


def _number(value: float, decimals: int) -> str:
    """A table cell; ``--`` for a value not computed (NaN)."""
    return "--" if np.isnan(value) else f"{value:.{decimals}f}"


def latex_table(table: pd.DataFrame, *, label: str = "tab:unet-isbi") -> str:
    """A booktabs ``table`` fragment of :func:`summary_table`, for ``\\input`` into a paper.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`summary_table`.
    label : str, optional
        The ``\\label`` of the table.

    Returns
    -------
    str
        LaTeX needing only the ``booktabs`` package: caption naming the ISBI definitions, one
        error and threshold ``$t$`` column pair per metric, a rule between our rows and the
        published ones, and a footnote that ours come from held-out slices.
    """
    ours = table["source"] != PAPER_SOURCE
    display = _display_frame(table, marker=r"$^\dagger$", escape=_latex_escape)
    latex = display.style.hide(axis="index").to_latex(
        hrules=True,
        multicol_align="c",
        column_format="l" + "rr" * len(ISBI_METRICS),
        environment="table",
        position_float="centering",
        caption=_latex_escape(DEFINITIONS),
        label=label,
    )
    lines = latex.splitlines()
    header = lines.index(r"\toprule") + 1
    rules = "".join(rf"\cmidrule(lr){{{2 + 2 * k}-{3 + 2 * k}}}" for k in range(len(ISBI_METRICS)))
    lines.insert(header + 1, rules)
    first_body = lines.index(r"\midrule") + 1
    if ours.any() and not ours.all():
        lines.insert(first_body + int(ours.sum()), r"\midrule")
    slices = ", ".join(sorted({slice_range_text(s) for s in table.loc[ours, "slices"]}))
    note = rf"\par\smallskip{{\footnotesize $^\dagger$ {_latex_escape(held_out_note(slices))} " + (
        r"$t$: threshold on P(cell) attaining the minimum.}"
    )
    lines.insert(lines.index(r"\end{tabular}") + 1, note)
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    replacements = {
        "\\": r"\textbackslash ",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\^{}",
    }
    return "".join(replacements.get(c, c) for c in text)


def html_table(table: pd.DataFrame) -> str:
    """The same table as :func:`latex_table` as an HTML fragment (escaped, no external resources)."""
    display = _display_frame(table, marker="\N{DAGGER}", escape=html.escape)
    head_top = "".join(
        f'<th colspan="2">{html.escape(top)}</th>'
        for top in dict.fromkeys(t for t, _ in display.columns)
        if top
    )
    head_sub = "".join(f"<th>{html.escape(sub.replace('$t$', 't'))}</th>" for _, sub in display.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
        for row in display.itertuples(index=False)
    )
    return (
        f'<table class="metrics"><thead><tr><th></th>{head_top}</tr><tr>{head_sub}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


#: Columns of the cross-validated table: what a recipe is chosen by, and what its Rand error is made of.
CROSSVAL_METRICS = {
    "pixel_error": "Pixel error",
    "rand_error": "Rand error",
    "rand_split": "Rand: split",
    "rand_merge": "Rand: merge",
    "warping_error": "Warping error",
    "n_split": "Split px",
    "n_merge": "Merge px",
}
#: ... of cells (instance labels): the Cell Tracking Challenge's SEG and the foreground's overlap.
CROSSVAL_CELL_METRICS = {"seg": "SEG", "foreground_iou": "Foreground IoU", "dice": "Dice"}
CROSSVAL_COLUMNS = ("method", "metric", "mean", "std", "min", "max", "folds")


def crossval_note(folds: int, *, final: bool) -> str:
    """Which figures are cross-validated, and which model the run ships."""
    shipped = (
        "The shipped model (model/best.pt) trained on every labelled slice with no validation "
        "(crossval.final), so the held-out table above scores slices it was trained on: the "
        "cross-validated figures are the measurement."
        if final
        else "The shipped model (model/best.pt) trained on the store's split; the table above scores "
        "its held-out slices."
    )
    return (
        f"Cross-validated over {folds} folds: each fold trained on the labelled slices outside a contiguous "
        "run and was scored on that run with its last checkpoint (the one a final model ships; its best.pt "
        "was chosen on that run), so every labelled slice was scored once; mean +- standard "
        "deviation over folds (range in brackets). " + shipped
    )


def crossval_table_html(summary: pd.DataFrame) -> str:
    """The cross-validation summary (``unet-core crossval``'s metrics.csv) as an HTML table: one row per
    method, one column per metric of `CROSSVAL_METRICS` (membranes) or `CROSSVAL_CELL_METRICS` (cells),
    "mean +- std [min, max]"."""
    shown = CROSSVAL_CELL_METRICS if "seg" in set(summary["metric"]) else CROSSVAL_METRICS
    head = "".join(f"<th>{html.escape(name)}</th>" for name in shown.values())
    rows = []
    for method, group in summary.groupby("method", sort=False):
        values = group.set_index("metric")
        cells = []
        for metric in shown:
            if metric not in values.index:
                cells.append("<td>--</td>")
                continue
            row = values.loc[metric]
            decimals = 0 if metric.startswith("n_") else _DECIMALS.get(metric, 4)
            cells.append(
                f"<td>{_number(row['mean'], decimals)} &plusmn; {_number(row['std'], decimals)} "
                f"[{_number(row['min'], decimals)}, {_number(row['max'], decimals)}]</td>"
            )
        label = html.escape(OUR_LABELS.get(method, method))
        rows.append(f"<tr><td>{label}</td>{''.join(cells)}</tr>")
    body = "".join(rows)
    return f'<table class="metrics"><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>'


def read_run_tables(inputs: ReportInputs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-slice scores (`unet-core evaluate`) and the training log (`unet-core train`) a report
    shows, each checked (`read_checked_csv`)."""
    per_slice = read_checked_csv(
        inputs.per_slice_csv,
        ["method", "metric", "slice", "value"],
        numeric=["slice", "value"],
        writer=EVALUATE,
    )
    training_log = read_checked_csv(
        inputs.train_log, ["iteration", "loss"], numeric=["iteration", "loss"], writer="`unet-core train`"
    )
    return per_slice, training_log
