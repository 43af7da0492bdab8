"""TensorBoard event files written during training, next to ``metrics.csv`` (``tensorboard --logdir models``):
every numeric column of an epoch's row as a scalar (``train/loss``, ``train/lr``, ``train/time_s``, ``val/val_dice``,
``val/dice_<class>``) and, per validation, a preview image of the first validation case."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TrainLogger", "preview_image"]

log = logging.getLogger(__name__)


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def _squeeze(x: Any) -> np.ndarray:
    """(B, C, H, W, D) / (C, H, W, D) / (H, W, D) -> (H, W, D): first batch item, first channel."""
    arr = _to_numpy(x)
    while arr.ndim > 3:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"expected a 3D volume (optionally with batch and channel axes), got shape {arr.shape}")
    return arr


def preview_image(image: Any, label: Any, pred: Any) -> np.ndarray:
    """(3, H, W) uint8 RGB: the axial slice with the most reference foreground, reference green, prediction red,
    overlap yellow (the colours of :mod:`segvol.viz.overlays`).

    Args:
        image: the scan, (H, W, D) with optional leading batch/channel axes (first channel shown).
        label: reference mask or label map, same grid; anything non-zero is foreground.
        pred: predicted mask or label map, same grid.
    """
    from segvol.viz.overlays import best_slices, grey_window, overlay_rgb

    img, ref, prd = _squeeze(image), _squeeze(label) != 0, _squeeze(pred) != 0
    k = best_slices(ref, prd)[2]
    rgb = overlay_rgb(img[:, :, k].T[::-1], ref[:, :, k].T[::-1], prd[:, :, k].T[::-1], grey_window(img))
    return rgb.transpose(2, 0, 1)


class TrainLogger:
    """Writes every numeric value of an epoch's metrics row (loss, val Dice per class, lr, time) as a scalar."""

    def __init__(self, run_dir: str | Path, purge_step: int | None = None) -> None:
        """``purge_step``: on resume, the first epoch to run again; TensorBoard drops what an interrupted run had
        written from that epoch on, so no epoch appears twice."""
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=purge_step)

    def log_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        groups = {"loss": "train", "lr": "train", "time_s": "train"}
        for key, value in row.items():
            if key == "epoch" or not isinstance(value, (int, float)) or math.isnan(float(value)):
                continue
            self.writer.add_scalar(f"{groups.get(key, 'val')}/{key}", float(value), epoch)
        self.writer.flush()

    def log_preview(self, epoch: int, image: Any, label: Any, pred: Any, tag: str = "val/preview") -> None:
        """Add one overlay image (see :func:`preview_image`) at step ``epoch``."""
        self.writer.add_image(tag, preview_image(image, label, pred), epoch, dataformats="CHW")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
