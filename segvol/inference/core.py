"""Array-level inference core shared by validation, ``segvol infer``, export checks and benchmarks."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import torch

from segvol.config import Config

__all__ = ["sliding_window", "cpu_window_batch", "CPU_BATCH_VOXELS", "window_count", "even_overlap", "resolve_overlap",
           "axis_gather_plan", "gather_labels", "stitch_device", "to_onehot", "to_label_index"]


def window_count(size: int, roi: int, min_overlap: float) -> int:
    """The fewest ``roi``-long windows covering ``size`` voxels with neighbours overlapping by at least
    ``ceil(min_overlap * roi)`` voxels (1 when the axis fits in one window)."""
    if size <= roi:
        return 1
    step = roi - max(1, math.ceil(min_overlap * roi))
    if step < 1:
        raise ValueError(f"min_overlap {min_overlap} leaves no step for a window of {roi}")
    return math.ceil((size - roi) / step) + 1


def even_overlap(size: int, roi: int, min_overlap: float) -> float:
    """The overlap fraction that makes MONAI's ``sliding_window_inference`` place :func:`window_count` windows
    evenly over an axis of ``size`` voxels: its scan interval ``int(roi * (1 - overlap))`` becomes
    ``ceil((size - roi) / (n - 1))``, so the windows start at ``0, s, 2s, ...`` and the last one ends on the border
    (exactly even for two windows, within a voxel per window otherwise)."""
    n = window_count(size, roi, min_overlap)
    if n == 1:
        return 0.0
    step = math.ceil((size - roi) / (n - 1))
    return 1.0 - (step + 0.5) / roi  # int(roi * (1 - o)) == step, away from float rounding


def resolve_overlap(overlap: float | str, spatial: Sequence[int], roi: Sequence[int], min_overlap: float
                    ) -> float | tuple[float, ...]:
    """``"auto"`` -> a per-axis overlap tuple from :func:`even_overlap`; a number is returned unchanged."""
    if overlap != "auto":
        return float(overlap)
    return tuple(even_overlap(int(s), int(r), min_overlap) for s, r in zip(spatial, roi))


def sliding_window(predict: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, cfg: Config,
                   sw_batch_size: int | None = None, overlap: float | str | None = None,
                   device: Any = None, progress: bool = False) -> torch.Tensor:
    """Run ``predict`` over ``image`` (B, C, H, W, D) in ROI-sized windows with MONAI's Gaussian blending.

    ``overlap`` (default ``cfg.infer.overlap``): a fraction, or ``"auto"`` for the fewest windows per axis spread
    evenly with at least ``cfg.infer.min_overlap`` of a window between neighbours.

    Returns:
        logits (B, out_channels, H, W, D) on ``device`` (default: the image's device).
    """
    from monai.inferers import sliding_window_inference

    roi = cfg.preprocess.roi_size
    chosen = resolve_overlap(cfg.infer.overlap if overlap is None else overlap, image.shape[2:], roi,
                             cfg.infer.min_overlap)
    return cast(torch.Tensor, sliding_window_inference(  # one tensor in, one tensor out (no tuple/dict outputs)
        image, roi_size=roi, sw_batch_size=sw_batch_size or cfg.infer.sw_batch_size,
        predictor=predict, overlap=chosen, mode=cfg.infer.blend, device=device, progress=progress,
    ))


CPU_BATCH_VOXELS = 96**3  # on a CPU, windows batched up to one full-size window's voxels (docs/benchmarks.md)


def cpu_window_batch(configured: int, roi: Sequence[int]) -> int:
    """Windows per batch on a CPU: ``configured``, but no more than fit in :data:`CPU_BATCH_VOXELS`, and at least
    one. On 2 cores ONNX Runtime ran four 96³ windows per batch 1.4× slower than one at a time (PyTorch: the same
    speed either way); small windows still gain from batching."""
    return max(1, min(int(configured), CPU_BATCH_VOXELS // math.prod(int(r) for r in roi)))


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


def _voxel_map(to_grid: Any, from_grid: Any) -> Any:
    """The 4x4 map from ``from_grid``'s voxel indices to ``to_grid``'s (both voxel-to-world affines)."""
    to_grid = np.asarray(torch.as_tensor(to_grid).detach().cpu(), dtype=np.float64)
    from_grid = np.asarray(torch.as_tensor(from_grid).detach().cpu(), dtype=np.float64)
    return np.linalg.solve(to_grid, from_grid)


def axis_gather_plan(grid_affine: Any, valid_affine: Any, valid_shape: Sequence[int], target_affine: Any,
                     target_shape: Sequence[int], tol: float = 1e-4) -> list[Any] | None:
    """Nearest-neighbour indices that bring a label map from a processed grid back onto ``target``'s grid, one
    index vector per processed axis, when the two grids are axis-aligned (a resample by per-axis scale and shift,
    flips and axis permutations); None otherwise (an oblique input: use MONAI's ``Invertd``).

    Args:
        grid_affine: the processed (padded) grid's affine.
        valid_affine, valid_shape: the resampled grid before padding; indices are clamped to it, as the inverse
            resample with border padding does.
        target_affine, target_shape: the input's own grid (spatial shape).

    Returns:
        ``[idx_0, idx_1, idx_2, perm]``: ``idx_i`` (int64 numpy) indexes processed axis ``i`` for each voxel of
        target axis ``perm[i]``.
    """
    m = _voxel_map(grid_affine, target_affine)
    offset = np.rint(_voxel_map(grid_affine, valid_affine)[:3, 3])
    linear = np.abs(m[:3, :3])
    perm = [int(np.argmax(row)) for row in linear]
    if sorted(perm) != [0, 1, 2]:
        return None
    for i, j in enumerate(perm):
        if np.delete(linear[i], j).max(initial=0.0) > tol * linear[i, j]:
            return None
    plan: list[Any] = []
    for i, j in enumerate(perm):
        coords = m[i, j] * np.arange(int(target_shape[j]), dtype=np.float64) + m[i, 3]
        lo = offset[i]
        nearest = np.floor(coords + 0.5)  # a tie (exactly half-way, only with round spacings) goes up
        plan.append(np.clip(nearest, lo, lo + int(valid_shape[i]) - 1).astype(np.int64))
    return [*plan, perm]


def gather_labels(labels: torch.Tensor, plan: list[Any], use_numpy: bool | None = None) -> torch.Tensor:
    """Apply :func:`axis_gather_plan` to a (C, X, Y, Z) label map (any dtype, any device): three per-axis gathers,
    then the axis permutation. Returns (C, *target_shape) on the labels' device.

    On the CPU the gathers are ``numpy.take`` (about 100x faster than ``torch.index_select`` on uint8 there); on an
    accelerator ``index_select``, so the labels leave it only once, already on the input's grid. ``use_numpy``
    overrides that choice (tests run both on the CPU)."""
    *index, perm = plan
    order = (0, *(perm.index(j) + 1 for j in range(3)))  # target axis j sits at processed axis perm.index(j)
    if use_numpy if use_numpy is not None else labels.device.type == "cpu":
        out = labels.detach().numpy()
        for axis, idx in enumerate(index):
            out = np.take(out, idx, axis=axis + 1)
        return torch.from_numpy(np.ascontiguousarray(out.transpose(order)))
    gathered = labels
    for axis, idx in enumerate(index):
        gathered = gathered.index_select(axis + 1, torch.as_tensor(idx, device=labels.device))
    return gathered.permute(*order).contiguous()
