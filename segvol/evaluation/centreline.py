"""Centreline metrics for vessel masks: how much of the reference tree the prediction traces, and the reverse.

Both masks go through the tree analysis of ``segvol tree`` (:func:`segvol.tree.analyse_mask`: skeleton, spur
pruning, every connected component) on the bounding box of their union, with the voxel spacing as the affine.

* ``cl_cover_ref``: the fraction of the reference centreline length lying within ``max(local reference radius,
  cover_tol_mm)`` of the predicted centreline (the overlap of coronary centreline evaluation, Schaap et al., Med.
  Image Anal. 2009); ``cl_cover_pred`` the same with the roles swapped (how much of what was traced is real).
* ``branches_ref``: the reference tree's free ends (its ostia and branch tips). A reference end is
  ``branches_detected`` when the predicted centreline comes within ``end_tol_mm`` of it (so a prediction that traces
  the branch further than the reference still counts), else ``branches_missed``.
* ``tree_length_ref_mm``, ``tree_length_pred_mm``: total centreline length; ``tree_length_err_pct`` =
  100 (pred - ref) / ref.

Edge cases follow the module table of :mod:`segvol.evaluation.metrics`: both empty: coverages 1, length error 0;
prediction empty: reference coverage 0, prediction coverage NaN, every branch missed, length error -100; reference
empty: reference coverage NaN, prediction coverage 0, length error inf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["centreline_metrics", "CENTRELINE_METRICS", "COVER_TOL_MM", "END_TOL_MM"]

CENTRELINE_METRICS = ("cl_cover_ref", "cl_cover_pred", "branches_ref", "branches_detected", "branches_missed",
                      "tree_length_ref_mm", "tree_length_pred_mm", "tree_length_err_pct")
COVER_TOL_MM = 1.0
END_TOL_MM = 3.0


class _Traced:
    """Centreline samples (voxel indices, radius, length weight) and free ends of one mask."""

    def __init__(self, mask: np.ndarray, spacing: np.ndarray) -> None:
        from segvol.tree import TreeSettings, analyse_mask

        affine = np.diag([*spacing, 1.0])
        result = analyse_mask(mask, affine, TreeSettings(max_trees=None, min_tree_mm3=0.0))
        voxels, radii, weights, ends = [], [], [], []
        for tree in result.trees:
            ends += [n.point_mm / spacing for n in tree.nodes if n.kind in ("root", "end")]
            for seg in tree.segments:
                steps = np.linalg.norm(np.diff(seg.points_mm, axis=0), axis=1)
                w = np.zeros(len(seg.points_mm))
                w[:-1] += steps / 2
                w[1:] += steps / 2
                voxels.append(seg.voxels)
                radii.append(seg.radii_mm)
                weights.append(w)
        self.length = float(sum(t.length_mm for t in result.trees))
        self.voxels = np.concatenate(voxels) if voxels else np.zeros((0, 3), np.int64)
        self.radii = np.concatenate(radii) if radii else np.zeros(0)
        self.weights = np.concatenate(weights) if weights else np.zeros(0)
        self.ends = np.array(ends, dtype=np.float64).reshape(-1, 3)  # voxel coordinates (tips need not be voxels)

    def distance_to(self, voxels: np.ndarray, spacing: np.ndarray) -> np.ndarray:
        """Distance in mm from each of ``voxels`` to the nearest voxel of this centreline (inf when it has none)."""
        from scipy.spatial import cKDTree

        if len(self.voxels) == 0:
            return np.full(len(voxels), np.inf)
        return cKDTree(self.voxels * spacing).query(voxels * spacing)[0]


def _coverage(a: _Traced, b: _Traced, spacing: np.ndarray, tol: float) -> float:
    if a.weights.sum() <= 0:
        return math.nan
    near = b.distance_to(a.voxels, spacing) <= np.maximum(a.radii, tol)
    return float(a.weights[near].sum() / a.weights.sum())


def centreline_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], *,
                       cover_tol_mm: float = COVER_TOL_MM, end_tol_mm: float = END_TOL_MM) -> dict[str, float]:
    """Every metric of :data:`CENTRELINE_METRICS` for two boolean masks on one grid (see the module doc)."""
    from segvol.evaluation.metrics import crop_to_union

    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    step = np.asarray([float(s) for s in spacing])
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return dict(zip(CENTRELINE_METRICS, (1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)))
    pred, ref = crop_to_union(pred, ref, margin=2)
    tp = _Traced(pred, step) if has_pred else None
    tr = _Traced(ref, step) if has_ref else None
    n_ends = float(len(tr.ends)) if tr is not None else 0.0
    out = {"branches_ref": n_ends, "tree_length_ref_mm": tr.length if tr else 0.0,
           "tree_length_pred_mm": tp.length if tp else 0.0}
    if tp is None or tr is None:
        out.update(cl_cover_ref=0.0 if tr else math.nan, cl_cover_pred=0.0 if tp else math.nan,
                   branches_detected=0.0, branches_missed=n_ends,
                   tree_length_err_pct=-100.0 if tr else math.inf)
        return {k: out[k] for k in CENTRELINE_METRICS}
    detected = float(np.count_nonzero(tp.distance_to(tr.ends, step) <= end_tol_mm))
    out.update(cl_cover_ref=_coverage(tr, tp, step, cover_tol_mm),
               cl_cover_pred=_coverage(tp, tr, step, cover_tol_mm),
               branches_detected=detected, branches_missed=n_ends - detected,
               tree_length_err_pct=100.0 * (tp.length - tr.length) / tr.length if tr.length > 0 else
               (0.0 if tp.length == 0 else math.inf))
    return {k: out[k] for k in CENTRELINE_METRICS}
