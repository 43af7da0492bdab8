"""Noisy vessel masks, as an untrained or weakly trained model predicts them (speckle, blobs joined into thousands
of junctions), for the robustness tests and the benchmark of ``segvol tree`` and the centreline metrics."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["noise_mask", "speckled"]


def noise_mask(shape: tuple[int, int, int], fraction: float = 0.3, sigma: float = 1.0, seed: int = 0) -> np.ndarray:
    """Smoothed uniform noise, thresholded so that ``fraction`` of the voxels are set: at 0.3 one network of
    thin, branching, looping strands fills the volume (many thousand junctions) among hundreds of small blobs."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape, dtype=np.float32), sigma)
    return field > np.quantile(field, 1.0 - fraction)


def speckled(mask: np.ndarray, fraction: float = 0.02, sigma: float = 1.0, seed: int = 0) -> np.ndarray:
    """``mask`` with speckle added: blobs covering about ``fraction`` of the volume, some touching the vessels."""
    return np.asarray(mask, bool) | noise_mask(mask.shape, fraction, sigma, seed)
