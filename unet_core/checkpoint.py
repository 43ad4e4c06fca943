"""Versioned checkpoint dictionaries, written atomically and read with ``weights_only=True``.

A checkpoint holds only tensors and plain Python values, so loading never runs pickled code: the model is
rebuilt from its stored `UNetConfig`, not unpickled.
"""

from __future__ import annotations

import io as _bytes_io
import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .io import atomic_write_bytes
from .model import Ensemble, UNet, UNetConfig

FORMAT = "unet_core.checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, unsafe or of another format; the message names the file."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (plus format tags) to ``path`` via temp + rename."""
    buffer = _bytes_io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(
    path: str | os.PathLike, *, device: torch.device | str = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`; refuses files that would execute code. ``mmap``
    maps the tensors instead of reading them: for a look at the plain values only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint; train a model first or fix the path")
    try:
        state = torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(
            f"{path}: not a safe unet_core checkpoint ({_reason(err)}); "
            "only checkpoints written by `unet-core train` can be loaded"
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a unet_core checkpoint; retrain with `unet-core train`")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {state.get('version')} is not {VERSION}; retrain the model"
        )
    return state


def _reason(err: Exception) -> str:
    """One line on why torch refused a file; its own advice (load with weights_only=False) is not ours."""
    if isinstance(err, pickle.UnpicklingError) and str(err).startswith("Weights only load failed"):
        return "damaged, or holding Python objects besides tensors, which could run code when loaded"
    first = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()[:1]
    return f"{type(err).__name__}: {first[0][:160] if first else 'no details'}"


def load_model(
    path: str | os.PathLike, *, device: torch.device | str = "cpu"
) -> tuple[UNet, tuple[float, float]]:
    """Rebuild the trained network of a checkpoint; returns it with its input normalisation (low, high)."""
    state = load_checkpoint(path, device=device)
    try:
        model = UNet(UNetConfig(**state["model_config"]))
        model.load_state_dict(state["model_state"])
        low, high = state["normalization"]
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # e.g. written by another unet_core
        raise CheckpointError(
            f"{path}: the checkpoint does not fit this unet_core's network ({_reason(err)}); "
            "retrain the model with this version"
        ) from err
    return model.to(device), (float(low), float(high))


def load_models(
    paths: Sequence[str | os.PathLike], *, device: torch.device | str = "cpu"
) -> tuple[UNet | Ensemble, tuple[float, float]]:
    """`load_model` of one checkpoint, or of several as an `Ensemble` (they must share the input
    normalisation, i.e. come from the same training data, and the depth); or the network of a
    bioimage.io package (``.zip``) that `unet-core export` wrote."""
    if any(Path(path).suffix == ".zip" for path in paths):
        from .export import load_package  # imported here: it pulls in the export's dependencies

        if len(paths) > 1:
            raise CheckpointError(
                f"{', '.join(map(str, paths))}: give a package (.zip) alone, without checkpoints"
            )
        return load_package(paths[0], device=device)
    loaded = [load_model(path, device=device) for path in paths]
    if len(loaded) == 1:
        return loaded[0]
    files = ", ".join(map(str, paths))
    normalizations = {normalization for _, normalization in loaded}
    if len(normalizations) > 1:
        raise CheckpointError(
            f"{files}: the checkpoints normalise their input differently {sorted(normalizations)}; "
            "ensemble only models trained on the same data"
        )
    try:
        return Ensemble([model for model, _ in loaded]).to(device), loaded[0][1]
    except ValueError as err:
        raise CheckpointError(f"{files}: {err}") from err


def training_pixel_size(paths: Sequence[str | os.PathLike]) -> tuple[tuple[float, ...], str | None] | None:
    """The voxel size (z, y, x) and unit of the data the checkpoints (or a bioimage.io package) were trained
    on; None where not recorded (models trained before unet_core recorded it, data without a unit)."""
    if len(paths) == 1 and Path(paths[0]).suffix == ".zip":
        from .export import package_pixel_size  # imported here: it pulls in the export's dependencies

        return package_pixel_size(paths[0])
    return recorded_pixel_size([load_checkpoint(path, mmap=True) for path in paths], paths)


def recorded_pixel_size(
    states: Sequence[dict[str, Any]], paths: Sequence[str | os.PathLike]
) -> tuple[tuple[float, ...], str | None] | None:
    """`training_pixel_size` of checkpoints already loaded (``states``, read from ``paths``)."""
    sizes = {(tuple(s["voxel_size"]), s.get("unit")) if "voxel_size" in s else None for s in states}
    if len(sizes) > 1:
        raise CheckpointError(
            f"{', '.join(map(str, paths))}: trained on data of different pixel sizes "
            f"{sorted(map(str, sizes))}; ensemble only models trained on the same data"
        )
    return sizes.pop()
