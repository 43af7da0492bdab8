"""Hand-built vessel masks with known geometry: capsules and swept tubes (tapering, curved, narrowed) on any grid,
in scanner mm."""

from __future__ import annotations

import numpy as np

__all__ = ["grid_affine", "scanner_points", "capsule_mask", "straight_tube_mask", "tube_mask", "lesion_profile",
           "arc_points"]


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


def straight_tube_mask(shape, affine, a, b, radius_at) -> np.ndarray:
    """Voxels of a straight tube from ``a`` to ``b`` (mm) whose cross-section perpendicular to the axis at ``s`` mm
    from ``a`` is a disk of radius ``radius_at(s)`` (so a narrowing's profile is exactly that of its sections); the
    ends are half-balls of the end radii."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    length = float(np.linalg.norm(b - a))
    pts = scanner_points(shape, affine)
    s = (pts - a) @ (b - a) / length
    axial = a + np.clip(s, 0, length)[:, None] * (b - a) / length
    return (np.linalg.norm(pts - axial, axis=1) <= radius_at(np.clip(s, 0, length))).reshape(shape)


def tube_mask(shape, affine, points, radii) -> np.ndarray:
    """Voxels whose centre lies within the swept tube of a polyline ``points`` (n, 3, mm, steps well under the
    radius) with a radius ``radii`` (n,) varying linearly along each step; the ends are round."""
    points, radii = np.asarray(points, float), np.asarray(radii, float)
    inv = np.linalg.inv(affine)
    sdf = np.full(shape, np.inf, dtype=np.float32)
    reach = float(radii.max()) + 2 * float(np.abs(affine[:3, :3]).max())
    for a, b, ra, rb in zip(points[:-1], points[1:], radii[:-1], radii[1:]):
        corners = np.array([[x, y, z] for x in (a[0] - reach, b[0] + reach) for y in (a[1] - reach, b[1] + reach)
                            for z in (a[2] - reach, b[2] + reach)]) @ inv[:3, :3].T + inv[:3, 3]
        lo = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
        hi = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        idx = np.stack(np.meshgrid(*[np.arange(x, y) for x, y in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
        p = idx @ affine[:3, :3].T + affine[:3, 3]
        ab = b - a
        t = np.clip((p - a) @ ab / max(ab @ ab, 1e-12), 0, 1)
        d = np.linalg.norm(p - (a + t[:, None] * ab), axis=1) - (ra + t * (rb - ra))
        box = tuple(slice(x, y) for x, y in zip(lo, hi))
        sdf[box] = np.minimum(sdf[box], d.reshape(hi - lo).astype(np.float32))
    return sdf <= 0


def lesion_profile(s, centre, length, fraction) -> np.ndarray:
    """Radius factor along ``s`` (mm) for a narrowing of ``fraction`` of the diameter over ``length`` mm centred at
    ``centre``: a plateau with 1 mm cosine shoulders on either side, inside the ``length``."""
    x = np.abs(np.asarray(s, float) - centre) - (length / 2 - 1.0)  # > 0 on the shoulders
    w = np.where(x <= 0, 1.0, np.where(x >= 1.0, 0.0, 0.5 * (1 + np.cos(np.pi * np.clip(x, 0, 1)))))
    return 1.0 - fraction * w


def arc_points(centre, radius_mm, start_deg, stop_deg, step_mm=0.2, axis_u=(1, 0, 0), axis_v=(0, 1, 0)):
    """Points of a circular arc (mm) in the plane of ``axis_u``, ``axis_v``."""
    u, v = np.asarray(axis_u, float), np.asarray(axis_v, float)
    u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    n = max(int(np.ceil(np.radians(abs(stop_deg - start_deg)) * radius_mm / step_mm)), 2) + 1
    t = np.radians(np.linspace(start_deg, stop_deg, n))
    return np.asarray(centre, float) + radius_mm * (np.cos(t)[:, None] * u + np.sin(t)[:, None] * v)
