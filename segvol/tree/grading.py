"""Stenosis grading along vessel paths, as a reader grades a CTA: diameter reduction against a tapering reference.

1. **Paths**: from the root, each vessel continues into its widest child; the other children start paths of their
   own (side branches). Segments that close a loop are not graded.
2. **Diameter profile**: the equivalent diameter of the cross-sections along the path (one per voxel), with dips
   of :data:`PINCH_SAMPLES` sample raised to their neighbours (a pinch of one voxel is not a narrowing).
3. **Reference**: at each sample, the upper quartile of the diameters of the healthy samples proximal
   (``[s - W, s - GAP]``) and distal (``[s + GAP, s + W]``), ``W`` = ``reference_window_mm``, placed at their mean
   positions and joined by a straight line (tapering allowed), read at the sample. Healthy samples lie outside
   junction zones, ostia and tips, and are neither narrower than :data:`DIP` nor wider than :data:`BULGE` times the
   reference; three rounds, so a lesion leaves its own reference.
   Both sides need :data:`SUPPORT_MM` of healthy vessel.
4. **Grade**: ``100 (1 - d / reference)`` per sample; a lesion is a run of at least :data:`EDGE_PCT` % holding a
   maximum of at least 25 % (CAD-RADS 2 and up) by at least one voxel, reported with its band, length and
   position, and flagged when at least ``narrowing_fraction``.
5. **Not assessable** (reported with the reason, never graded): junction zones, the first ``ostium_mm`` of a path,
   the last ``max(tip_mm, 2 diameters)`` before a free end, paths shorter than ``min_path_mm``, references
   narrower than ``max(min_diameter_mm, 4 voxels)``, and samples without a reference on both sides.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from segvol.tree.records import Lesion, Segment, Span, Tree, TreeSettings, band_of

__all__ = ["vessel_paths", "grade_tree", "PINCH_SAMPLES", "EDGE_PCT"]

PINCH_SAMPLES = 1  # dips this many samples wide are pinches, not narrowings
GAP = 1.0  # mm either side of a sample left out of its reference
DIP, BULGE = 0.85, 1.25  # healthy samples lie within these fractions of the reference
SUPPORT_MM = 2.0  # healthy vessel needed on each side
QUANTILE = 75.0  # the healthy width on each side: this percentile of its diameters
EDGE_PCT = 20.0  # a lesion extends while the reduction is at least this
CORE_PCT = 5.0  # its narrowest stretch lies within this of its worst reduction
MIN_LESION_PCT = 25.0  # graded lesions start at CAD-RADS 2
RESOLVED_VOXELS = 4.0  # a reference narrower than this many voxels is not assessable


def vessel_paths(tree: Tree) -> list[list[int]]:
    """Segment ids of each vessel path (see the module doc), main paths first."""
    children: dict[int, list[Segment]] = {}
    for s in tree.segments:
        if s.parent is not None and not s.loop:
            children.setdefault(s.parent, []).append(s)
    starts = [s for s in tree.segments if s.parent is None and not s.loop]
    paths: list[list[int]] = []
    while starts:
        seg = starts.pop(0)
        path = [seg.id]
        while children.get(seg.id):
            kids = sorted(children[seg.id], key=lambda c: -c.mean_radius_mm)
            starts.extend(kids[1:])
            seg = kids[0]
            path.append(seg.id)
        paths.append(path)
    return paths


def _side(s: np.ndarray, d: np.ndarray, healthy: np.ndarray, lo: int, hi: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample ``i``: the healthy samples ``i + lo .. i + hi``: their count, mean position and upper quartile
    diameter (the vessel's healthy width, robust to what is left of a lesion's shoulders)."""
    n = len(s)
    pad = np.full(max(abs(lo), abs(hi)), np.nan)
    vals = np.concatenate([pad, np.where(healthy, d, np.nan), pad])
    pos = np.concatenate([pad, np.where(healthy, s, np.nan), pad])
    start = np.arange(n) + lo + len(pad)
    win = start[:, None] + np.arange(hi - lo + 1)[None]
    v, p = vals[win], pos[win]
    count = np.isfinite(v).sum(axis=1)
    ranked = np.sort(v, axis=1)  # NaN last
    at = np.maximum(count - 1, 0) * (QUANTILE / 100.0)
    lo_i = np.floor(at).astype(np.int64)
    hi_i = np.minimum(lo_i + 1, np.maximum(count - 1, 0))
    rows = np.arange(n)
    quantile = ranked[rows, lo_i] + (at - lo_i) * (ranked[rows, hi_i] - ranked[rows, lo_i])
    mean_pos = np.where(count > 0, np.nansum(p, axis=1) / np.maximum(count, 1), np.nan)
    return count, mean_pos, np.where(count > 0, quantile, np.nan)


def _reference(s: np.ndarray, d: np.ndarray, usable: np.ndarray, window: float) -> np.ndarray:
    """Reference diameter per sample (NaN without enough healthy vessel on both sides)."""
    step = max(float(np.median(np.diff(s))) if len(s) > 1 else 1.0, 1e-6)
    need = max(int(np.ceil(SUPPORT_MM / step)), 2)
    w, g = max(int(round(window / step)), need + 1), max(int(round(GAP / step)), 1)
    healthy = usable.copy()
    ref = np.full(len(s), np.nan)
    for _ in range(3):
        n_p, s_p, d_p = _side(s, d, healthy, -w, -g)
        n_d, s_d, d_d = _side(s, d, healthy, g, w)
        both = (n_p >= need) & (n_d >= need)
        span = np.where(both, s_d - s_p, 1.0)
        t = np.where(both & (span > 1e-9), (s - s_p) / np.where(span > 1e-9, span, 1.0), 0.5)
        ref = np.where(both, d_p + t * (d_d - d_p), np.nan)
        with np.errstate(invalid="ignore"):
            healthy = usable & ~(d < DIP * ref) & ~(d > BULGE * ref)
    return ref


def _profile(tree: Tree, path: list[int]) -> dict[str, np.ndarray]:
    segs = [tree.segments[k] for k in path]
    offsets = np.cumsum([0.0] + [s.length_mm for s in segs[:-1]])
    return {"s": np.concatenate([o + s.arclength_mm for o, s in zip(offsets, segs)]),
            "d": np.concatenate([2 * s.radii_mm for s in segs]),
            "junction": np.concatenate([s.junction for s in segs]),
            "seg": np.concatenate([np.full(len(s.radii_mm), s.id) for s in segs]),
            "i": np.concatenate([np.arange(len(s.radii_mm)) for s in segs])}


def _reasons(tree: Tree, path: list[int], p: dict[str, np.ndarray], settings: TreeSettings) -> np.ndarray:
    """Why each sample is not assessable before any reference is known ("" where it may be)."""
    s, d = p["s"], p["d"]
    why = np.full(len(s), "", dtype=object)
    first, last = tree.segments[path[0]], tree.segments[path[-1]]
    start_s = 0.0
    if first.parent is not None and p["junction"][0]:  # a side branch: its ostium follows the junction zone
        start_s = float(s[int(np.argmin(p["junction"]))])
    why[s < start_s + settings.ostium_mm] = "ostium"
    if tree.nodes[last.end].kind in ("end", "root"):
        tip = max(settings.tip_mm, 2.0 * float(np.median(d[s > s[-1] - 5.0])))
        why[s > s[-1] - tip] = "tip"
    why[p["junction"]] = "junction"
    if s[-1] < settings.min_path_mm:
        why[:] = "short"
    return why


def _without_pinches(d: np.ndarray) -> np.ndarray:
    """``d`` with every dip one sample wide raised to the lower of its neighbours (a grey closing over two
    samples): a pinch of one voxel is no narrowing, a narrowing two samples wide keeps its depth."""
    return ndimage.grey_closing(d, size=PINCH_SAMPLES + 1, mode="nearest") if len(d) > PINCH_SAMPLES else d


def _lesions(p: dict[str, np.ndarray], pct: np.ndarray, ref: np.ndarray, d: np.ndarray, tree: Tree, index: int,
             settings: TreeSettings, min_step: float) -> list[Lesion]:
    """The runs of ``pct >= EDGE_PCT`` whose worst point is a lesion (see the module doc)."""
    hot = np.nan_to_num(pct, nan=0.0) >= EDGE_PCT
    runs, count = ndimage.label(hot)
    out = []
    for r in range(1, count + 1):
        at = np.flatnonzero(runs == r)
        peak = int(at[np.argmax(pct[at])])
        if pct[peak] < MIN_LESION_PCT or ref[peak] - d[peak] < min_step:
            continue
        core = at[pct[at] >= pct[peak] - CORE_PCT]  # the narrowest stretch; its middle is the lesion's place
        worst = int(core[np.argmin(np.abs(p["s"][core] - 0.5 * (p["s"][core[0]] + p["s"][core[-1]])))])
        seg = tree.segments[int(p["seg"][worst])]
        i = int(p["i"][worst])
        step = float(np.median(np.diff(p["s"]))) if len(p["s"]) > 1 else 0.0
        out.append(Lesion(segment=seg.id, at_mm=float(seg.arclength_mm[i]), point_mm=seg.points_mm[i],
                          pct=float(pct[peak]), band=band_of(pct[peak]),
                          length_mm=float(p["s"][at[-1]] - p["s"][at[0]] + step), reference_mm=float(ref[peak]),
                          minimum_mm=float(d[peak]), path=index,
                          flagged=bool(pct[peak] >= 100.0 * settings.narrowing_fraction - 1e-9)))
    return out


def _spans(p: dict[str, np.ndarray], why: np.ndarray, tree: Tree) -> list[Span]:
    """Runs of one reason within one segment, as spans along it."""
    out = []
    key = np.array([f"{g}|{w}" for g, w in zip(p["seg"], why)], dtype=object)
    cuts = np.flatnonzero(key[1:] != key[:-1]) + 1
    for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(why)]])):
        if why[a]:
            seg = tree.segments[int(p["seg"][a])]
            out.append(Span(seg.id, float(seg.arclength_mm[p["i"][a]]), float(seg.arclength_mm[p["i"][b - 1]]),
                            str(why[a])))
    return out


def _write_back(tree: Tree, p: dict[str, np.ndarray], pct: np.ndarray, ref: np.ndarray) -> None:
    """Per segment: the reference profile and the worst graded reduction."""
    for k in np.unique(p["seg"]).tolist():
        mine = p["seg"] == k
        seg = tree.segments[k]
        seg.reference_mm[p["i"][mine]] = ref[mine]
        graded = mine & np.isfinite(pct)
        if graded.any():
            worst = int(np.flatnonzero(graded)[np.argmax(pct[graded])])
            seg.narrowing_pct = max(float(pct[worst]), 0.0)
            seg.narrowing_mm = float(seg.arclength_mm[p["i"][worst]])
            seg.grade = band_of(seg.narrowing_pct)


def grade_tree(tree: Tree, settings: TreeSettings, min_step: float) -> None:
    """Grade every vessel path of ``tree`` in place: ``tree.paths``, ``tree.lesions``, ``tree.not_assessable``
    and each segment's reference profile, worst reduction, grade and flag (see the module doc)."""
    tree.paths, tree.lesions, tree.not_assessable = vessel_paths(tree), [], []
    thin = max(settings.min_diameter_mm, RESOLVED_VOXELS * min_step)
    for index, path in enumerate(tree.paths):
        p = _profile(tree, path)
        why = _reasons(tree, path, p, settings)
        d = _without_pinches(p["d"])
        if np.nanmax(np.where(why == "", d, np.nan), initial=0.0) * BULGE < thin:  # no reference can reach it
            ref = np.full(len(d), np.nan)
            why[why == ""] = "thin"
        else:
            ref = _reference(p["s"], d, why == "", settings.reference_window_mm)
        with np.errstate(invalid="ignore"):
            why[(why == "") & np.isnan(ref)] = "no reference"
            why[(why == "") & (ref < thin)] = "thin"
        pct = np.where(why == "", 100.0 * (1.0 - d / np.where(why == "", ref, 1.0)), np.nan)
        tree.lesions += _lesions(p, pct, ref, d, tree, index, settings, min_step)
        tree.not_assessable += _spans(p, why, tree)
        _write_back(tree, p, pct, ref)
    for seg in tree.segments:
        seg.narrowing = any(les.flagged and les.segment == seg.id for les in tree.lesions)
        if seg.loop:
            tree.not_assessable.append(Span(seg.id, 0.0, seg.length_mm, "loop"))
    flagged = {les.segment: les for les in sorted(tree.lesions, key=lambda x: x.pct) if les.flagged}
    for k, les in flagged.items():  # the flag's place is the flagged lesion's
        tree.segments[k].narrowing_pct, tree.segments[k].narrowing_mm = les.pct, les.at_mm
