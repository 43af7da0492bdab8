"""Array-level inference core shared by validation, ``segvol infer``, export checks and benchmarks."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from segvol.config import Config

__all__ = ["sliding_window", "stitch_device", "to_onehot", "to_label_index"]


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


def stitch_device(image_shape: Sequence[int], out_channels: int, device: torch.device,
                  free_bytes: int | None = None, share: float = 0.5) -> torch.device:
    """Where the sliding-window output is accumulated: on ``device`` when the float32 output and MONAI's count map
    fit in ``share`` of its free memory, else on the CPU (the windows still run on ``device``).

    Args:
        image_shape: (B, C, H, W, D) of the preprocessed input.
        out_channels: channels of the model's output.
        device: the model's device.
        free_bytes: free accelerator memory (default: asked from CUDA).
    """
    if device.type != "cuda":
        return device
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    need = int(image_shape[0]) * math.prod(int(s) for s in image_shape[2:]) * (out_channels + 1) * 4
    return device if need <= share * free_bytes else torch.device("cpu")


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
