"""Hand-built vessel masks with known geometry: tubes (optionally narrowed) on any grid, in scanner mm."""

from __future__ import annotations

import numpy as np

__all__ = ["grid_affine", "scanner_points", "capsule_mask"]


def grid_affine(spacing, flip=(False, False, False), origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Axis-aligned affine with ``spacing``; flipped axes step backwards (a mirrored grid)."""
    aff = np.diag([*(-s if f else s for s, f in zip(spacing, flip)), 1.0])
    aff[:3, 3] = origin
    return aff


def scanner_points(shape, affine) -> np.ndarray:
    idx = np.indices(shape).reshape(3, -1).T.astype(np.float64)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def capsule_mask(shape, affine, segments, narrowing=None) -> np.ndarray:
    """Union of capsules ``(a_mm, b_mm, radius_mm)``; ``narrowing=(segment index, centre mm from a, half-width mm,
    fraction)`` narrows that capsule's radius by ``fraction`` with a Gaussian profile."""
    pts = scanner_points(shape, affine)
    inside = np.zeros(len(pts), bool)
    for i, (a, b, r) in enumerate(segments):
        a, b = np.asarray(a, float), np.asarray(b, float)
        ab = b - a
        t = np.clip((pts - a) @ ab / (ab @ ab), 0, 1)
        d = np.linalg.norm(pts - (a + t[:, None] * ab), axis=1)
        radius = np.full(len(pts), float(r))
        if narrowing is not None and narrowing[0] == i:
            _, centre, width, frac = narrowing
            radius *= 1 - frac * np.exp(-(((t * np.linalg.norm(ab)) - centre) / width) ** 2)
        inside |= d <= radius
    return inside.reshape(shape)
