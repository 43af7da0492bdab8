"""Masks of the coronary trees that segvol's ImageCAS phantom generator draws, with their known geometry.

For the tree tests each tree is rasterised alone from the generator's own centrelines and radii
(:class:`segvol.data.phantoms.imagecas.Centreline`), on a grid of the test's choosing (the scene's label holds both
trees, on the phantom's own grid).
"""

from __future__ import annotations

import numpy as np

from segvol.data.phantoms.imagecas import Centreline, PhantomGeometry, make_imagecas_phantom

__all__ = ["generated_trees", "rasterise", "polyline_length", "separate_tubes", "touches_itself"]


def generated_trees(seed: int, shape=(160, 160, 90), spacing=(1.1, 1.1, 1.1)) -> list[Centreline]:
    """The tubes of one phantom (anatomy scaled to the field of view: 176 x 176 x 99 mm here, about full size)."""
    found: list[Centreline] = []
    make_imagecas_phantom(PhantomGeometry(shape, spacing), seed, centrelines=found)
    return found


def polyline_length(points: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())


def rasterise(tubes: list[Centreline], spacing, flip=(False, False, False), margin_mm: float = 4.0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Mask (voxel centre within the tapered tube) and affine of ``tubes`` on a grid with ``spacing``; ``flip``
    mirrors axes in the affine (negative steps), so the same scanner-space tree lies on a mirrored grid."""
    pts = np.concatenate([t.points_mm for t in tubes])
    lo, hi = pts.min(axis=0) - margin_mm, pts.max(axis=0) + margin_mm
    spacing = np.asarray(spacing, dtype=np.float64)
    shape = tuple(int(x) for x in np.ceil((hi - lo) / spacing) + 1)
    steps = np.where(flip, -spacing, spacing)
    origin = np.where(flip, lo + (np.array(shape) - 1) * spacing, lo)
    affine = np.diag([*steps, 1.0])
    affine[:3, 3] = origin
    axes = [origin[d] + steps[d] * np.arange(shape[d]) for d in range(3)]
    sdf = np.full(shape, np.inf, dtype=np.float32)
    for tube in tubes:
        for a, b, ra, rb in zip(tube.points_mm[:-1], tube.points_mm[1:], tube.radii_mm[:-1], tube.radii_mm[1:]):
            pad = max(ra, rb) + 2 * spacing.max()
            box_lo, box_hi = np.minimum(a, b) - pad, np.maximum(a, b) + pad
            idx = [np.flatnonzero((ax >= lo) & (ax <= hi)) for ax, lo, hi in zip(axes, box_lo, box_hi)]
            if any(i.size == 0 for i in idx):
                continue
            x, y, z = np.meshgrid(*[axes[d][idx[d]] for d in range(3)], indexing="ij", sparse=True)
            ab = b - a
            t = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / max(ab @ ab, 1e-9), 0, 1)
            dist = np.sqrt((x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (z - a[2] - t * ab[2]) ** 2)
            sl = np.ix_(*idx)
            sdf[sl] = np.minimum(sdf[sl], (dist - (ra + t * (rb - ra))).astype(np.float32))
    return sdf <= 0, affine


def _touches(side: Centreline, other: Centreline) -> bool:
    """Whether ``side`` comes closer to ``other`` than their radii plus 1 mm, except where it leaves ``other``."""
    d = np.linalg.norm(side.points_mm[:, None] - other.points_mm[None], axis=2)
    close = d < side.radii_mm[:, None] + other.radii_mm[None] + 1.0
    if d[0].min() < 0.5:  # side starts on other: its first millimetres lie inside other
        close[: int(np.ceil(3 * other.radii_mm.max())) + 4] = False
    return bool(close.any())


def separate_tubes(tubes: list[Centreline]) -> list[Centreline]:
    """The trunk, the main branches and the side branches that touch no other kept tube except where they start.

    The generator lets side branches cross other branches; a crossing makes a loop in any centreline graph and
    merges two branches, so the known geometry no longer says how many branches the mask holds.
    """
    kept = [t for t in tubes if t.kind != "side"]
    for side in (t for t in tubes if t.kind == "side"):
        if not any(_touches(side, k) for k in kept):
            kept.append(side)
    return kept


def touches_itself(tube: Centreline, apart_mm: float = 8.0) -> bool:
    """Whether two stretches of ``tube`` more than ``apart_mm`` apart along it come closer than their radii plus
    1 mm (a branch that winds back onto itself makes a ring in the mask, so the known geometry is no tree)."""
    d = np.linalg.norm(tube.points_mm[:, None] - tube.points_mm[None], axis=2)
    along = np.abs(np.arange(len(d))[:, None] - np.arange(len(d))[None])  # points are 1 mm apart
    close = d < tube.radii_mm[:, None] + tube.radii_mm[None] + 1.0
    return bool((close & (along > apart_mm)).any())
