"""Training: patches from cached volumes, DiceLoss, Adam, sliding-window validation, checkpoints.

:class:`Trainer` is made of public steps (``loader``, ``train_step``, ``train_epoch``, ``validate``,
``end_epoch``, ``save``) and ``fit`` is a short loop over them. Randomness is a function of ``(train.seed, epoch,
rank)``: every epoch reseeds the sampler, the augmentation and PyTorch, so a run resumed from ``last.pt``
continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from segvol.config import Config, config_to_dict
from segvol.labels import TaskSpec
from segvol.data.records import Record
from segvol.errors import SegvolError
from segvol.inference.core import sliding_window, to_onehot
from segvol.networks import build_network, network_args
from segvol.checkpoint import save_checkpoint
from segvol.distributed import (DistInfo, all_reduce_sum, barrier, broadcast_flag, init_distributed, shard,
                                shutdown, weights_in_sync)
from segvol.utils import atomic_path

__all__ = ["Trainer", "TrainState", "FitResult", "fit", "build_state", "autocast_settings", "make_loss",
           "make_optimizer", "make_scheduler", "validate"]

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What :func:`fit` (and ``segvol.api.train``) returns.

    Attributes:
        run_dir: the run folder (config.yaml, split.json, metrics.csv, best.pt, last.pt).
        best_metric: the best mean validation Dice (NaN if never validated).
        best_epoch: the epoch that reached it (0 if never validated).
        history: one row per epoch trained in this call (epoch, loss, lr, validation scores, time_s).
        stopped_early: early stopping ended the run before ``train.epochs``.
        epochs: the epoch the run stands at now (counting epochs of earlier, resumed calls).
    """

    run_dir: Path
    best_metric: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    epochs: int = 0

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / "best.pt"


def make_loss(cfg: Config, spec: TaskSpec) -> torch.nn.Module:
    """``DiceLoss`` (or ``DiceCELoss``) matching the head: one-hot + softmax, or sigmoid regions."""
    from monai.losses import DiceCELoss, DiceLoss

    kind = {"dice": DiceLoss, "dicece": DiceCELoss}.get(cfg.train.loss)
    if kind is None:
        raise SegvolError(f"train.loss={cfg.train.loss!r}: expected dice or dicece")
    if spec.activation == "sigmoid":
        return kind(sigmoid=True)
    return kind(to_onehot_y=True, softmax=True)


def make_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    opt = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(cfg.train.optimizer)
    if opt is None:
        raise SegvolError(f"train.optimizer={cfg.train.optimizer!r}: expected adam or adamw")
    return opt(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


def make_scheduler(cfg: Config, optimizer: torch.optim.Optimizer) -> Any:
    kind = cfg.train.lr_schedule
    if kind == "none":
        return None
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.train.epochs, 1))
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
    raise SegvolError(f"train.lr_schedule={kind!r}: expected none, cosine or plateau")


def autocast_settings(cfg: Config, device: torch.device) -> tuple[bool, torch.dtype]:
    """``(enabled, dtype)`` for ``torch.autocast`` on ``device``: ``train.amp`` on any device (bf16 runs on CPUs
    too), in ``train.amp_dtype``."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.amp_dtype)
    if dtype is None:
        raise SegvolError(f"train.amp_dtype={cfg.train.amp_dtype!r}: expected bf16 or fp16")
    return bool(cfg.train.amp), dtype


@torch.no_grad()
def validate(model: torch.nn.Module, val_ds: Any, cfg: Config, spec: TaskSpec, device: torch.device,
             amp: bool = False, info: DistInfo | None = None, amp_dtype: torch.dtype = torch.bfloat16,
             preview: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Sliding-window Dice per class on the 1 mm grid over ``val_ds``, this rank's share of the validation cases
    (shares may differ in size, or be empty); the per-class sums and counts are reduced over ranks.

    Returns ``{"val_dice": mean over classes, "dice_<class>": mean over cases}``; cases whose reference and
    prediction are both empty for a class are left out of that class's mean. ``preview`` (a dict), when given,
    receives the first case's ``image``, ``label`` and ``pred`` as CPU label maps (foreground = any class).
    """
    from monai.metrics import DiceMetric

    info = info or DistInfo()
    model.eval()
    metric = DiceMetric(include_background=spec.activation == "sigmoid", reduction="none", ignore_empty=True)
    sums = torch.zeros(2, len(spec.class_names), dtype=torch.float64)  # (sum of Dice, count) per class
    for i in range(len(val_ds) if val_ds is not None else 0):
        item = val_ds[i]
        image = torch.as_tensor(item["image"]).unsqueeze(0).to(device)
        with torch.autocast(device.type, enabled=amp, dtype=amp_dtype):
            logits = sliding_window(model, image, cfg)
        pred = to_onehot(logits.float(), spec.activation)
        label = torch.as_tensor(item["label"]).unsqueeze(0).to(device)
        if spec.activation == "softmax":
            label = torch.zeros_like(pred).scatter_(1, label.long(), 1)
        scores = cast(torch.Tensor, metric(y_pred=pred, y=label))[0].double().cpu()  # DiceMetric: one tensor
        if preview is not None and not preview:
            fg = 1 if spec.activation == "softmax" else 0  # softmax: channel 0 is the background
            preview.update(image=image[0, 0].cpu(), label=label[0, fg:].amax(0).cpu(), pred=pred[0, fg:].amax(0).cpu())
        sums[0] += torch.nan_to_num(scores, nan=0.0)
        sums[1] += (~scores.isnan()).double()
    sums = all_reduce_sum(sums, info)
    per_class = (sums[0] / sums[1]).tolist()
    result = {f"dice_{name}": float(v) for name, v in zip(spec.class_names, per_class)}
    finite = [v for v in result.values() if not math.isnan(v)]
    result["val_dice"] = sum(finite) / len(finite) if finite else float("nan")
    return result


class _MetricsLog:
    """``metrics.csv``: one row per epoch (epoch, loss, val_dice, per-class Dice, lr, time_s)."""

    def __init__(self, path: Path, class_names: tuple[str, ...]) -> None:
        self.path = path
        self.columns = ["epoch", "loss", "val_dice", *[f"dice_{c}" for c in class_names], "lr", "time_s"]
        if not path.exists():
            with open(path, "w", newline="") as fh:
                csv.writer(fh).writerow(self.columns)

    def truncate_after(self, epoch: int) -> None:
        """Drop rows of epochs later than ``epoch`` (written before a crash, not in the checkpoint)."""
        with open(self.path, newline="") as fh:
            rows = list(csv.reader(fh))
        keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= epoch]
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as fh:  # a crash keeps the old file
            csv.writer(fh).writerows(keep)

    def append(self, row: dict[str, float]) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow(["" if row.get(c) is None else row.get(c) for c in self.columns])


@dataclass
class TrainState:
    """Everything that changes while training and must survive a restart."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    epoch: int = 0
    best_metric: float = -1.0
    best_epoch: int = 0
    bad_validations: int = 0
    finished: bool = False

    def bare_model(self) -> torch.nn.Module:
        """The network without its DistributedDataParallel and torch.compile wrappers."""
        model = getattr(self.model, "module", self.model)
        return cast(torch.nn.Module, getattr(model, "_orig_mod", model))

    def payload(self, base: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        return {**base, "state_dict": self.bare_model().state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else {},
                "scaler": self.scaler.state_dict() if self.scaler else {}, "epoch": self.epoch,
                "best_metric": self.best_metric, "best_epoch": self.best_epoch,
                "bad_validations": self.bad_validations, "finished": self.finished,
                "metrics": {k: float(v) for k, v in row.items()}}

    def restore(self, ckpt: dict[str, Any]) -> None:
        self.bare_model().load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler and ckpt.get("scheduler"):
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.best_metric = int(ckpt["epoch"]), float(ckpt["best_metric"])
        self.best_epoch, self.bad_validations = int(ckpt["best_epoch"]), int(ckpt.get("bad_validations", 0))
        self.finished = bool(ckpt.get("finished", False))


def build_state(cfg: Config, spec: TaskSpec, device: torch.device, info: DistInfo | None = None
                ) -> tuple[TrainState, dict[str, Any]]:
    """Network (DDP-wrapped under ``torchrun``), optimiser, scheduler and, for fp16 autocast, a gradient scaler
    for ``device``; plus the checkpoint's fixed part (config, network arguments, task)."""
    info = info or DistInfo()
    net_args = network_args(cfg, spec.in_channels, spec.out_channels)
    if device.type == "cuda":  # the one flag only CUDA has: cuDNN's kernel search for the fixed patch size
        torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark and not cfg.train.deterministic
    model = build_network(net_args).to(device)
    optimizer = make_optimizer(cfg, model)
    if cfg.train.compile:
        model = torch.compile(model)
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    amp_on, amp_dtype = autocast_settings(cfg, device)
    scaler = torch.amp.GradScaler(device.type) if amp_on and amp_dtype == torch.float16 else None
    state = TrainState(model, optimizer, make_scheduler(cfg, optimizer), scaler)
    task = {**spec.as_dict(), "dataset": spec.dataset or cfg.data.dataset}  # the adapter that reads its inputs
    return state, {"config": config_to_dict(cfg), "network": net_args, "task": task}


class _NoBar:
    disable = True

    def update(self, n: int = 1) -> None: ...

    def set_postfix(self, **kwargs: Any) -> None: ...

    def write(self, msg: str) -> None: ...

    def close(self) -> None: ...


class Trainer:
    """Training as public steps, in the manner of nnU-Net's ``run_training``: :meth:`fit` is a short loop over
    :meth:`train_epoch` (:meth:`loader` + :meth:`train_step`), :meth:`validate`, :meth:`end_epoch` and
    :meth:`save`. A variant overrides one step in a subclass; ``segvol bench`` times the same steps.

    Randomness is a function of ``(train.seed, epoch, rank)``: every epoch reseeds the sampler, the augmentation
    and PyTorch, so a run resumed from ``last.pt`` continues exactly as the uninterrupted run would have, and each
    DDP rank draws its own augmentation.
    """

    def __init__(self, cfg: Config, spec: TaskSpec, device: torch.device, *, info: DistInfo | None = None,
                 run_dir: Path | None = None, logger: Any = None) -> None:
        self.cfg, self.spec, self.device, self.info = cfg, spec, device, info or DistInfo()
        self.run_dir, self.logger = run_dir, logger
        self.state, self.base = build_state(cfg, spec, device, self.info)
        self.loss_fn = make_loss(cfg, spec)
        self.amp, self.amp_dtype = autocast_settings(cfg, device)
        self.train_ds: Any = None
        self.val_ds: Any = None
        self.steps_per_epoch = cfg.train.steps_per_epoch
        self.has_validation = False

    # ------------------------------------------------------------------------------------------------- data
    def attach_data(self, train: Sequence[Record], val: Sequence[Record] = ()) -> None:
        """Cache this rank's share of the training and validation cases (N ranks hold one copy between them)."""
        from segvol.training.data import Augmented, cached_volumes

        cfg, info = self.cfg, self.info
        mine = shard(train, info)
        if not mine:
            raise SegvolError(f"{len(train)} training case(s) cannot be shared among {info.world_size} ranks")
        where = self.device if cfg.train.gpu_augment else None
        if info.enabled:
            log.info("rank %d: caching %d of %d training volume(s)", info.rank, len(mine), len(train))
        self.train_ds = Augmented(cached_volumes(mine, cfg, self.spec, where), cfg, where)
        self.steps_per_epoch = cfg.train.steps_per_epoch or math.ceil(len(train) / info.world_size)
        val_cases = list(val)[: cfg.train.max_val_cases or len(val)]
        self.has_validation = bool(val_cases)
        val_mine = shard(val_cases, info)
        self.val_ds = cached_volumes(val_mine, cfg, self.spec) if val_mine else None

    def loader(self, epoch: int) -> Any:
        """This rank's shuffled, augmented batches for ``epoch``: the same for the same ``(seed, epoch, rank)``."""
        from monai.data import DataLoader, ThreadDataLoader

        from segvol.training.data import augment_seed

        seed = augment_seed(self.cfg.train.seed, epoch, self.info.rank)
        self.train_ds.reseed(seed)
        generator = torch.Generator().manual_seed(seed)
        if self.cfg.train.gpu_augment:  # the random part runs on the training device, in this process
            return ThreadDataLoader(self.train_ds, batch_size=1, num_workers=0, shuffle=True, generator=generator)
        return DataLoader(self.train_ds, batch_size=1, num_workers=self.cfg.data.num_workers, shuffle=True,
                          generator=generator)

    # ------------------------------------------------------------------------------------------------ steps
    def train_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One optimiser step on ``batch`` (``image``, ``label``) under autocast; returns the detached loss."""
        state = self.state
        image = batch["image"].to(self.device, non_blocking=True)
        label = batch["label"].to(self.device, non_blocking=True)
        state.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.amp, dtype=self.amp_dtype):
            loss = self.loss_fn(state.model(image), label)
        if state.scaler is not None:
            state.scaler.scale(loss).backward()
            state.scaler.step(state.optimizer)
            state.scaler.update()
        else:
            loss.backward()
            state.optimizer.step()
        return loss.detach()

    def train_epoch(self, epoch: int, steps: int | None = None, bar: Any = None) -> float:
        """``steps`` (default: the epoch's) train steps over :meth:`loader`; returns the mean loss (over ranks)."""
        from segvol.training.data import augment_seed

        steps, bar = steps or self.steps_per_epoch, bar or _NoBar()
        torch.manual_seed(augment_seed(self.cfg.train.seed, epoch, self.info.rank))  # dropout and the like
        self.state.model.train()
        total, count, loader = torch.zeros((), device=self.device), 0, self.loader(epoch)
        while count < steps:
            for batch in loader:
                if count == 0:
                    log.debug("rank %d epoch %d: first batch digest %.6f", self.info.rank, epoch,
                              float(batch["image"].double().sum()))
                total, count = total + self.train_step(batch), count + 1
                bar.update(1)
                if count % 10 == 0 or count == steps:
                    bar.set_postfix(loss=f"{float(total) / count:.4f}")
                if count >= steps:
                    break
        return float(all_reduce_sum(total / max(count, 1), self.info)) / self.info.world_size  # mean over ranks

    def validate(self) -> dict[str, float]:
        """Validation Dice of the current weights over every rank's share; rank 0 logs a preview."""
        show = self.info.is_main and hasattr(self.logger, "log_preview")
        shown: dict[str, torch.Tensor] | None = {} if show else None
        scores = validate(self.state.model, self.val_ds, self.cfg, self.spec, self.device, self.amp, self.info,
                          self.amp_dtype, shown)
        if shown:
            self.logger.log_preview(self.state.epoch, shown["image"], shown["label"], shown["pred"])
        return scores

    def validation_due(self) -> bool:
        epoch = self.state.epoch
        return self.has_validation and (epoch % self.cfg.train.val_every == 0 or epoch == self.cfg.train.epochs)

    def end_epoch(self, row: dict[str, Any], time_up: bool = False) -> bool:
        """Best metric and patience, schedulers, and whether training is over (rank 0's decision for all ranks;
        ``time_up``: ``train.max_minutes`` has passed). Returns True when this epoch is the best so far."""
        state, cfg = self.state, self.cfg
        score = row.get("val_dice", float("nan"))
        is_best = False
        if "val_dice" in row:
            if isinstance(state.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and not math.isnan(score):
                state.scheduler.step(score)
            if not math.isnan(score) and score > state.best_metric:
                state.best_metric, state.best_epoch, state.bad_validations, is_best = score, state.epoch, 0, True
            else:
                state.bad_validations += 1
        if isinstance(state.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            state.scheduler.step()
        stop = (cfg.train.patience > 0 and state.bad_validations >= cfg.train.patience) or time_up
        state.finished = broadcast_flag(stop or state.epoch >= cfg.train.epochs, self.info)
        return is_best

    def save(self, row: dict[str, Any], is_best: bool, metrics_log: _MetricsLog | None = None) -> None:
        """Rank 0 only: the epoch's metrics row and TensorBoard scalars, checkpoints (best before last, atomic)."""
        if not self.info.is_main or self.run_dir is None:
            return
        if metrics_log is not None:
            metrics_log.append(row)
        if self.logger is not None:
            self.logger.log_epoch(self.state.epoch, row)
        if is_best:
            save_checkpoint(self.run_dir / "best.pt", self.state.payload(self.base, row))
        save_checkpoint(self.run_dir / "last.pt", self.state.payload(self.base, row))

    # -------------------------------------------------------------------------------------------------- loop
    def fit(self, resume: dict[str, Any] | None = None, progress: bool = True) -> FitResult:
        """Train until ``train.epochs`` (or early stopping), validating every ``val_every`` epochs.

        Args:
            resume: a ``last.pt`` checkpoint to continue from (model, optimiser, scheduler, scaler, epoch, best).
        """
        from tqdm.auto import tqdm

        state, cfg, run_dir = self.state, self.cfg, self.run_dir or Path(".")
        if resume is not None:
            state.restore(resume)
        metrics_log = _MetricsLog(run_dir / "metrics.csv", self.spec.class_names) if self.info.is_main else None
        if metrics_log and resume is not None:
            metrics_log.truncate_after(state.epoch)
        result = FitResult(run_dir, state.best_metric, state.best_epoch)
        bar = tqdm(total=(cfg.train.epochs - state.epoch) * self.steps_per_epoch, desc="train", unit="step",
                   dynamic_ncols=True, disable=not (progress and self.info.is_main))
        began = time.perf_counter()
        while state.epoch < cfg.train.epochs and not state.finished:
            state.epoch += 1
            start = time.perf_counter()
            row: dict[str, Any] = {"epoch": state.epoch, "loss": round(self.train_epoch(state.epoch, bar=bar), 6),
                                   "lr": state.optimizer.param_groups[0]["lr"]}
            budget = cfg.train.max_minutes * 60.0
            time_up = broadcast_flag(budget > 0 and time.perf_counter() - began >= budget, self.info)
            if self.validation_due() or (time_up and self.has_validation):
                row.update({k: round(v, 6) for k, v in self.validate().items()})
            is_best = self.end_epoch(row, time_up)
            row["time_s"] = round(time.perf_counter() - start, 3)
            result.history.append(row)
            self.save(row, is_best, metrics_log)
            self._log_epoch(row, bar)
            result.stopped_early = state.finished and state.epoch < cfg.train.epochs
        bar.close()
        result.best_metric, result.best_epoch, result.epochs = state.best_metric, state.best_epoch, state.epoch
        if self.info.is_main and not (run_dir / "best.pt").exists():  # never validated: the last weights stand in
            save_checkpoint(run_dir / "best.pt", state.payload(self.base, {}))
        if self.info.enabled:
            in_sync = weights_in_sync(state.model, self.info)
            (log.info if in_sync else log.error)("weights %s across %d ranks", "identical" if in_sync else "DIFFER",
                                                 self.info.world_size)
        return result

    def _log_epoch(self, row: dict[str, Any], bar: Any) -> None:
        if not self.info.is_main:
            return
        state, cfg = self.state, self.cfg
        msg = f"epoch {state.epoch}/{cfg.train.epochs}: loss {row['loss']:.4f}"
        if "val_dice" in row:
            msg += f", val Dice {row['val_dice']:.4f} (best {state.best_metric:.4f} @ {state.best_epoch})"
        if state.finished and state.epoch < cfg.train.epochs:
            patience = cfg.train.patience > 0 and state.bad_validations >= cfg.train.patience
            msg += (f"; early stop: no improvement in {state.bad_validations} validation(s)" if patience else
                    f"; stop: the time budget of {cfg.train.max_minutes:g} min is spent")
        bar.write(msg) if not bar.disable else log.info(msg)


def fit(cfg: Config, spec: TaskSpec, splits: dict[str, list[Record]], run_dir: Path, device: torch.device,
        progress: bool = True, resume: dict[str, Any] | None = None, logger: Any = None) -> FitResult:
    """Join the process group (under ``torchrun``), seed, build a :class:`Trainer` on ``splits`` and run it.

    Args:
        resume: a ``last.pt`` checkpoint to continue from (model, optimiser, scheduler, scaler, epoch, best).
        logger: optional object with ``log_epoch(epoch, row)`` (e.g. TensorBoard), called on rank 0.
    """
    from segvol.utils import seed_everything

    info, device = init_distributed(device)
    try:
        seed_everything(cfg.train.seed, deterministic=cfg.train.deterministic)
        trainer = Trainer(cfg, spec, device, info=info, run_dir=run_dir, logger=logger)
        trainer.attach_data(splits["train"], splits.get("val", []))
        result = trainer.fit(resume, progress=progress)
        barrier(info)  # every rank has finished its last collective before any tears the group down
        return result
    finally:
        shutdown(info)
