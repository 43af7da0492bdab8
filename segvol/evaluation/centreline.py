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
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from segvol.tree.core import TracedGraph

__all__ = ["centreline_metrics", "CENTRELINE_METRICS", "COVER_TOL_MM", "END_TOL_MM"]

CENTRELINE_METRICS = ("cl_cover_ref", "cl_cover_pred", "branches_ref", "branches_detected", "branches_missed",
                      "tree_length_ref_mm", "tree_length_pred_mm", "tree_length_err_pct")
COVER_TOL_MM = 1.0
END_TOL_MM = 3.0


_Part = tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray, np.ndarray]], float]  # ends, segments, length


def _weights(points_mm: np.ndarray) -> np.ndarray:
    """Length weight of each polyline sample: half of each step to its neighbours."""
    steps = np.linalg.norm(np.diff(points_mm, axis=0), axis=1)
    w = np.zeros(len(points_mm))
    w[:-1] += steps / 2
    w[1:] += steps / 2
    return w


def _measure_trees(traced: TracedGraph, spacing: np.ndarray) -> list[_Part | None]:
    """(free ends, [(voxels, radii, weights) per segment], length) of every tree, in the analysis' order; None for a
    tree without an edge (a lone voxel: no centreline, no free end). All trees are measured in one batch by the
    measurement of ``segvol tree`` (:func:`segvol.tree.measure.measure_trees`), with distance-transform radii."""
    from segvol.tree.core import _renumber
    from segvol.tree.measure import measure_trees

    graph, geo = traced.graph, traced.geo
    per_tree: list[_Part | None] = [None] * len(traced.tree_labels)
    if graph is None or geo is None:
        return per_tree
    ranks = [rank for rank, lab in enumerate(traced.tree_labels) if traced.parts.get(lab, ([], []))[1]]
    parts = [traced.parts[traced.tree_labels[rank]] for rank in ranks]
    for rank, (nodes, segments, root) in zip(ranks, measure_trees(graph, parts, geo, sections=False)):
        _renumber(nodes, segments, root)
        per_tree[rank] = ([n.point_mm / spacing for n in nodes if n.kind in ("root", "end")],
                          [(s.voxels, s.radii_mm, _weights(s.points_mm)) for s in segments],
                          float(sum(s.length_mm for s in segments)))
    return per_tree


class _Traced:
    """Centreline samples (voxel indices, radius, length weight) and free ends of one mask.

    The values are those of every tree of :func:`segvol.tree.analyse_mask`, in its order, measured in one batch
    without cross-sections (the coverage tolerance needs only a rough radius): trees without an edge (a lone voxel)
    have no centreline and no free end.
    """

    def __init__(self, mask: np.ndarray, spacing: np.ndarray) -> None:
        from segvol.tree import TreeSettings
        from segvol.tree.core import trace_mask

        traced = trace_mask(mask, np.diag([*spacing, 1.0]), TreeSettings(max_trees=None, min_tree_mm3=0.0))
        per_tree = _measure_trees(traced, spacing)
        done = [t for t in per_tree if t is not None]
        segs = [seg for t in done for seg in t[1]]
        self.length = float(sum(t[2] for t in done))
        self.voxels = np.concatenate([v for v, _, _ in segs]) if segs else np.zeros((0, 3), np.int64)
        self.radii = np.concatenate([r for _, r, _ in segs]) if segs else np.zeros(0)
        self.weights = np.concatenate([w for _, _, w in segs]) if segs else np.zeros(0)
        ends = [e for t in done for e in t[0]]
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
    from segvol.utils import crop_to_union

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
