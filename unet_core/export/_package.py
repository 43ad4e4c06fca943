"""`export_package`: trained checkpoints as one bioimage.io model package (spec 0.5), a zip that
bioimageio.core, ilastik, deepImageJ (Fiji) and napari run without unet-core.

The zip holds::

    bioimageio.yaml            the description: tensors, tiling geometry, preprocessing, weights, citation
    README.md                  documentation: geometry, training data and config, measured metrics
    cover.png                  raw | P(cell) of a held-out slice, drawn by the report's figure code
    test_input.npy             a crop of a training slice (1, 1, T, T), raw intensities
    test_output.npy            the package's own output for it
    sample_input.tif, sample_output.tif   the same as images
    unet.py                    the architecture: unet_core.model's source and `CellProbability`'s
    weights.pt                 the state dict of `CellProbability`
    weights_torchscript.pt     the same network traced to TorchScript
    weights.onnx               and exported to ONNX (opset 18)

Everything is built in a temporary folder and validated with bioimageio.spec (local files only, so
nothing is downloaded) before the zip is written to the output path in one rename.
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import io as _bytes_io
import logging
import os
import shutil
import tempfile
import typing
import warnings
import zipfile
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np
import tifffile
import torch

from .. import io, model
from ..checkpoint import load_checkpoint, load_models, recorded_pixel_size
from ..dataset import TrainingStore, held_out
from ..evaluate_cells import CELL_METRICS
from ..inference import TilePredictor
from ..model import Ensemble, UNet
from ..paths import refuse_overwriting_input
from ..report import cover_figure, read_eval_metrics, sha256_file
from ..report._tables import ISBI_METRICS
from ..tiling import Roi, read_mirrored
from ._docs import PAPER, PAPER_DOI, documentation
from ._network import CellProbability, halo, min_input
from ._read import FORMAT, VERSION

log = logging.getLogger(__name__)

RDF = "bioimageio.yaml"
DEFAULT_NAME = "U-Net EM cell interior"
DEFAULT_LICENSE = "CC-BY-4.0"
COVER_SUFFIXES = (".png", ".jpg", ".jpeg")
#: The test crop's kept part is at most this many pixels per side; the cover shows at most COVER_SIDE.
TEST_KEPT = 128
COVER_SIDE = 512
ONNX_OPSET = 18
TAGS = ["unet", "2d", "pytorch", "electron-microscopy", "semantic-segmentation", "membranes", "cells"]


def export_package(
    models: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    data: str | os.PathLike,
    metrics: str | os.PathLike,
    cover: str | os.PathLike | None = None,
    authors: Sequence[str] = (),
    license: str = DEFAULT_LICENSE,
    name: str = DEFAULT_NAME,
) -> str:
    """Write trained checkpoints as a bioimage.io model package; returns its SHA-256.

    Parameters
    ----------
    models : sequence of path-like
        ``best.pt`` of one model, or of several (an ensemble): the package computes their mean.
    output : path-like
        The ``.zip`` to write; it appears only when complete and valid.
    data : path-like
        The prepared store the models were trained on (test tensors, cover, provenance).
    metrics : path-like
        ``eval/metrics.csv`` of the models' predictions, quoted in the documentation.
    cover : path-like, optional
        A PNG or JPEG to use as the cover instead of the drawn one.
    authors : sequence of str, optional
        Names of the model's authors.
    license : str, optional
        SPDX identifier of the weights' licence.
    name : str, optional
        The package's name: 5-128 letters, digits, spaces and ``_+-()``.

    Returns
    -------
    str
        Hex SHA-256 of the written zip.

    Raises
    ------
    ValueError
        A bad output name, licence or package name; a checkpoint of another program, or checkpoints that
        do not form an ensemble; a missing or malformed store, metrics file or cover; each message names
        the file and the fix. Nothing is written then.
    """
    output, paths = Path(output), [Path(m) for m in models]
    if not paths:
        raise ValueError("export needs at least one checkpoint (best.pt)")
    _check_request(output, paths, data, metrics, cover, license, name)
    checkpoints = [load_checkpoint(p) for p in paths]  # refuses other programs' files, naming them
    network, normalization = load_models(paths)  # refuses ensembles of other depths or data
    pixel_size = recorded_pixel_size(checkpoints, paths)
    net = _cell_probability(network)
    root = TrainingStore.open(data)
    required = CELL_METRICS if root.labels_kind == "instances" else ISBI_METRICS
    table = read_eval_metrics(metrics, required=required)
    with tempfile.TemporaryDirectory(prefix="unet-core-export-") as tmp:
        folder = Path(tmp)
        torch.save(net.state_dict(), folder / "weights.pt")
        architecture = inspect.getsource(model) + "\n\n" + inspect.getsource(CellProbability)
        (folder / "unet.py").write_text(architecture)
        origin = _test_tensors(folder, net, root, normalization)
        _trace(net, folder)
        _onnx(net, folder)
        _cover(folder, cover, network, normalization, root)
        records = [_checkpoint_record(p, c) for p, c in zip(paths, checkpoints, strict=True)]
        store = {"path": os.fspath(data), "data_sha256": checkpoints[0].get("data_sha256")}
        recorded = root.record
        store |= {key: recorded.get(key) for key in ("source", "labels", "split")}
        depth = net.members[0].config.depth
        (folder / "README.md").write_text(
            documentation(
                name=name,
                depth=depth,
                halo=halo(depth),
                min_size=min_input(depth),
                normalization=normalization,
                checkpoints=records,
                data=store,
                metrics=table,
                test_origin=origin,
                version=version("unet-core"),
                labels_kind=root.labels_kind,
                pixel_size=pixel_size,
            )
        )
        _describe(
            folder,
            net,
            normalization,
            name=name,
            authors=authors,
            license=license,
            created=max(p.stat().st_mtime for p in paths),
            records=records,
            test_origin=origin,
            pixel_size=pixel_size,
        )
        payload = _zip(folder)
    io.atomic_write_bytes(output, payload)
    digest = hashlib.sha256(payload).hexdigest()
    log.info("wrote %s (%d bytes, sha256 %s)", output, len(payload), digest)
    return digest


def _check_request(
    output: Path,
    paths: list[Path],
    data: str | os.PathLike,
    metrics: str | os.PathLike,
    cover: str | os.PathLike | None,
    license: str,
    name: str,
) -> None:
    """The user's errors that need no loading, found before any work."""
    from bioimageio.spec.model.v0_5 import LicenseId
    from pydantic import TypeAdapter, ValidationError

    if output.suffix != ".zip":
        raise ValueError(f"{output}: a bioimage.io package is a zip file; name the output <name>.zip")
    if output.is_dir():
        raise ValueError(f"{output}: a folder; give the path of the zip file to write")
    refuse_overwriting_input(output, *paths, data, metrics, *([cover] if cover else []))
    if not Path(metrics).is_file():
        raise ValueError(
            f"{metrics}: no such metrics file; the package's documentation quotes the measured errors: "
            "run `unet-core evaluate` first (or the workflow's evaluate rule) and give its metrics.csv"
        )
    if cover is not None and (Path(cover).suffix.lower() not in COVER_SUFFIXES or not Path(cover).is_file()):
        raise ValueError(
            f"{cover}: no such cover image, or not {'/'.join(COVER_SUFFIXES)}; give a PNG or JPEG "
            "(2:1 or 1:1, under 500 kB), or leave --cover out to draw one from a held-out slice"
        )
    try:
        TypeAdapter(LicenseId).validate_python(license)
    except ValidationError:
        raise ValueError(
            f"licence {license!r} is not an SPDX identifier that bioimage.io accepts; use e.g. CC-BY-4.0 "
            "or MIT (https://spdx.org/licenses/)"
        ) from None
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+- ()")
    if not 5 <= len(name) <= 128 or not set(name) <= allowed:
        raise ValueError(
            f"package name {name!r} must have 5-128 characters, only letters, digits, spaces and _+-(); "
            "choose another --name"
        )


def _cell_probability(network: UNet | Ensemble) -> CellProbability:
    """The exported network holding the trained weights, in inference mode."""
    members = list(network.members) if isinstance(network, Ensemble) else [network]
    net = CellProbability([member.config.to_dict() for member in members])
    for target, member in zip(net.members, members, strict=True):
        target.load_state_dict(member.state_dict())
    return net.eval()


def _checkpoint_record(path: Path, state: dict) -> dict:
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "best_iteration": state.get("best_iteration"),
        "train_config": state.get("train_config", {}),
    }


def _scaled(raw: np.ndarray, normalization: tuple[float, float]) -> torch.Tensor:
    """The package's preprocessing (scale_linear) as bioimageio.core computes it: float32 raw * gain +
    offset."""
    low, high = normalization
    return torch.from_numpy(raw) * (1.0 / (high - low)) + (-low / (high - low))


def _test_tensors(
    folder: Path, net: CellProbability, root: TrainingStore, normalization: tuple[float, float]
) -> tuple[int, int, int]:
    """Write the test input (a crop of the middle training slice) and the package's output for it;
    returns the crop's first voxel (z, y, x) in the store.

    The crop's kept part starts on the pooling grid of ``unet-core predict`` (a multiple of
    ``2**depth``), so the kept output equals that of ``unet-core predict`` on the store; outside the slice
    (small slices) the crop is mirrored as predict mirrors."""
    raw = root.raw
    train = root.split.slices("train")
    depth = net.members[0].config.depth
    step, margin = 2**depth, halo(depth)
    z = (train.start + train.stop - 1) // 2
    kept = max(step, min(TEST_KEPT, *raw.shape[1:]) // step * step)
    y, x = (((side - kept) // 2) // step * step for side in raw.shape[1:])
    side = kept + 2 * margin
    roi = Roi((z, y - margin, x - margin), (1, side, side))
    test_input = read_mirrored(raw, roi).astype(np.float32)[None]  # (batch, channel, y, x)
    with torch.inference_mode():
        test_output = net(_scaled(test_input, normalization)).numpy()
    np.save(folder / "test_input.npy", test_input)
    np.save(folder / "test_output.npy", test_output)
    tifffile.imwrite(folder / "sample_input.tif", test_input[0, 0])  # images for people to look at
    tifffile.imwrite(folder / "sample_output.tif", test_output[0, 0])
    return roi.begin


def _trace(net: CellProbability, folder: Path) -> None:
    """TorchScript by tracing: the forward has no data-dependent branches, and the shape arithmetic it
    records holds for every valid tile (bioimageio.core's test runs three sizes and two batch sizes)."""
    example = torch.from_numpy(np.load(folder / "test_input.npy"))
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, still widely run
        traced = torch.jit.trace(net, example)
    traced.save(os.fspath(folder / "weights_torchscript.pt"))


def _onnx(net: CellProbability, folder: Path) -> None:
    """ONNX through torch.export, with the batch and both image sides left free."""
    example = torch.from_numpy(np.load(folder / "test_input.npy"))
    free = torch.export.Dim.DYNAMIC
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on torch internals, not on this network
        program = torch.onnx.export(
            net,
            (example,),
            dynamo=True,
            verbose=False,
            input_names=["raw"],
            output_names=["cell_probability"],
            dynamic_shapes={"x": {0: free, 2: free, 3: free}},
            opset_version=ONNX_OPSET,
        )
    program.save(os.fspath(folder / "weights.onnx"))


def _cover(
    folder: Path,
    cover: str | os.PathLike | None,
    network: UNet | Ensemble,
    normalization: tuple[float, float],
    root: TrainingStore,
) -> None:
    """``cover.<ext>``: the user's image, or raw | P(cell) of the middle held-out slice (its centre)."""
    if cover is not None:
        shutil.copyfile(cover, folder / f"cover{Path(cover).suffix.lower()}")
        return
    import matplotlib.pyplot as plt

    split = root.split
    scored = held_out(split)
    slices = scored if scored.stop > scored.start else split.slices("train")
    z = (slices.start + slices.stop - 1) // 2
    raw = root.raw
    sides = [min(COVER_SIDE, s) for s in raw.shape[1:]]
    begin = [(s - c) // 2 for s, c in zip(raw.shape[1:], sides, strict=True)]
    roi = Roi((z, *begin), (1, *sides))
    predictor = TilePredictor(network, normalization=normalization, bf16=False, channels_last=False)
    probability = predictor.region(raw, roi)[0]
    kind = "held-out" if slices is scored else "training"
    source = root.record.get("source", "the prepared store")
    caption = f"{source}, {kind} slice z = {z}"
    fig = cover_figure(np.asarray(raw[roi.to_slices()][0]), probability, caption=caption)
    fig.savefig(folder / "cover.png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def _describe(
    folder: Path,
    net: CellProbability,
    normalization: tuple[float, float],
    *,
    name: str,
    authors: Sequence[str],
    license: str,
    created: float,
    records: list[dict],
    test_origin: tuple[int, int, int],
    pixel_size: tuple[tuple[float, ...], str] | None,
) -> None:
    """Write ``bioimageio.yaml`` for the files in ``folder`` and validate the whole package. The training
    data's pixel size, where known, is the y and x axes' scale and unit (and our marker's, for predict)."""
    from bioimageio.spec import InvalidDescr, ValidationContext, load_description, save_bioimageio_yaml_only
    from bioimageio.spec.model import v0_5 as spec

    depth = net.members[0].config.depth
    low, high = normalization
    size = spec.ParameterizedSize(min=min_input(depth), step=2**depth)
    raw_id, out_id = spec.TensorId("raw"), spec.TensorId("cell_probability")

    scales = {"y": {}, "x": {}}
    if pixel_size is not None and pixel_size[1] in typing.get_args(spec.SpaceUnit):
        voxel_size, unit = pixel_size
        scales = {"y": {"scale": voxel_size[1], "unit": unit}, "x": {"scale": voxel_size[2], "unit": unit}}

    def same_as_input(axis: str) -> spec.SpaceOutputAxisWithHalo:
        reference = spec.SizeReference(tensor_id=raw_id, axis_id=spec.AxisId(axis))
        return spec.SpaceOutputAxisWithHalo(
            id=spec.AxisId(axis), size=reference, halo=halo(depth), **scales[axis]
        )

    members = [member.config.to_dict() for member in net.members]
    pytorch = spec.Version(torch.__version__.split("+")[0])
    config = {
        "format": FORMAT,
        "version": VERSION,
        "normalization": [low, high],
        "members": members,
        "checkpoints": [{"file": r["file"], "sha256": r["sha256"]} for r in records],
        "test_input_origin": list(test_origin),  # (z, y, x) in the prepared store; mirrored outside it
    }
    if pixel_size is not None:
        config["pixel_size"] = {"voxel_size": list(pixel_size[0]), "unit": pixel_size[1]}
    with ValidationContext(root=folder, file_name=RDF, perform_io_checks=True):
        description = spec.ModelDescr(
            name=name,
            description=(
                "U-Net (Ronneberger et al. 2015) for 2D electron microscopy: probability of cell interior "
                "versus membrane; trained and exported with unet-core."
            ),
            authors=[spec.Author(name=author) for author in authors],
            cite=[spec.CiteEntry(text=PAPER, doi=spec.Doi(PAPER_DOI))],
            license=spec.LicenseId(license),
            documentation=spec.FileDescr(source="README.md"),
            covers=[spec.FileDescr(source=p.name) for p in sorted(folder.glob("cover.*"))],
            tags=TAGS,
            timestamp=spec.Datetime(datetime.datetime.fromtimestamp(created, datetime.UTC)),
            inputs=[
                spec.InputTensorDescr(
                    id=raw_id,
                    description="raw intensities of 2D slices",
                    axes=[
                        spec.BatchAxis(),
                        spec.ChannelAxis(channel_names=[spec.Identifier("raw")]),
                        spec.SpaceInputAxis(id=spec.AxisId("y"), size=size, **scales["y"]),
                        spec.SpaceInputAxis(id=spec.AxisId("x"), size=size, **scales["x"]),
                    ],
                    test_tensor=spec.FileDescr(source="test_input.npy"),
                    sample_tensor=spec.FileDescr(source="sample_input.tif"),
                    data=spec.IntervalOrRatioDataDescr(type="float32"),
                    preprocessing=[
                        spec.ScaleLinearDescr(
                            kwargs=spec.ScaleLinearKwargs(gain=1.0 / (high - low), offset=-low / (high - low))
                        )
                    ],
                )
            ],
            outputs=[
                spec.OutputTensorDescr(
                    id=out_id,
                    description="probability of cell interior; zero in the halo",
                    axes=[
                        spec.BatchAxis(),
                        spec.ChannelAxis(channel_names=[spec.Identifier("cell_interior")]),
                        same_as_input("y"),
                        same_as_input("x"),
                    ],
                    test_tensor=spec.FileDescr(source="test_output.npy"),
                    sample_tensor=spec.FileDescr(source="sample_output.tif"),
                    data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
                )
            ],
            weights=spec.WeightsDescr(
                pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
                    source="weights.pt",
                    architecture=spec.ArchitectureFromFileDescr(
                        source="unet.py",
                        callable=spec.Identifier(CellProbability.__name__),
                        kwargs={"members": members},
                    ),
                    pytorch_version=pytorch,
                ),
                torchscript=spec.TorchscriptWeightsDescr(
                    source="weights_torchscript.pt", pytorch_version=pytorch, parent="pytorch_state_dict"
                ),
                onnx=spec.OnnxWeightsDescr(
                    source="weights.onnx", opset_version=ONNX_OPSET, parent="pytorch_state_dict"
                ),
            ),
            config=spec.Config(unet_core=config),
        )
    save_bioimageio_yaml_only(description, file=folder / RDF)
    reloaded = load_description(folder / RDF, perform_io_checks=True)
    if isinstance(reloaded, InvalidDescr):  # a bug of ours, not the user's
        raise RuntimeError(f"the exported description is invalid:\n{reloaded.validation_summary.format()}")


def _zip(folder: Path) -> bytes:
    """The folder's files as zip bytes, the description first; fixed dates, so equal files give equal
    bytes."""
    names = sorted((p.name for p in folder.iterdir()), key=lambda n: (n != RDF, n))
    buffer = _bytes_io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            archive.writestr(info, (folder / name).read_bytes())
    return buffer.getvalue()
