"""The training loop: patches from cached volumes, DiceLoss, Adam, sliding-window validation, checkpoints.

Randomness is a function of ``(train.seed, epoch)``: every epoch reseeds the sampler, the augmentation and
PyTorch, so a run resumed from ``last.pt`` continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from segvol.config import Config, config_to_dict
from segvol.data import TaskSpec
from segvol.data.records import Record
from segvol.errors import SegvolError
from segvol.inference.core import sliding_window, to_onehot
from segvol.networks import build_network, network_args
from segvol.training.checkpoint import save_checkpoint
from segvol.training.distributed import (DistInfo, all_reduce_sum, broadcast_flag, init_distributed, shutdown,
                                         weights_in_sync)
from segvol.utils import atomic_path

__all__ = ["fit", "make_loss", "make_optimizer", "make_scheduler", "validate", "FitResult"]

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    run_dir: Path
    best_metric: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


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


def _autocast(cfg: Config, device: torch.device) -> tuple[bool, torch.dtype]:
    enabled = cfg.train.amp and device.type == "cuda"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.amp_dtype)
    if dtype is None:
        raise SegvolError(f"train.amp_dtype={cfg.train.amp_dtype!r}: expected bf16 or fp16")
    return enabled, dtype


@torch.no_grad()
def validate(model: torch.nn.Module, val_ds: Any, cfg: Config, spec: TaskSpec, device: torch.device,
             amp: bool = False, info: DistInfo | None = None, amp_dtype: torch.dtype = torch.bfloat16,
             preview: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Sliding-window Dice per class on the 1 mm grid; cases are sharded over ranks and the sums reduced.

    Returns ``{"val_dice": mean over classes, "dice_<class>": mean over cases}``; cases whose reference and
    prediction are both empty for a class are left out of that class's mean. ``preview`` (a dict), when given,
    receives the first case's ``image``, ``label`` and ``pred`` as CPU label maps (foreground = any class).
    """
    from monai.metrics import DiceMetric

    info = info or DistInfo()
    model.eval()
    metric = DiceMetric(include_background=spec.activation == "sigmoid", reduction="none", ignore_empty=True)
    sums = torch.zeros(2, len(spec.class_names), dtype=torch.float64)  # (sum of Dice, count) per class
    limit = min(cfg.train.max_val_cases or len(val_ds), len(val_ds))
    for i in range(info.rank, limit, info.world_size):
        item = val_ds[i]
        image = torch.as_tensor(item["image"]).unsqueeze(0).to(device)
        with torch.autocast(device.type, enabled=amp, dtype=amp_dtype):
            logits = sliding_window(model, image, cfg)
        pred = to_onehot(logits.float(), spec.activation)
        label = torch.as_tensor(item["label"]).unsqueeze(0).to(device)
        if spec.activation == "softmax":
            label = torch.zeros_like(pred).scatter_(1, label.long(), 1)
        scores = metric(y_pred=pred, y=label)[0].double().cpu()
        if preview is not None and not preview:
            fg = 1 if spec.activation == "softmax" else 0  # softmax: channel 0 is the background
            preview.update(image=image[0, 0].cpu(), label=label[0, fg:].amax(0).cpu(), pred=pred[0, fg:].amax(0).cpu())
        sums[0] += torch.nan_to_num(scores, nan=0.0)
        sums[1] += (~scores.isnan()).double()
    sums = all_reduce_sum(sums, info).cpu()
    per_class = (sums[0] / sums[1]).tolist()
    scores = {f"dice_{name}": float(v) for name, v in zip(spec.class_names, per_class)}
    finite = [v for v in scores.values() if not math.isnan(v)]
    scores["val_dice"] = sum(finite) / len(finite) if finite else float("nan")
    return scores


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
class _State:
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

    def payload(self, base: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        model = self.model.module if hasattr(self.model, "module") else self.model
        model = getattr(model, "_orig_mod", model)
        return {**base, "state_dict": model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else {},
                "scaler": self.scaler.state_dict() if self.scaler else {}, "epoch": self.epoch,
                "best_metric": self.best_metric, "best_epoch": self.best_epoch,
                "bad_validations": self.bad_validations, "finished": self.finished,
                "metrics": {k: float(v) for k, v in row.items()}}

    def restore(self, ckpt: dict[str, Any]) -> None:
        model = self.model.module if hasattr(self.model, "module") else self.model
        getattr(model, "_orig_mod", model).load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler and ckpt.get("scheduler"):
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.best_metric = int(ckpt["epoch"]), float(ckpt["best_metric"])
        self.best_epoch, self.bad_validations = int(ckpt["best_epoch"]), int(ckpt.get("bad_validations", 0))
        self.finished = bool(ckpt.get("finished", False))


def _train_epoch(state: _State, loader: Any, loss_fn: Any, device: torch.device, steps: int,
                 autocast: tuple[bool, torch.dtype], bar: Any) -> float:
    state.model.train()
    total, count = torch.zeros((), device=device), 0
    while count < steps:
        for batch in loader:
            image = batch["image"].to(device, non_blocking=True)
            label = batch["label"].to(device, non_blocking=True)
            state.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=autocast[0], dtype=autocast[1]):
                loss = loss_fn(state.model(image), label)
            if state.scaler is not None:
                state.scaler.scale(loss).backward()
                state.scaler.step(state.optimizer)
                state.scaler.update()
            else:
                loss.backward()
                state.optimizer.step()
            total, count = total + loss.detach(), count + 1
            bar.update(1)
            if count % 10 == 0 or count == steps:
                bar.set_postfix(loss=f"{float(total) / count:.4f}")
            if count >= steps:
                break
    return float(total) / max(count, 1)


def _loader(dataset: Any, info: DistInfo, device: torch.device, cfg: Config, epoch: int) -> Any:
    """A fresh, epoch-seeded loader: same order and augmentation for the same (seed, epoch)."""
    from monai.data import DataLoader, ThreadDataLoader

    seed = cfg.train.seed * 1_000_003 + epoch
    dataset.reseed(seed)
    generator = torch.Generator().manual_seed(seed)
    if info.enabled:
        sampler = torch.utils.data.DistributedSampler(dataset, info.world_size, info.rank, shuffle=True,
                                                      seed=cfg.train.seed)
        sampler.set_epoch(epoch)
        kwargs: dict[str, Any] = {"sampler": sampler}
    else:
        kwargs = {"shuffle": True, "generator": generator}
    if device.type == "cuda" and cfg.train.gpu_augment:
        return ThreadDataLoader(dataset, batch_size=1, num_workers=0, **kwargs)
    return DataLoader(dataset, batch_size=1, num_workers=cfg.data.num_workers, **kwargs)


def _build(cfg: Config, spec: TaskSpec, device: torch.device, info: DistInfo) -> tuple[_State, dict[str, Any]]:
    net_args = network_args(cfg, spec.in_channels, spec.out_channels)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark
    model = build_network(net_args).to(device)
    optimizer = make_optimizer(cfg, model)
    if cfg.train.compile:
        model = torch.compile(model)
    if info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    amp_on, amp_dtype = _autocast(cfg, device)
    scaler = torch.amp.GradScaler("cuda") if amp_on and amp_dtype == torch.float16 else None
    state = _State(model, optimizer, make_scheduler(cfg, optimizer), scaler)
    return state, {"config": config_to_dict(cfg), "network": net_args, "task": spec.as_dict()}


def _after_validation(state: _State, cfg: Config, row: dict[str, Any]) -> bool:
    """Track the best metric and patience; step a plateau scheduler. Returns True when this epoch is best."""
    score = row.get("val_dice", float("nan"))
    if isinstance(state.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and not math.isnan(score):
        state.scheduler.step(score)
    if not math.isnan(score) and score > state.best_metric:
        state.best_metric, state.best_epoch, state.bad_validations = score, state.epoch, 0
        return True
    state.bad_validations += 1
    return False


def fit(cfg: Config, spec: TaskSpec, splits: dict[str, list[Record]], run_dir: Path, device: torch.device,
        progress: bool = True, resume: dict[str, Any] | None = None, logger: Any = None) -> FitResult:
    """Train until ``cfg.train.epochs`` (or early stopping), validating every ``val_every`` epochs.

    Args:
        resume: a ``last.pt`` checkpoint to continue from (model, optimiser, scheduler, scaler, epoch, best).
        logger: optional object with ``log_epoch(epoch, row)`` (e.g. TensorBoard), called on rank 0.
    """
    from tqdm.auto import tqdm

    from segvol.training.data import Augmented, cached_volumes
    from segvol.utils import seed_everything

    info, device = init_distributed(device)
    seed_everything(cfg.train.seed)
    state, base = _build(cfg, spec, device, info)
    if resume is not None:
        state.restore(resume)
    gpu_aug = device if cfg.train.gpu_augment else None
    train_ds = Augmented(cached_volumes(splits["train"], cfg, spec, gpu_aug), cfg, gpu_aug)
    val_ds = cached_volumes(splits["val"], cfg, spec) if splits["val"] else None
    loss_fn, autocast = make_loss(cfg, spec), _autocast(cfg, device)
    steps = cfg.train.steps_per_epoch or math.ceil(len(train_ds) / info.world_size)
    metrics_log = _MetricsLog(run_dir / "metrics.csv", spec.class_names) if info.is_main else None
    if metrics_log and resume is not None:
        metrics_log.truncate_after(state.epoch)
    result = FitResult(run_dir, state.best_metric, state.best_epoch)
    bar = tqdm(total=(cfg.train.epochs - state.epoch) * steps, desc="train", unit="step", dynamic_ncols=True,
               disable=not (progress and info.is_main))
    while state.epoch < cfg.train.epochs and not state.finished:
        state.epoch += 1
        torch.manual_seed(cfg.train.seed * 1_000_003 + state.epoch)
        start = time.perf_counter()
        loader = _loader(train_ds, info, device, cfg, state.epoch)
        loss = _train_epoch(state, loader, loss_fn, device, steps, autocast, bar)
        row: dict[str, Any] = {"epoch": state.epoch, "loss": round(loss, 6),
                               "lr": state.optimizer.param_groups[0]["lr"]}
        is_best = False
        if val_ds is not None and (state.epoch % cfg.train.val_every == 0 or state.epoch == cfg.train.epochs):
            shown: dict[str, torch.Tensor] | None = {} if info.is_main and hasattr(logger, "log_preview") else None
            scores = validate(state.model, val_ds, cfg, spec, device, autocast[0], info, autocast[1], shown)
            row.update({k: round(v, 6) for k, v in scores.items()})
            if shown:
                logger.log_preview(state.epoch, shown["image"], shown["label"], shown["pred"])
            is_best = _after_validation(state, cfg, row)
        if isinstance(state.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            state.scheduler.step()
        stop = cfg.train.patience > 0 and state.bad_validations >= cfg.train.patience
        state.finished = broadcast_flag(stop or state.epoch >= cfg.train.epochs, info)
        row["time_s"] = round(time.perf_counter() - start, 3)
        result.history.append(row)
        if info.is_main:
            _record_epoch(state, base, row, is_best, run_dir, metrics_log, logger, bar, cfg)
        result.stopped_early = stop
    bar.close()
    result.best_metric, result.best_epoch = state.best_metric, state.best_epoch
    if info.is_main and not (run_dir / "best.pt").exists():  # never validated: the last weights stand in
        save_checkpoint(run_dir / "best.pt", state.payload(base, {}))
    if info.enabled:
        in_sync = weights_in_sync(state.model, info)
        (log.info if in_sync else log.error)("weights %s across %d ranks", "identical" if in_sync else "DIFFER",
                                             info.world_size)
    shutdown(info)
    return result


def _record_epoch(state: _State, base: dict[str, Any], row: dict[str, Any], is_best: bool, run_dir: Path,
                  metrics_log: _MetricsLog, logger: Any, bar: Any, cfg: Config) -> None:
    """Rank 0 only: metrics row, checkpoints (best before last, both atomic), log line."""
    metrics_log.append(row)
    if logger is not None:
        logger.log_epoch(state.epoch, row)
    if is_best:
        save_checkpoint(run_dir / "best.pt", state.payload(base, row))
    save_checkpoint(run_dir / "last.pt", state.payload(base, row))
    msg = f"epoch {state.epoch}/{cfg.train.epochs}: loss {row['loss']:.4f}"
    if "val_dice" in row:
        msg += f", val Dice {row['val_dice']:.4f} (best {state.best_metric:.4f} @ {state.best_epoch})"
    if state.finished and state.epoch < cfg.train.epochs:
        msg += f"; early stop: no improvement in {state.bad_validations} validation(s)"
    bar.write(msg) if not bar.disable else log.info(msg)
