"""The volume sheet (``volumes.tsv``): further volumes that the workflow predicts and segments.

One row per volume: ``name``, ``path`` and an optional ``voxel_size`` (``z,y,x``), separated by tabs;
lines starting with ``#`` are comments. A row's columns are defined once, by the JSON schema
``unet_core/schemas/volumes.schema.yaml`` (shipped with the package, so an installed ``unet_core``
reads sheets too).
"""

from __future__ import annotations

import csv
import functools
import os
from importlib import resources
from io import StringIO

import jsonschema
import pandas as pd
import yaml

#: The prepared store's held-out slices, predicted and scored in every run: no sheet row may take the name.
HELD_OUT = "heldout"


@functools.cache
def volume_schema() -> dict:
    """The JSON schema (2020-12) of one row of the volume sheet."""
    return yaml.safe_load(resources.files(__package__).joinpath("schemas/volumes.schema.yaml").read_text())


def read_volume_sheet(path: str | os.PathLike | None) -> pd.DataFrame:
    """Read and check a volume sheet: one row per volume, indexed by its name.

    Parameters
    ----------
    path : str or path-like, optional
        The tab-separated sheet; empty or None: no volumes. Fields are read literally, so a path may
        hold ``#``, quotes or ``$``.

    Returns
    -------
    pandas.DataFrame
        The sheet's columns as strings (missing values empty), indexed by ``name`` (kept as a column).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If a row does not match the schema (naming the row, column, value and expected form), or names
        are not unique or one is ``heldout``.

    Examples
    --------
    >>> read_volume_sheet("").empty
    True
    """
    if not path:
        return _no_volumes()
    try:
        with open(path) as handle:
            rows = "".join(line for line in handle if not line.startswith("#"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: no such volume sheet; fix the config's `volumes` (or set it to '' for none)"
        ) from None
    if not rows.strip():
        return _no_volumes()
    # index_col=False: a stray trailing tab must not turn the name column into the index
    sheet = pd.read_csv(StringIO(rows), sep="\t", dtype=str, quoting=csv.QUOTE_NONE, index_col=False)
    if sheet.empty:
        return _no_volumes()
    sheet = sheet.fillna("")
    validator = jsonschema.Draft202012Validator(volume_schema())
    for _, row in sheet.iterrows():
        if (error := next(validator.iter_errors(row.to_dict()), None)) is not None:
            raise ValueError(f"{path}: volume {row.get('name', '?')!r}: {_problem(error)}; fix that row")
    names = sheet["name"]
    clashes = sorted(set(names[names.duplicated()]) | ({HELD_OUT} & set(names)))
    if clashes:
        raise ValueError(f"{path}: volume names must be unique and not '{HELD_OUT}'; rename {clashes}")
    return sheet.set_index("name", drop=False)


def _no_volumes() -> pd.DataFrame:
    return pd.DataFrame(columns=["name", "path"]).set_index("name", drop=False)


def _problem(error: jsonschema.ValidationError) -> str:
    """The column, value and expected form of a schema error: the column's description, since
    jsonschema's own text shows the regular expression."""
    if not error.path:
        return error.message
    expected = error.schema.get("description", error.message)
    return f"{error.path[0]} {error.instance!r} is not valid ({expected})"
