"""Training as the paper did it: weighted pixel-wise cross entropy, SGD with momentum 0.99, one large tile.

While training, ``<out>/.work/`` holds ``last.pt`` (everything needed to resume: model, optimiser,
scheduler, RNG, iteration, best metric so far), ``best.pt`` (best validation metric) and
``train_log.csv``, all written atomically; they are published to ``<out>/`` when training completes.
A re-run with the same configuration and data resumes from ``.work/last.pt`` and reaches the same
weights as an uninterrupted run (CPU, same seed).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import metrics
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data.augment import AugmentConfig, save_augmentation_panel
from .dataset import TileDataset, TrainingStore, intensity_range
from .inference import TilePredictor, predict_array, resolve_device
from .io import atomic_write_bytes, atomic_write_text
from .model import UNet, UNetConfig, memory_format, output_size
from .parallel import usable_cpus
from .segment import cell_map, segment_slice

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adamw")
#: Tiles per loader item: one transfer between processes serves several small-batch steps (a transfer costs
#: the training process ~2 ms; with 8 tiles per item an H200's one-tile loop went from 0.75 to 0.84 of
#: its bare step rate).
FETCH_TILES = 8
SCHEDULES = ("constant", "cosine")
#: ``segmented_rand_error``: the Rand error of the cells the default watershed makes of the validation
#: prediction (`segment.segment_slice`: seeds at P(cell) > 0.9, grown through P(cell) > 0.5), what
#: ``unet-core segment`` delivers; ``rand_error`` scores the probability map at its best threshold.
SELECT_METRICS = ("rand_error", "segmented_rand_error", "pixel_error", "loss")
#: Options that do not change what a run computes: a resume may change them (the device as configured;
#: the device it resolves to is compared instead).
RESUMABLE_CHANGES = ("num_workers", "device")


@dataclass(frozen=True)
class TrainConfig:
    """Every training option; stored in checkpoints so a resume can check it continues the same run."""

    iterations: int = 2000
    tile_size: int = 572
    batch_size: int = 1
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.99
    weight_decay: float = 0.0
    schedule: str = "cosine"
    grad_clip: float = 1.0
    val_every: int = 200
    select_metric: str = "rand_error"
    seed: int = 0
    num_workers: int = -1  # loader processes; -1: up to 8 on a GPU (so it never waits), none on a CPU
    augment: bool = True
    device: str = "auto"
    bf16: bool = True
    channels_last: bool = True
    compile: bool = False
    depth: int = 4
    width: int = 64
    dropout: float = 0.5
    norm: str = "none"
    # Decay of the moving average of the weights that is validated and saved as best.pt; 0: none (the paper).
    ema: float = 0.0
    # Augmentation strengths (`AugmentConfig`), used when ``augment`` is on.
    aug_flip_rotate: bool = AugmentConfig.flip_rotate
    aug_elastic_sigma: float = AugmentConfig.elastic_sigma
    aug_elastic_grid: int = AugmentConfig.elastic_grid
    aug_rotation_degrees: float = AugmentConfig.rotation_degrees
    aug_contrast: float = AugmentConfig.contrast
    aug_brightness: float = AugmentConfig.brightness
    aug_gamma: float = AugmentConfig.gamma
    aug_noise_std: float = AugmentConfig.noise_std

    @property
    def model(self) -> UNetConfig:
        return UNetConfig(depth=self.depth, width=self.width, dropout=self.dropout, norm=self.norm)

    @property
    def augmentation(self) -> AugmentConfig | None:
        if not self.augment:
            return None
        return AugmentConfig(
            **{f.name: getattr(self, "aug_" + f.name) for f in dataclasses.fields(AugmentConfig)}
        )

    def __post_init__(self) -> None:
        if self.num_workers < -1:
            raise ValueError(f"train.num_workers must be >= 0, or -1 for automatic, got {self.num_workers}")
        for name in ("iterations", "batch_size", "val_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name, allowed in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("select_metric", SELECT_METRICS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"train.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name, valid, wanted in (
            ("lr", self.lr > 0, "> 0"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("grad_clip", self.grad_clip >= 0, ">= 0 (0: no clipping)"),
            ("seed", self.seed >= 0, ">= 0"),
        ):
            if not (valid and math.isfinite(getattr(self, name))):  # NaN compares False: refused too
                raise ValueError(f"train.{name} must be a finite number {wanted}, got {getattr(self, name)}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"train.ema must be in [0, 1) (0: no weight average), got {self.ema}")
        output_size(self.tile_size, self.model.depth)  # raises with the nearest valid size
        self.augmentation  # noqa: B018 - raises on an invalid strength

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The paper's energy: softmax cross entropy weighted per pixel by w(x), averaged over pixels."""
    return (F.cross_entropy(logits.float(), target, reduction="none") * weight).mean()


def _optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _schedule(cfg: TrainConfig, optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda it: 0.5 * (1 + math.cos(math.pi * min(it, cfg.iterations) / cfg.iterations)),
    )


@contextmanager
def flushed_denormals() -> Iterator[None]:
    """CPU float arithmetic with denormal numbers flushed to zero, restored on exit (the setting is global).

    With SGD momentum, values decaying towards zero turned denormal within some tens of steps and made each
    CPU step up to 30x slower (depth 3, width 16, 188 tiles: 44 -> 1013 ms); flushing them costs nothing in
    accuracy. GPUs handle denormals at full speed either way."""
    was_on = bool(torch.tensor(1e-39) == 0)  # a denormal that reads as zero: flushing is on already
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)


class WeightAverage:
    """Exponential moving average of a network's weights, the network that is validated and saved as best.pt.

    Along an ISBI run on an H200 the validation Rand error of consecutive checkpoints jumped between 0.10
    and 0.18: averaged weights change less from one checkpoint to the next, so the best one depends less on
    the step it happened to be taken at. The decay warms up as (1 + n) / (10 + n) so that early averages
    are not dominated by the random initialisation. Integer buffers (BatchNorm's step count) are copied."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0
        # The source tensors are updated in place by the optimiser and by load_state_dict: pair them once.
        pairs = list(zip(_tensors(self.module), _tensors(model), strict=True))
        self._averaged = [a for a, _ in pairs if a.is_floating_point()]
        self._current = [c for a, c in pairs if a.is_floating_point()]
        self._copied = [(a, c) for a, c in pairs if not a.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._averaged, self._current, 1 - decay)
        for averaged, current in self._copied:
            averaged.copy_(current)


def _tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]


class Trainer:
    """Fits a U-Net on a prepared store, validating on its ``val`` slices."""

    def __init__(self, data_path: str | os.PathLike, out_dir: str | os.PathLike, cfg: TrainConfig) -> None:
        self.cfg, self.out_dir = cfg, Path(out_dir)
        self.work_dir = self.out_dir / ".work"
        self.device = resolve_device(cfg.device)
        store = TrainingStore.open(data_path)
        split = store.split
        raw, labels, weights = store.raw, store.cells, store.weights
        train = split.slices("train")
        if train.stop <= train.start:
            raise ValueError(f"{data_path}: the training split {split.train} is empty; fix split.train")
        train_raw, train_labels, train_weights = (np.asarray(a[train]) for a in (raw, labels, weights))
        self.data_sha256 = _sha256(train_raw, train_labels, train_weights)
        self.normalization = intensity_range(train_raw)
        self.dataset = TileDataset(
            train_raw,
            train_labels,
            train_weights,
            input_size=cfg.tile_size,
            depth=cfg.model.depth,
            normalization=self.normalization,
            seed=cfg.seed,
            augment_config=cfg.augmentation,
            length=cfg.iterations * cfg.batch_size,
        )
        val = split.slices("val")
        self.val_raw, self.val_labels = np.asarray(raw[val]), np.asarray(labels[val])
        torch.manual_seed(cfg.seed)
        self.memory_format = memory_format(self.device, cfg.channels_last)
        self.model = UNet(cfg.model).to(self.device, memory_format=self.memory_format)
        self.network = torch.compile(self.model) if cfg.compile else self.model  # shares the parameters
        self.optimizer = _optimizer(cfg, self.model.parameters())
        self.scheduler = _schedule(cfg, self.optimizer)
        self.average = WeightAverage(self.model, cfg.ema) if cfg.ema > 0 else None
        use_bf16 = cfg.bf16 and self.device.type == "cuda"
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()
        self.iteration, self.best, self.best_iteration, self.log_rows = 0, math.inf, 0, []

    @property
    def loader_workers(self) -> int:
        """Loader processes: as configured, or for -1 up to 8 on a GPU (augmenting 572 tiles for one GPU
        keeps about 8 cores busy) leaving two CPUs to the loop, and none on a CPU, where workers would
        take cores from the model. Tiles depend only on their index, so the count never changes results."""
        if self.cfg.num_workers >= 0:
            return self.cfg.num_workers
        if self.device.type == "cpu":
            return 0
        return max(0, min(8, usable_cpus() - 2))

    @property
    def validated_model(self) -> UNet:
        """The network that is validated and saved as ``model_state``: the weight average, if any."""
        return self.average.module if self.average else self.model

    # -- checkpoints -------------------------------------------------------------------------------
    def state(self) -> dict:
        averaging = (
            {"train_model_state": self.model.state_dict(), "average_updates": self.average.updates}
            if self.average
            else {}
        )
        return {
            "model_config": self.cfg.model.to_dict(),
            "train_config": self.cfg.to_dict(),
            "device_type": self.device.type,
            "data_sha256": self.data_sha256,
            "model_state": self.validated_model.state_dict(),  # what predict loads
            **averaging,
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": self.scheduler.state_dict(),
            "normalization": list(self.normalization),
            "iteration": self.iteration,
            "best_metric": self.best,
            "best_iteration": self.best_iteration,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "log_rows": self.log_rows,
        }

    def resume(self, path: Path) -> bool:
        """Restore everything from ``path`` if it continues this configuration (up to
        `RESUMABLE_CHANGES`) on the same data."""
        if not path.is_file():
            return False
        try:
            state = load_checkpoint(path, device=self.device)
        except CheckpointError as err:  # damaged or of another version: it must not block training
            log.warning("cannot resume (%s): starting afresh", err)
            return False
        if (
            _run_defining(state["train_config"]) != _run_defining(self.cfg.to_dict())
            or state.get("device_type") != self.device.type
            or state["data_sha256"] != self.data_sha256
        ):
            log.warning("%s was trained with another configuration or data: starting afresh", path)
            return False
        self.model.load_state_dict(state.get("train_model_state", state["model_state"]))
        if self.average:
            self.average.module.load_state_dict(state["model_state"])
            self.average.updates = state["average_updates"]
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.scheduler.load_state_dict(state["scheduler_state"])
        self.iteration, self.best = state["iteration"], state["best_metric"]
        self.best_iteration, self.log_rows = state["best_iteration"], list(state["log_rows"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        log.info("resumed from %s at iteration %d", path, self.iteration)
        return True

    # -- loop --------------------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        model = self.validated_model
        model.eval()
        predictor = TilePredictor(
            model,
            normalization=self.normalization,
            device=self.device,
            bf16=self.cfg.bf16,
            channels_last=self.cfg.channels_last,
        )
        prob = predict_array(predictor, self.val_raw)
        if not np.isfinite(prob).all():
            raise self._divergence("the network predicts NaN or inf on the validation slices")
        self.model.train()  # the weight average stays in eval mode
        pixel, _ = metrics.pixel_error(prob, self.val_labels)
        rand, _ = metrics.rand_error(prob, self.val_labels)
        cells = cell_map(np.stack([segment_slice(p, method="watershed") for p in prob]))
        segmented, _ = metrics.rand_error(cells.astype(np.float32), self.val_labels, thresholds=(0.5,))
        return {
            "val_pixel_error": float(pixel),
            "val_rand_error": float(rand),
            "val_segmented_rand_error": float(segmented),
        }

    def _divergence(self, what: str) -> ValueError:
        return ValueError(
            f"training diverged by iteration {self.iteration} ({what}); "
            "lower train.lr or set train.grad_clip > 0"
        )

    def step(self, raw: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """One optimiser step; returns the loss on the device, so the host never waits for the device
        here and fetches the next batch while it computes (a sync per step idled a GPU ~20 %)."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            logits = self.network(raw.to(self.device, non_blocking=True, memory_format=self.memory_format))
        loss = weighted_cross_entropy(
            logits,
            target.to(self.device, non_blocking=True).long(),
            weight.to(self.device, non_blocking=True),
        )
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.average:
            self.average.update()
        return loss.detach()

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The training batches from the current iteration on, already on their way to the device.

        Loader items hold ``FETCH_TILES`` tiles (whole batches of them), split here into steps: the same
        batches in the same order as one item per batch, for a fraction of the per-item cost."""
        batch = self.cfg.batch_size
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.dataset, range(self.iteration * batch, len(self.dataset))),
            batch_size=batch * max(1, FETCH_TILES // batch),
            shuffle=False,
            num_workers=self.loader_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.loader_workers > 0,
            # An own generator keeps the loader from drawing on the global RNG that dropout uses,
            # so a resumed run continues the same dropout stream.
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )
        for group in loader:
            raw, target, weight = (tensor.to(self.device, non_blocking=True) for tensor in group)
            yield from zip(raw.split(batch), target.split(batch), weight.split(batch), strict=True)

    def fit(self) -> None:
        """Train until ``cfg.iterations``, resuming from ``last.pt`` when it belongs to this run."""
        # Not resuming: nothing of another run's work may be published with this one.
        if not self.resume(self.work_dir / "last.pt"):
            shutil.rmtree(self.work_dir, ignore_errors=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not (self.work_dir / "augmentation.png").exists():
            self._save_augmentation_examples()
        self.model.train()
        with flushed_denormals():
            self._loop()
        self._publish()

    def _loop(self) -> None:
        bar = tqdm(total=self.cfg.iterations, initial=self.iteration, desc="train", mininterval=5.0)
        losses, tick = [], time.perf_counter()
        for raw, target, weight in self.batches():
            losses.append(self.step(raw, target, weight))
            self.iteration += 1
            bar.update(1)
            if self.iteration % self.cfg.val_every == 0 or self.iteration == self.cfg.iterations:
                loss = float(torch.stack(losses).double().mean())  # waits for the device
                if not (math.isfinite(loss) and all(p.isfinite().all() for p in self.model.parameters())):
                    raise self._divergence(
                        f"mean loss {loss} since the last checkpoint, or weights not finite"
                    )
                tiles_per_s = len(losses) * self.cfg.batch_size / (time.perf_counter() - tick)
                self._checkpoint(loss, tiles_per_s)
                bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
                losses, tick = [], time.perf_counter()
        bar.close()

    def _save_augmentation_examples(self, n: int = 4) -> None:
        """The first training tiles as the loop sees them (items depend only on their index)."""
        crop = slice(self.dataset.halo, self.dataset.halo + self.dataset.output)
        examples = []
        for k in range(min(n, len(self.dataset))):
            raw, labels, weights = self.dataset[k]
            examples.append((raw[0].numpy()[crop, crop], labels.numpy(), weights.numpy()))
        save_augmentation_panel(self.work_dir / "augmentation.png", examples)

    def _publish(self) -> None:
        # Outputs appear only when training is complete; the work folder (resume state that a workflow
        # manager's clean-up of failed outputs must not delete) goes once they are all in place.
        from .report import save_figure, training_figure

        figure = training_figure(pd.DataFrame(self.log_rows), select_metric=self.cfg.select_metric)
        save_figure(figure, self.work_dir, "training_curves")
        for name in ("train_log.csv", "augmentation.png", "training_curves.png", "best.pt", "last.pt"):
            atomic_write_bytes(self.out_dir / name, (self.work_dir / name).read_bytes())
        # The resume point goes first: a kill while removing the rest must not leave a work folder that
        # resumes into a publish of files already gone. (A kill in this millisecond retrains from scratch.)
        (self.work_dir / "last.pt").unlink()
        shutil.rmtree(self.work_dir)

    def _checkpoint(self, loss: float, tiles_per_s: float) -> None:
        row = {"iteration": self.iteration, "loss": loss, "lr": self.scheduler.get_last_lr()[0]}
        row |= self.validate() if len(self.val_raw) else {}
        row["tiles_per_s"] = tiles_per_s
        metric = loss if self.cfg.select_metric == "loss" else row.get(f"val_{self.cfg.select_metric}", loss)
        improved = self.best_iteration == 0 or metric < self.best  # NaN-safe: the first one counts
        if improved:
            self.best, self.best_iteration = metric, self.iteration
        self.log_rows.append(row)
        log.info("iteration %d: %s", self.iteration, row)
        state = self.state()
        if improved:
            save_checkpoint(self.work_dir / "best.pt", state)
        atomic_write_text(self.work_dir / "train_log.csv", pd.DataFrame(self.log_rows).to_csv(index=False))
        save_checkpoint(self.work_dir / "last.pt", state)  # last: everything above is already on disk


def _run_defining(train_config: dict) -> dict:
    return {k: v for k, v in train_config.items() if k not in RESUMABLE_CHANGES}


def _sha256(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def train(data_path: str | os.PathLike, out_dir: str | os.PathLike, cfg: TrainConfig) -> Path:
    """Train on a prepared store; returns the path of ``best.pt``."""
    Trainer(data_path, out_dir, cfg).fit()
    return Path(out_dir) / "best.pt"
