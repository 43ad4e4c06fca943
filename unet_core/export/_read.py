"""`load_package`: the U-Net(s) back from a package that `unet-core export` wrote, for `unet-core predict`.

Reading needs neither bioimageio library: the zip's ``bioimageio.yaml`` carries our marker
(``config.unet_core``) with the normalisation and the U-Nets' configurations, and the state dict is a
plain tensor file read with ``weights_only=True``.
"""

from __future__ import annotations

import io as _bytes_io
import os
import zipfile
from pathlib import Path

import torch
import yaml

from ..checkpoint import CheckpointError
from ..model import Ensemble, UNet
from ._network import CellProbability

#: ``config.unet_core.format`` and ``version`` of the packages `export_package` writes.
FORMAT = "unet_core.bioimageio"
VERSION = 1
#: Names the description may have inside a package (spec 0.5 writes the first; older packages the second).
DESCRIPTION_NAMES = ("bioimageio.yaml", "rdf.yaml")
OTHER_PACKAGES = (
    "only packages written by `unet-core export` can be loaded here; run other bioimage.io models with "
    "bioimageio.core, ilastik, deepImageJ (Fiji) or napari"
)


def load_package(
    path: str | os.PathLike, *, device: torch.device | str = "cpu"
) -> tuple[UNet | Ensemble, tuple[float, float]]:
    """The network of a package from `export_package` and its input normalisation (low, high).

    Raises
    ------
    CheckpointError
        If ``path`` is not a zip with a bioimage.io description, or one that `export_package` did not write.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            rdf, marker = _description(archive, path)
            weights = archive.read(rdf["weights"]["pytorch_state_dict"]["source"])
            state = torch.load(_bytes_io.BytesIO(weights), map_location=device, weights_only=True)
            net = CellProbability(marker["members"])
            net.load_state_dict(state)
            low, high = marker["normalization"]
    except CheckpointError:
        raise
    except (FileNotFoundError, IsADirectoryError):
        raise CheckpointError(
            f"{path}: no such package; export one with `unet-core export` or fix the path"
        ) from None
    except zipfile.BadZipFile as err:
        raise CheckpointError(f"{path}: not a zip file ({err}); {OTHER_PACKAGES}") from err
    except (KeyError, TypeError, ValueError, RuntimeError, yaml.YAMLError) as err:
        raise CheckpointError(
            f"{path}: a damaged unet-core package ({type(err).__name__}: {err}); export it again"
        ) from err
    members = list(net.members)
    network = members[0] if len(members) == 1 else Ensemble(members)
    return network.to(device), (float(low), float(high))


def package_pixel_size(path: str | os.PathLike) -> tuple[tuple[float, ...], str] | None:
    """The voxel size (z, y, x) and unit of the data a package's model was trained on, where recorded
    (`unet_core.checkpoint.training_pixel_size` of a package)."""
    with zipfile.ZipFile(path) as archive:  # load_package has read it already: errors were named there
        pixel_size = _description(archive, Path(path))[1].get("pixel_size")
    return None if pixel_size is None else (tuple(pixel_size["voxel_size"]), pixel_size["unit"])


def _description(archive: zipfile.ZipFile, path: Path) -> tuple[dict, dict]:
    """The package's description and our marker in it; a CheckpointError unless `export_package` wrote it."""
    names = set(archive.namelist())
    description = next((n for n in DESCRIPTION_NAMES if n in names), None)
    if description is None:
        raise CheckpointError(f"{path}: a zip without bioimageio.yaml, not a bioimage.io package")
    rdf = yaml.safe_load(archive.read(description))
    marker = (rdf.get("config") or {}).get("unet_core") if isinstance(rdf, dict) else None
    if not isinstance(marker, dict) or marker.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a bioimage.io package of another program; {OTHER_PACKAGES}")
    if marker.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: package version {marker.get('version')} is not {VERSION}; export it again "
            "with this unet-core"
        )
    return rdf, marker
