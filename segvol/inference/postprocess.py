"""Post-processing of predicted label maps with MONAI's morphology transforms (config ``infer`` section)."""

from __future__ import annotations

import numpy as np
import torch

from segvol.config import InferConfig

__all__ = ["postprocess"]


def postprocess(labels: torch.Tensor, cfg: InferConfig, spacing: tuple[float, ...], n_classes: int) -> torch.Tensor:
    """Clean a (1, H, W, D) label map: drop small components, keep the K largest, fill holes.

    Args:
        labels: class indices (softmax head) or a painted label map.
        cfg: ``min_component_mm3``, ``keep_largest`` and ``fill_holes``.
        spacing: voxel size in mm (component sizes are measured in mm³).
        n_classes: classes including background; labels 1..n_classes-1 are processed independently.
    """
    from monai.transforms import FillHoles, KeepLargestConnectedComponent, RemoveSmallObjects

    if not (cfg.min_component_mm3 > 0 or cfg.keep_largest > 0 or cfg.fill_holes):
        return labels
    present = [int(v) for v in torch.unique(labels).tolist() if v != 0]
    out = labels.clone()
    if cfg.min_component_mm3 > 0:
        voxel_mm3 = float(np.prod(spacing))
        min_voxels = max(int(np.ceil(cfg.min_component_mm3 / voxel_mm3)), 1)
        cleaned = torch.zeros_like(out)
        for value in present:
            mask = (out == value)
            kept = RemoveSmallObjects(min_size=min_voxels, connectivity=3)(mask)
            cleaned[torch.as_tensor(kept).bool()] = value
        out = cleaned
    kept_out: torch.Tensor | np.ndarray = out
    if cfg.keep_largest > 0 and present:
        kept_out = KeepLargestConnectedComponent(applied_labels=present, is_onehot=False, independent=True,
                                                 connectivity=3, num_components=cfg.keep_largest)(kept_out)
    if cfg.fill_holes and present:
        kept_out = FillHoles(applied_labels=present, connectivity=1)(kept_out)
    return torch.as_tensor(kept_out).to(labels.dtype)
