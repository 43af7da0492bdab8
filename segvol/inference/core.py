"""Array-level inference core shared by validation, ``segvol infer``, export checks and benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from segvol.config import Config

__all__ = ["sliding_window", "to_onehot", "to_label_index"]


def sliding_window(predict: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, cfg: Config,
                   sw_batch_size: int | None = None, overlap: float | None = None,
                   device: Any = None, progress: bool = False) -> torch.Tensor:
    """Run ``predict`` over ``image`` (B, C, H, W, D) in ROI-sized windows with Gaussian blending.

    Returns:
        logits (B, out_channels, H, W, D) on ``device`` (default: the image's device).
    """
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(
        image, roi_size=cfg.preprocess.roi_size, sw_batch_size=sw_batch_size or cfg.infer.sw_batch_size,
        predictor=predict, overlap=cfg.infer.overlap if overlap is None else overlap, mode=cfg.infer.blend,
        device=device, progress=progress,
    )


def to_onehot(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """(B, C, ...) logits -> (B, C, ...) binary masks: argmax one-hot (softmax) or > 0 (sigmoid)."""
    if activation == "sigmoid":
        return (logits > 0).to(torch.uint8)
    index = logits.argmax(dim=1, keepdim=True)
    return torch.zeros_like(logits, dtype=torch.uint8).scatter_(1, index, 1)


def to_label_index(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """(B, C, ...) logits -> (B, 1, ...) uint8: class index (softmax) or per-region bits are kept as channels."""
    if activation == "sigmoid":
        return (logits > 0).to(torch.uint8)
    return logits.argmax(dim=1, keepdim=True).to(torch.uint8)
