"""Training as the paper did it: weighted pixel-wise cross entropy, SGD with momentum 0.99, one large tile.

`Trainer` fits a network from built objects, as torch-em's DefaultTrainer does (without its reflection):
the model, optimiser, schedule, a stream of batches, a ``validate`` callable and a work folder. It knows
nothing of stores, prediction or figures; `unet_core.training.train` builds all of it from a prepared
store and a `TrainConfig`.

While training, the work folder holds ``last.pt`` (everything needed to resume: model, optimiser,
scheduler, RNG, iteration, best metric so far), ``best.pt`` (best validation metric) and
``train_log.csv``, all written atomically; `Trainer.publish` moves them out when training completes.
A re-run with the same configuration and data resumes from ``last.pt`` and reaches the same
weights as an uninterrupted run (CPU, same seed).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data.augment import AugmentConfig
from .folds import parse_fold
from .io import atomic_write_bytes, atomic_write_text
from .model import UNetConfig, output_size

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine")
#: ``segmented_rand_error``: the Rand error of the cells the default watershed makes of the validation
#: prediction (`segment.segment_slice`: seeds at P(cell) > 0.9, grown through P(cell) > 0.5), what
#: ``unet-core segment`` delivers; ``rand_error`` scores the probability map at its best threshold;
#: ``seg``: the Cell Tracking Challenge's SEG of the segmented cells (stores of instance labels).
SELECT_METRICS = ("rand_error", "segmented_rand_error", "pixel_error", "loss", "seg")
#: Metrics where higher is better; best.pt minimises the others.
MAXIMISED = ("seg",)
#: Options that do not change what a run computes: a resume may change them (the device as configured;
#: the device it resolves to is compared instead).
RESUMABLE_CHANGES = ("num_workers", "device")

#: One training step's tensors: raw tiles (N, 1, Y, X), targets (N, Y', X') and weights (N, Y', X').
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Every training option; stored in checkpoints so a resume can check it continues the same run.

    Attributes
    ----------
    iterations : int
        Optimiser steps to train for.
    tile_size : int
        Side of the square input tiles; must be a valid input size of the network (the paper's depth 4:
        572, output 388).
    batch_size : int
        Tiles per step (the paper: 1).
    optimizer : {"sgd", "adam", "adamw"}
        SGD with momentum (the paper), Adam or AdamW.
    lr : float
        Learning rate, > 0.
    momentum : float
        SGD momentum in [0, 1) (the paper: 0.99); Adam and AdamW ignore it.
    weight_decay : float
        L2 penalty of the optimiser, >= 0.
    schedule : {"constant", "cosine"}
        Learning rate over the run: constant, or a cosine decay to 0 at ``iterations``.
    grad_clip : float
        Largest gradient norm of a step; 0: no clipping.
    val_every : int
        Steps between validations; each logs a row of train_log.csv and writes a checkpoint (the last step
        is validated too).
    select_metric : {"rand_error", "segmented_rand_error", "pixel_error", "loss", "seg"}
        What picks best.pt: the validation Rand error of the probability map at its best threshold, that
        of the cells the default watershed makes of it (what ``unet-core segment`` delivers), the pixel
        error, or the training loss; on instance labels (cells), ``seg``: the highest Cell Tracking
        Challenge SEG of the validation frames' cells as ``unet-core segment`` makes them, or the loss.
    seed : int
        Seed of the initial weights, the tiles and their augmentation, >= 0.
    num_workers : int
        Loader processes; -1: up to 8 on a GPU (so it never waits), none on a CPU. Results do not depend
        on it.
    augment : bool
        Augment the training tiles with the ``aug_*`` strengths; off: no augmentation.
    device : str
        ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:<index>``.
    bf16 : bool
        bfloat16 autocast where the hardware computes it: CUDA GPUs and CPUs with AMX units or
        AVX512-BF16 (`model.native_bf16`); other CPUs compute in float32, where bfloat16 is emulated.
    channels_last : bool
        NHWC memory layout: faster convolutions on tensor cores and in oneDNN's CPU kernels.
    compile : bool
        torch.compile the network (worth it on GPUs for long runs).
    depth : int
        Poolings of the U-Net (the paper: 4).
    width : int
        Channels of the first level, doubled at each level (the paper: 64, up to 1024).
    dropout : float
        Dropout at the end of the contracting path, in [0, 1) (the paper: 0.5).
    norm : {"none", "batch", "group"}
        Normalisation after each convolution (the paper: none).
    ema : float
        Decay of the moving average of the weights that is validated and saved as best.pt, in [0, 1);
        0: none (the paper).
    aug_flip_rotate : bool
        Augmentation (`AugmentConfig`, used when ``augment`` is on): random 90-degree rotations and flips.
    aug_elastic_sigma : float
        Augmentation: std (pixels) of the elastic displacements on the coarse grid (the paper: 10).
    aug_elastic_grid : int
        Augmentation: points per axis of the coarse elastic grid (the paper: 3); >= 2, or 0 for none.
    aug_rotation_degrees : float
        Augmentation: rotation angle drawn uniformly in [-value, value], at most 180.
    aug_scale : float
        Augmentation: zoom drawn log-uniformly in [1 / (1 + value), 1 + value]; 0: none (the paper).
    aug_contrast : float
        Augmentation: contrast factor drawn uniformly in [1 - value, 1 + value] around the tile mean; < 1.
    aug_brightness : float
        Augmentation: offset drawn uniformly in [-value, value].
    aug_gamma : float
        Augmentation: gamma exponent drawn log-uniformly in [1 / (1 + value), 1 + value].
    aug_noise_std : float
        Augmentation: std of additive Gaussian noise.
    fold : str
        The slices to train and validate on (`unet_core.folds`): empty for the store's split, ``all``
        for every labelled slice without validation (a final model), ``k/K`` for cross-validation fold
        k of K of the labelled slices.
    """

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
    aug_scale: float = AugmentConfig.scale
    aug_contrast: float = AugmentConfig.contrast
    aug_brightness: float = AugmentConfig.brightness
    aug_gamma: float = AugmentConfig.gamma
    aug_noise_std: float = AugmentConfig.noise_std
    fold: str = ""

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
        parse_fold(self.fold)
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


def build_optimizer(cfg: TrainConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimiser of ``cfg``: SGD with momentum (the paper), Adam or AdamW.

    Parameters
    ----------
    cfg : TrainConfig
        Its ``optimizer``, ``lr``, ``momentum`` (SGD only) and ``weight_decay``.
    params : iterable of torch.nn.Parameter
        The parameters to optimise.

    Returns
    -------
    torch.optim.Optimizer
    """
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule of ``cfg``, stepped once per iteration.

    Parameters
    ----------
    cfg : TrainConfig
        Its ``schedule``: ``constant``, or ``cosine`` from ``lr`` to 0 over ``iterations``.
    optimizer : torch.optim.Optimizer
        The optimiser whose learning rate it sets.

    Returns
    -------
    torch.optim.lr_scheduler.LRScheduler
    """
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda it: 0.5 * (1 + math.cos(math.pi * min(it, cfg.iterations) / cfg.iterations)),
    )


@contextmanager
def flushed_denormals() -> Iterator[None]:
    """CPU float arithmetic with denormal numbers flushed to zero, restored on exit (the setting is global).

    With SGD momentum, values decaying towards zero turn denormal within some tens of steps, and CPU
    arithmetic on denormals is many times slower; flushing them costs nothing in accuracy. GPUs handle
    denormals at full speed either way."""
    was_on = bool(torch.tensor(1e-39) == 0)  # a denormal that reads as zero: flushing is on already
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)


class WeightAverage:
    """Exponential moving average of a network's weights, the network that is validated and saved as best.pt.

    The validation error of consecutive checkpoints of one run scatters widely: averaged weights change
    less from one checkpoint to the next, so the best one depends less on the step it happened to be taken
    at. The decay warms up as (1 + n) / (10 + n) so that early averages are not dominated by the random
    initialisation. Integer buffers (BatchNorm's step count) are copied."""

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


class Diverged(Exception):
    """Raised by a ``validate`` callable when the network's output is not finite; the `Trainer` reports
    it with the iteration and the fix."""


class Trainer:
    """Fits a network with built objects, checkpointing, validating and logging into a work folder.

    Parameters
    ----------
    model : torch.nn.Module
        The network on its device, whose parameters ``optimizer`` updates.
    optimizer : torch.optim.Optimizer
    scheduler : torch.optim.lr_scheduler.LRScheduler
        Stepped after every optimiser step.
    batches : callable
        ``batches(start)`` yields the `Batch` of every iteration from ``start`` on, on the model's device:
        a resumed run continues the same stream.
    validate : callable or None
        ``validate(model)`` returns the validation metrics (``val_<name>``: value) of the network that is
        saved, in eval mode, and raises `Diverged` when that network predicts NaN or inf. None: no
        validation data; ``best.pt`` is then the last checkpoint (a final model whose length
        cross-validation chose).
    work_dir : path
        The work folder: ``last.pt``, ``best.pt`` and ``train_log.csv`` are written there.
    iterations, val_every : int
        Steps in all, and steps between checkpoints (the last step makes one too).
    select_metric : str, optional
        What ``best.pt`` is chosen by: ``"loss"``, or a validation metric's name without ``val_`` (the
        loss while ``validate`` does not return it); the highest value for `MAXIMISED` metrics, else the
        lowest.
    grad_clip : float, optional
        Largest gradient norm; 0: no clipping.
    autocast : context manager, optional
        Entered around every forward pass (bf16 on a GPU, say); default: none.
    compile : bool, optional
        Run the forward pass through ``torch.compile(model)``; checkpoints keep the plain module's names.
    average : WeightAverage, optional
        A weight average of ``model``, updated every step, validated and saved as ``model_state``.
    state_extras : mapping, optional
        Stored in every checkpoint (the model's and training configuration, the data's hash, ...). A
        resume continues only a checkpoint with equal extras, the training configuration
        (``train_config``) compared up to `RESUMABLE_CHANGES`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        batches: Callable[[int], Iterable[Batch]],
        *,
        validate: Callable[[torch.nn.Module], dict[str, float]] | None,
        work_dir: str | Path,
        iterations: int,
        val_every: int,
        select_metric: str = "loss",
        grad_clip: float = 0.0,
        autocast: AbstractContextManager | None = None,
        compile: bool = False,
        average: WeightAverage | None = None,
        state_extras: Mapping[str, Any] | None = None,
    ) -> None:
        self.model, self.optimizer, self.scheduler, self.batches = model, optimizer, scheduler, batches
        self.network = torch.compile(model) if compile else model  # shares the parameters
        self.validate, self.work_dir = validate, Path(work_dir)
        self.iterations, self.val_every, self.select_metric = iterations, val_every, select_metric
        self.grad_clip, self.average = grad_clip, average
        self.autocast = nullcontext() if autocast is None else autocast
        self.state_extras = dict(state_extras or {})
        self.device = next(model.parameters()).device
        self.iteration, self.best, self.best_iteration, self.log_rows = 0, math.inf, 0, []

    @property
    def validated_model(self) -> torch.nn.Module:
        """The network that is validated and saved as ``model_state``: the weight average, if any."""
        return self.average.module if self.average else self.model

    # -- checkpoints -------------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything a resume needs, and the validated network's weights for prediction."""
        averaging = (
            {"train_model_state": self.model.state_dict(), "average_updates": self.average.updates}
            if self.average
            else {}
        )
        return {
            **self.state_extras,
            "model_state": self.validated_model.state_dict(),  # what predict loads
            **averaging,
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": self.scheduler.state_dict(),
            "iteration": self.iteration,
            "best_metric": self.best,
            "best_iteration": self.best_iteration,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "log_rows": self.log_rows,
        }

    def resume(self, path: str | Path) -> bool:
        """Restore everything from the checkpoint ``path`` if it continues this run (its state extras);
        returns whether it did."""
        path = Path(path)
        if not path.is_file():
            return False
        try:
            state = load_checkpoint(path, device=self.device)
        except CheckpointError as err:  # damaged or of another version: it must not block training
            log.warning("cannot resume (%s): starting afresh", err)
            return False
        if _run_identity(state, self.state_extras) != _run_identity(self.state_extras, self.state_extras):
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
    def fit(self, *, on_start: Callable[[Path], None] | None = None) -> None:
        """Train until ``iterations``, resuming from the work folder's ``last.pt`` when it belongs to this
        run. ``on_start(work_dir)`` runs before the first step, once the work folder holds this run's
        state (fresh or resumed): for what a run writes there once, such as a picture of its tiles."""
        # Not resuming: nothing of another run's work may be published with this one.
        if not self.resume(self.work_dir / "last.pt"):
            shutil.rmtree(self.work_dir, ignore_errors=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if on_start is not None:
            on_start(self.work_dir)
        self.model.train()
        with flushed_denormals():
            self._loop()

    def step(self, raw: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """One optimiser step; returns the loss on the device, so the host never waits for the device
        here and fetches the next batch while it computes (a sync per step would idle the device)."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            logits = self.network(raw)
        loss = weighted_cross_entropy(logits, target.long(), weight)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.average:
            self.average.update()
        return loss.detach()

    def _loop(self) -> None:
        bar = tqdm(total=self.iterations, initial=self.iteration, desc="train", mininterval=5.0)
        losses, tiles, tick = [], 0, time.perf_counter()
        for raw, target, weight in islice(self.batches(self.iteration), self.iterations - self.iteration):
            losses.append(self.step(raw, target, weight))
            tiles += len(raw)
            self.iteration += 1
            bar.update(1)
            if self.iteration % self.val_every == 0 or self.iteration == self.iterations:
                loss = float(torch.stack(losses).double().mean())  # waits for the device
                if not (math.isfinite(loss) and all(p.isfinite().all() for p in self.model.parameters())):
                    raise self._divergence(
                        f"mean loss {loss} since the last checkpoint, or weights not finite"
                    )
                self._checkpoint(loss, tiles / (time.perf_counter() - tick))
                bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
                losses, tiles, tick = [], 0, time.perf_counter()
        bar.close()

    def _divergence(self, what: str) -> ValueError:
        return ValueError(
            f"training diverged by iteration {self.iteration} ({what}); "
            "lower train.lr or set train.grad_clip > 0"
        )

    def _validation(self) -> dict[str, float]:
        if self.validate is None:
            return {}
        model = self.validated_model
        model.eval()
        try:
            metrics = self.validate(model)
        except Diverged as err:
            raise self._divergence(str(err)) from err
        self.model.train()  # the weight average stays in eval mode
        return metrics

    def _checkpoint(self, loss: float, tiles_per_s: float) -> None:
        row = {"iteration": self.iteration, "loss": loss, "lr": self.scheduler.get_last_lr()[0]}
        row |= self._validation()
        row["tiles_per_s"] = tiles_per_s
        validated = f"val_{self.select_metric}" in row  # else the loss (no validation data, or "loss")
        metric = row[f"val_{self.select_metric}"] if validated else loss
        better = metric > self.best if validated and self.select_metric in MAXIMISED else metric < self.best
        # The first checkpoint counts even with a NaN metric; a finite one replaces a NaN best.
        # Without validation data the length of training decides: the last checkpoint is the best one.
        improved = (
            self.validate is None
            or self.best_iteration == 0
            or better
            or (math.isnan(self.best) and not math.isnan(metric))
        )
        if improved:
            self.best, self.best_iteration = metric, self.iteration
        self.log_rows.append(row)
        log.info("iteration %d: %s", self.iteration, row)
        state = self.state()
        if improved:
            save_checkpoint(self.work_dir / "best.pt", state)
        atomic_write_text(self.work_dir / "train_log.csv", pd.DataFrame(self.log_rows).to_csv(index=False))
        save_checkpoint(self.work_dir / "last.pt", state)  # last: everything above is already on disk

    def publish(self, out_dir: str | Path, names: Sequence[str] = ()) -> None:
        """Copy ``train_log.csv``, the work folder's files ``names``, ``best.pt`` and ``last.pt`` into
        ``out_dir`` in this order, then remove the work folder."""
        # Outputs appear only when training is complete; the work folder (resume state that a workflow
        # manager's clean-up of failed outputs must not delete) goes once they are all in place.
        for name in ("train_log.csv", *names, "best.pt", "last.pt"):
            atomic_write_bytes(Path(out_dir) / name, (self.work_dir / name).read_bytes())
        # The resume point goes first: a kill while removing the rest must not leave a work folder that
        # resumes into a publish of files already gone. (A kill in this millisecond retrains from scratch.)
        (self.work_dir / "last.pt").unlink()
        shutil.rmtree(self.work_dir)


def _run_identity(state: Mapping[str, Any], extras: Mapping[str, Any]) -> dict[str, Any]:
    """What of ``state`` a resume must find unchanged: the values of the keys of ``extras``, the training
    configuration up to `RESUMABLE_CHANGES`."""
    identity = {key: state.get(key) for key in extras}
    if isinstance(identity.get("train_config"), dict):
        identity["train_config"] = _run_defining(identity["train_config"])
    return identity


def _run_defining(train_config: dict) -> dict:
    return {k: v for k, v in train_config.items() if k not in RESUMABLE_CHANGES}
