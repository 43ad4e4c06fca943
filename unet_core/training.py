"""The train stage: a U-Net fitted to a prepared store, validated on its ``val`` slices, published with
its figures.

`build_trainer` makes what the `Trainer` takes from the store and a `TrainConfig`: the training tiles and
their loader (`TileBatches`), the network, optimiser, schedule, autocast and weight average, and a
``validate`` that predicts the validation slices (`validate_model`, `unet_core.inference`) and scores the
probability map and the cells the default watershed makes of it (`validation_metrics`); on a store of
instance labels, the SEG of the cells ``unet-core segment`` makes of it
(`evaluate_cells.cell_validation_metrics`). `train`
runs it: the augmentation panel when the work folder is ready, the fit, and the training curves
(`unet_core.report`) published with the checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import io, metrics
from .data.augment import save_augmentation_panel
from .dataset import TileDataset, TrainingStore, intensity_range
from .evaluate_cells import cell_validation_metrics
from .folds import fold_slices, read_at
from .inference import TilePredictor, predict_array, resolve_device
from .model import UNet, bf16_autocast, memory_format
from .parallel import usable_cpus
from .report import save_figure, training_figure
from .segment import SegmentOptions, cell_map, segment_slice
from .train import (
    Batch,
    Diverged,
    TrainConfig,
    Trainer,
    WeightAverage,
    build_optimizer,
    build_scheduler,
)

#: Tiles per loader item: one transfer between processes serves several small-batch steps, since each
#: transfer costs the training process a fixed time whatever its size.
FETCH_TILES = 8


def train(
    data_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: TrainConfig,
    *,
    segment: SegmentOptions | None = None,
) -> Path:
    """Train on a prepared store; returns the path of ``best.pt``.

    Parameters
    ----------
    data_path : str or path-like
        The store ``unet-core prepare`` wrote.
    out_dir : str or path-like
        Gets ``best.pt``, ``last.pt``, ``train_log.csv``, ``augmentation.png`` and
        ``training_curves.png`` when training completes; ``out_dir/.work`` holds the resumable state
        until then.
    cfg : TrainConfig
        Every training option.
    segment : SegmentOptions, optional
        How validation cuts the map into cells on a store of instance labels, as ``unet-core segment``
        will (default: `SegmentOptions`); unused on stores of membrane labels.

    Returns
    -------
    Path
        ``out_dir/best.pt``.

    Raises
    ------
    ValueError
        A path that is not a prepared store or an empty training split (naming the path), or a run that
        diverged (naming the iteration and the fix).
    """
    trainer = build_trainer(data_path, out_dir, cfg, segment=segment)
    dataset = trainer.batches.dataset
    trainer.fit(on_start=lambda work_dir: _save_augmentation_examples(dataset, work_dir / "augmentation.png"))
    figure = training_figure(pd.DataFrame(trainer.log_rows), select_metric=cfg.select_metric)
    save_figure(figure, trainer.work_dir, "training_curves")
    trainer.publish(out_dir, ("augmentation.png", "training_curves.png"))
    return Path(out_dir) / "best.pt"


def build_trainer(
    data_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: TrainConfig,
    *,
    segment: SegmentOptions | None = None,
) -> Trainer:
    """The `Trainer` of ``cfg`` on the prepared store ``data_path``, working in ``out_dir/.work``.

    Parameters
    ----------
    data_path : str or path-like
        The store ``unet-core prepare`` wrote; the slices ``cfg.fold`` names of it give the tiles and
        are validated on (none: no validation); by default its ``train`` and ``val`` slices.
    out_dir : str or path-like
        The folder whose ``.work`` is the Trainer's work folder.
    cfg : TrainConfig
        Every training option.
    segment : SegmentOptions, optional
        As in `train`.

    Returns
    -------
    Trainer
        Its ``batches`` is a `TileBatches`, whose ``dataset`` holds the training tiles.

    Raises
    ------
    ValueError
        An empty training split, or a ``select_metric`` that does not score the store's kind of labels.
    """
    device = resolve_device(cfg.device)
    store = TrainingStore.open(data_path)
    _check_select_metric(cfg.select_metric, store.labels_kind, data_path)
    split = store.split
    train_zs, val_zs = fold_slices(split.train, split.val, cfg.fold)
    if len(train_zs) == 0:
        raise ValueError(f"{data_path}: the training split {split.train} is empty; fix split.train")
    arrays = (store.raw, store.cells, store.weights)
    train_raw, train_labels, train_weights = (read_at(a, train_zs) for a in arrays)
    normalization = intensity_range(train_raw)
    dataset = TileDataset(
        train_raw,
        train_labels,
        train_weights,
        input_size=cfg.tile_size,
        depth=cfg.model.depth,
        normalization=normalization,
        seed=cfg.seed,
        augment_config=cfg.augmentation,
        length=cfg.iterations * cfg.batch_size,
    )
    val_raw, val_labels = read_at(store.raw, val_zs), read_at(store.cells, val_zs)
    score, extras = functools.partial(validation_metrics, labels=val_labels), {}
    if store.labels_kind == "instances":  # cells: SEG of what `unet-core segment` will deliver
        segment = segment or SegmentOptions()
        partial = set(store.partial_slices)
        complete = np.array([z not in partial for z in val_zs], bool)
        score = functools.partial(
            cell_validation_metrics,
            labels=read_at(store.instances, val_zs),
            complete=complete,
            segment=segment,
        )
        extras = {"segment_options": dataclasses.asdict(segment)}  # they choose best.pt
    torch.manual_seed(cfg.seed)  # the network's initialisation, then the dropout stream
    layout = memory_format(cfg.channels_last)
    model = UNet(cfg.model).to(device, memory_format=layout)
    optimizer = build_optimizer(cfg, model.parameters())
    validate = functools.partial(
        validate_model,
        raw=val_raw,
        score=score,
        normalization=normalization,
        device=device,
        bf16=cfg.bf16,
        channels_last=cfg.channels_last,
    )
    return Trainer(
        model,
        optimizer,
        build_scheduler(cfg, optimizer),
        TileBatches(
            dataset,
            batch_size=cfg.batch_size,
            workers=loader_workers(cfg.num_workers, device),
            device=device,
            memory_format=layout,
            seed=cfg.seed,
        ),
        validate=validate if len(val_raw) else None,
        work_dir=Path(out_dir) / ".work",
        iterations=cfg.iterations,
        val_every=cfg.val_every,
        select_metric=cfg.select_metric,
        grad_clip=cfg.grad_clip,
        autocast=bf16_autocast(device, cfg.bf16),
        compile=cfg.compile,
        average=WeightAverage(model, cfg.ema) if cfg.ema > 0 else None,
        state_extras={
            "model_config": cfg.model.to_dict(),
            "train_config": cfg.to_dict(),
            "device_type": device.type,
            "data_sha256": _sha256(train_raw, train_labels, train_weights),
            "normalization": list(normalization),
            **_pixel_size(data_path),
            **extras,
        },
    )


def _pixel_size(data_path: str | os.PathLike) -> dict[str, Any]:
    """The training data's voxel size and unit, which predict resamples other volumes to
    (`unet_core.pixel_size`); none when the store records no unit."""
    raw = io.open_volume(data_path)
    return {"voxel_size": list(raw.voxel_size), "unit": raw.unit} if raw.unit else {}


#: What can choose best.pt on each kind of labels: the ISBI errors score membranes, SEG scores cells.
SELECTABLE = {
    "binary": ("rand_error", "segmented_rand_error", "pixel_error", "loss"),
    "instances": ("seg", "loss"),
}


def _check_select_metric(metric: str, labels_kind: str, path: str | os.PathLike) -> None:
    if metric not in SELECTABLE[labels_kind]:
        raise ValueError(
            f"{path}: train.select_metric {metric!r} does not score {labels_kind} labels; choose one of "
            f"{SELECTABLE[labels_kind]} (membranes: the ISBI errors; cells: seg)"
        )


def loader_workers(num_workers: int, device: torch.device) -> int:
    """Loader processes: ``num_workers``, or for -1 up to 8 on a GPU (augmenting 572 tiles for one GPU
    keeps about 8 cores busy) leaving two CPUs to the loop, and none on a CPU, where workers would take
    cores from the model. Tiles depend only on their index, so the count never changes results."""
    if num_workers >= 0:
        return num_workers
    if device.type == "cpu":
        return 0
    return max(0, min(8, usable_cpus() - 2))


class TileBatches:
    """The training batches of a `TileDataset`, from any iteration on, on their way to the device.

    Loader items hold ``FETCH_TILES`` tiles (whole batches of them), split here into steps: the same
    batches in the same order as one item per batch, for a fraction of the per-item cost.

    Parameters
    ----------
    dataset : TileDataset
        The training tiles; item ``k`` is the ``k % batch_size``-th tile of iteration ``k // batch_size``.
    batch_size, workers : int
        Tiles per step, and loader processes (`loader_workers`).
    device : torch.device
    memory_format : torch.memory_format
        Of the raw tiles, as the network wants them (`model.memory_format`).
    seed : int
        Seeds the loader's own generator.
    """

    def __init__(
        self,
        dataset: TileDataset,
        *,
        batch_size: int,
        workers: int,
        device: torch.device,
        memory_format: torch.memory_format,
        seed: int,
    ) -> None:
        self.dataset, self.batch_size, self.workers, self.seed = dataset, batch_size, workers, seed
        self.device, self.memory_format = device, memory_format

    def __call__(self, start: int) -> Iterator[Batch]:
        """The batches of iterations ``start``, ``start + 1``, ..."""
        batch = self.batch_size
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.dataset, range(start * batch, len(self.dataset))),
            batch_size=batch * max(1, FETCH_TILES // batch),
            shuffle=False,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.workers > 0,
            # An own generator keeps the loader from drawing on the global RNG that dropout uses,
            # so a resumed run continues the same dropout stream.
            generator=torch.Generator().manual_seed(self.seed),
        )
        for group in loader:
            raw, target, weight = (tensor.to(self.device, non_blocking=True) for tensor in group)
            for tiles, *rest in zip(raw.split(batch), target.split(batch), weight.split(batch), strict=True):
                yield (tiles.to(memory_format=self.memory_format), *rest)


def validate_model(
    model: torch.nn.Module,
    *,
    raw: np.ndarray,
    score: Callable[[np.ndarray], dict[str, float]],
    normalization: tuple[float, float],
    device: torch.device,
    bf16: bool,
    channels_last: bool,
) -> dict[str, float]:
    """The `Trainer`'s ``validate``: ``score`` of the network's probabilities of the validation images.

    Parameters
    ----------
    model : torch.nn.Module
        The network to score, in eval mode.
    raw : ndarray, shape (Z, Y, X)
        The validation images.
    score : callable
        ``score(prob)`` -> ``val_<name>``: value (`validation_metrics` or
        `evaluate_cells.cell_validation_metrics` with their labels bound).
    normalization : (float, float)
        The intensities mapped to 0 and 1 at the network input.
    device : torch.device
    bf16, channels_last : bool
        As in training (`TrainConfig`).

    Raises
    ------
    Diverged
        If the network predicts NaN or inf.
    """
    predictor = TilePredictor(
        model, normalization=normalization, device=device, bf16=bf16, channels_last=channels_last
    )
    prob = predict_array(predictor, raw)
    if not np.isfinite(prob).all():
        raise Diverged("the network predicts NaN or inf on the validation images")
    return score(prob)


def validation_metrics(prob: np.ndarray, *, labels: np.ndarray) -> dict[str, float]:
    """The ISBI errors of a validation probability map (Z, Y, X) against binary labels (0 = membrane):
    ``val_pixel_error`` and ``val_rand_error`` of the map at their best thresholds, and
    ``val_segmented_rand_error`` of the cells the default watershed makes of it (`segment.segment_slice`).
    """
    pixel, _ = metrics.pixel_error(prob, labels)
    rand, _ = metrics.rand_error(prob, labels)
    cells = cell_map(np.stack([segment_slice(p, method="watershed") for p in prob]))
    segmented, _ = metrics.rand_error(cells.astype(np.float32), labels, thresholds=(0.5,))
    return {
        "val_pixel_error": float(pixel),
        "val_rand_error": float(rand),
        "val_segmented_rand_error": float(segmented),
    }


def _save_augmentation_examples(dataset: TileDataset, path: Path, n: int = 4) -> None:
    """The first training tiles as the loop sees them (items depend only on their index); once per run,
    so a resumed run keeps its picture."""
    if path.exists():
        return
    crop = slice(dataset.halo, dataset.halo + dataset.output)
    examples = []
    for k in range(min(n, len(dataset))):
        raw, labels, weights = dataset[k]
        examples.append((raw[0].numpy()[crop, crop], labels.numpy(), weights.numpy()))
    save_augmentation_panel(path, examples)


def _sha256(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
