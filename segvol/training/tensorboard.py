"""TensorBoard event files written during training, next to ``metrics.csv`` (``tensorboard --logdir models``)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

__all__ = ["TrainLogger"]

log = logging.getLogger(__name__)


class TrainLogger:
    """Writes every numeric value of an epoch's metrics row (loss, val Dice per class, lr, time) as a scalar."""

    def __init__(self, run_dir: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        groups = {"loss": "train", "lr": "train", "time_s": "train"}
        for key, value in row.items():
            if key == "epoch" or not isinstance(value, (int, float)) or math.isnan(float(value)):
                continue
            self.writer.add_scalar(f"{groups.get(key, 'val')}/{key}", float(value), epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
