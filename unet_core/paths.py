"""Path checks that keep a stage from writing over the data it reads."""

from __future__ import annotations

import os
from pathlib import Path


def volume_file(path: str | os.PathLike) -> str:
    """The file or folder that holds a volume: ``file.h5:/dataset`` -> ``file.h5``; others unchanged.

    >>> volume_file("em/stack.h5:/volumes/raw")
    'em/stack.h5'
    """
    text = os.fspath(path)
    head, sep, _ = text.rpartition(":")
    return head if sep and Path(head).suffix.lower() in (".h5", ".hdf5", ".hdf") else text


def _file_part(path: str | os.PathLike) -> Path:
    return Path(volume_file(path)).resolve()


def refuse_overwriting_input(output: str | os.PathLike, *inputs: str | os.PathLike) -> None:
    """Raise when ``output`` is one of ``inputs``, lies inside one, or contains one.

    >>> refuse_overwriting_input("results/pred.ome.zarr", "data/raw.tif")
    """
    out = _file_part(output)
    for source in inputs:
        src = _file_part(source)
        if out == src or src in out.parents or out in src.parents:
            raise ValueError(
                f"output {output} would overwrite the input {source}; choose an output path outside it"
            )
