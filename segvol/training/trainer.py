"""The training loop: patches from cached volumes, DiceLoss, Adam, sliding-window validation, checkpoints."""

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
from segvol.inference.core import sliding_window, to_onehot
from segvol.networks import build_network, network_args
from segvol.training.checkpoint import save_checkpoint
from segvol.transforms import build_transforms

__all__ = ["fit", "make_loss", "make_optimizer", "validate", "FitResult"]

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    run_dir: Path
    best_metric: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


def make_loss(cfg: Config, spec: TaskSpec) -> torch.nn.Module:
    """``DiceLoss`` (or ``DiceCELoss``) matching the head: one-hot + softmax, or sigmoid regions."""
    from monai.losses import DiceCELoss, DiceLoss

    kind = {"dice": DiceLoss, "dicece": DiceCELoss}.get(cfg.train.loss)
    if kind is None:
        from segvol.errors import SegvolError

        raise SegvolError(f"train.loss={cfg.train.loss!r}: expected dice or dicece")
    if spec.activation == "sigmoid":
        return kind(sigmoid=True)
    return kind(to_onehot_y=True, softmax=True)


def make_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    opt = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(cfg.train.optimizer)
    if opt is None:
        from segvol.errors import SegvolError

        raise SegvolError(f"train.optimizer={cfg.train.optimizer!r}: expected adam or adamw")
    return opt(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


def _datasets(cfg: Config, spec: TaskSpec, train: list[Record], val: list[Record]) -> tuple[Any, Any]:
    from monai.data import CacheDataset, DataLoader

    label_tf = spec.label_transforms
    train_ds = CacheDataset(train, build_transforms(cfg, True, label_transforms=label_tf),
                            cache_rate=cfg.data.cache_rate, num_workers=None, progress=False)
    val_ds = CacheDataset(val, build_transforms(cfg, False, label_transforms=label_tf),
                          cache_rate=cfg.data.cache_rate, num_workers=None, progress=False)
    loader = DataLoader(train_ds, batch_size=1, shuffle=True, num_workers=cfg.data.num_workers,
                        persistent_workers=cfg.data.num_workers > 0)
    return loader, val_ds


@torch.no_grad()
def validate(model: torch.nn.Module, val_ds: Any, cfg: Config, spec: TaskSpec, device: torch.device,
             amp: bool = False) -> dict[str, float]:
    """Sliding-window validation; returns ``{"val_dice": mean, "dice_<class>": ...}`` on the 1 mm grid."""
    from monai.metrics import DiceMetric

    model.eval()
    metric = DiceMetric(include_background=spec.activation == "sigmoid", reduction="mean_batch")
    limit = cfg.train.max_val_cases or len(val_ds)
    for i in range(min(limit, len(val_ds))):
        item = val_ds[i]
        image = item["image"].unsqueeze(0).to(device)
        with torch.autocast(device.type, enabled=amp):
            logits = sliding_window(model, image, cfg)
        pred = to_onehot(logits.float(), spec.activation)
        label = item["label"].unsqueeze(0).to(device)
        if spec.activation == "softmax":
            label = torch.zeros_like(pred).scatter_(1, label.long(), 1)
        metric(y_pred=pred, y=label)
    per_class = metric.aggregate().cpu().tolist()
    metric.reset()
    per_class = per_class if isinstance(per_class, list) else [per_class]
    scores = {f"dice_{name}": float(v) for name, v in zip(spec.class_names, per_class)}
    finite = [v for v in scores.values() if not math.isnan(v)]
    scores["val_dice"] = sum(finite) / len(finite) if finite else float("nan")
    return scores


def _train_epoch(model, loader, loss_fn, optimizer, device, steps: int, amp: bool, bar) -> float:  # noqa: ANN001
    model.train()
    total, count = 0.0, 0
    while count < steps:
        for batch in loader:
            image, label = batch["image"].to(device), batch["label"].to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=amp):
                loss = loss_fn(model(image), label)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item(), count + 1
            bar.update(1)
            bar.set_postfix(loss=f"{total / count:.4f}")
            if count >= steps:
                break
    return total / max(count, 1)


class _MetricsLog:
    """``metrics.csv``: one row per epoch (epoch, loss, val_dice, per-class Dice, lr, time_s)."""

    def __init__(self, path: Path, class_names: tuple[str, ...]) -> None:
        self.path = path
        self.columns = ["epoch", "loss", "val_dice", *[f"dice_{c}" for c in class_names], "lr", "time_s"]
        if not path.exists():
            with open(path, "w", newline="") as fh:
                csv.writer(fh).writerow(self.columns)

    def append(self, row: dict[str, float]) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow(["" if row.get(c) is None else row.get(c) for c in self.columns])


def fit(cfg: Config, spec: TaskSpec, splits: dict[str, list[Record]], run_dir: Path, device: torch.device,
        progress: bool = True) -> FitResult:
    """Train ``cfg.train.epochs`` epochs, validating every ``val_every``; write checkpoints and metrics."""
    from tqdm.auto import tqdm

    from segvol.utils import seed_everything

    seed_everything(cfg.train.seed)
    net_args = network_args(cfg, spec.in_channels, spec.out_channels)
    model = build_network(net_args).to(device)
    loss_fn, optimizer = make_loss(cfg, spec), make_optimizer(cfg, model)
    loader, val_ds = _datasets(cfg, spec, splits["train"], splits["val"])
    amp = cfg.train.amp and device.type == "cuda"
    steps = cfg.train.steps_per_epoch or len(loader)
    metrics_log = _MetricsLog(run_dir / "metrics.csv", spec.class_names)
    base = {"config": config_to_dict(cfg), "network": net_args, "task": spec.as_dict()}
    result = FitResult(run_dir=run_dir, best_metric=-1.0, best_epoch=0)
    bar = tqdm(total=cfg.train.epochs * steps, desc="train", unit="step", disable=not progress, dynamic_ncols=True)
    for epoch in range(1, cfg.train.epochs + 1):
        start = time.perf_counter()
        loss = _train_epoch(model, loader, loss_fn, optimizer, device, steps, amp, bar)
        row: dict[str, Any] = {"epoch": epoch, "loss": round(loss, 6), "lr": optimizer.param_groups[0]["lr"]}
        if val_ds is not None and len(val_ds) and (epoch % cfg.train.val_every == 0 or epoch == cfg.train.epochs):
            row.update({k: round(v, 6) for k, v in validate(model, val_ds, cfg, spec, device, amp).items()})
        row["time_s"] = round(time.perf_counter() - start, 3)
        metrics_log.append(row)
        result.history.append(row)
        state = {**base, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                 "metrics": {k: float(v) for k, v in row.items()}}
        if "val_dice" in row and not math.isnan(row["val_dice"]) and row["val_dice"] > result.best_metric:
            result.best_metric, result.best_epoch = row["val_dice"], epoch
            save_checkpoint(run_dir / "best.pt", {**state, "best_metric": result.best_metric, "best_epoch": epoch})
        save_checkpoint(run_dir / "last.pt", {**state, "best_metric": result.best_metric,
                                              "best_epoch": result.best_epoch})
        msg = f"epoch {epoch}/{cfg.train.epochs}: loss {loss:.4f}"
        if "val_dice" in row:
            msg += f", val Dice {row['val_dice']:.4f} (best {result.best_metric:.4f} @ {result.best_epoch})"
        bar.write(msg) if progress else log.info(msg)
    bar.close()
    if result.best_epoch == 0:  # no validation happened: the last weights are the best we have
        save_checkpoint(run_dir / "best.pt", {**state, "best_metric": float("nan"), "best_epoch": epoch})
    return result
