"""Measuring a traced centreline graph: polylines in scanner mm, radii, length, tortuosity, generation, narrowing.

Conventions (documented in docs/tree.md):

* **radius** at a centreline voxel: its Euclidean distance (in mm, ``distance_transform_edt`` with the voxel
  spacing) to the nearest voxel outside the mask, minus half the finest voxel size (the mask's boundary lies
  half-way between an inside and an outside voxel centre); at least half the finest voxel size.
* **polyline**: the voxel chain in mm, smoothed by a moving average over five voxels (ends fixed) so that digital
  staircases do not lengthen oblique vessels; the ends sit on the node positions (a junction node is the mean of
  its voxels). **length** is measured along it, **tortuosity** is length / end-to-end distance (1 = straight).
* **mean / min radius** skip the stretch within a junction's radius of a junction, where the radius is that of
  the junction's sphere, not of the vessel, and the last 1.5 radii before a free end, where the vessel rounds off
  into its tip (both are kept for segments too short to have anything else).
* **root**: the end node whose first millimetres are widest (the ostium of a coronary tree). Every segment is
  oriented away from it; **generation** is 1 for a segment at the root and one more after every branching.
* **narrowing** (a geometric cue, not a diagnosis): at each centreline sample the radius is compared with the
  median radius before and after it along the vessel (``[g, W]`` mm away on each side, reaching into the parent
  segment and the widest child, ``g`` = the segment's median radius, ``W`` = ``window_factor`` times it, at least
  ``min_window_mm``); the reference is the mean of the two medians (one side where only one exists). Radii are
  first taken as a running median over five samples, and only references of at least two voxels are used (a
  narrowing of a thinner vessel is below the grid's resolution). A drop of more than ``narrowing_fraction`` of
  the reference, and by at least half a voxel, flags the segment.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segvol.tree.skeleton import VoxelGraph

__all__ = ["TreeSettings", "Node", "Segment", "Tree", "Piece", "measure_graph", "measure_chains", "Chains",
           "runs_end_to_end", "SMOOTH_HALF_WINDOW"]

SMOOTH_HALF_WINDOW = 2  # moving average over 2 * 2 + 1 voxels
TIP_FACTOR = 1.5  # samples within this many radii of a free end lie in its rounded tip
RESOLVED_VOXELS = 2.0  # narrowings are looked for only where the reference radius spans at least this many voxels


@dataclass(frozen=True)
class TreeSettings:
    """Settings of the tree analysis (the defaults suit coronary CTA masks)."""

    spur_factor: float = 2.0  # a terminal branch shorter than this times the radius at its junction is a spur
    narrowing_fraction: float = 0.4  # flag a radius drop of more than this fraction of the neighbouring radius
    window_factor: float = 4.0  # the neighbourhood W compared against, in multiples of the segment's radius
    min_window_mm: float = 3.0  # ... but at least this many mm
    max_trees: int | None = 2  # the largest components analysed as trees (None: all); the rest are pieces
    min_tree_mm3: float = 5.0  # smaller components are always reported as pieces


@dataclass
class Node:
    id: int
    kind: str  # "root", "end", "branch" (three or more segments meet), "point" (a lone voxel) or "ring"
    degree: int
    point_mm: np.ndarray  # (3,)
    radius_mm: float


@dataclass
class Segment:
    id: int
    start: int  # node id, root side
    end: int  # node id
    parent: int | None  # segment id
    generation: int
    voxels: np.ndarray  # (n, 3) int voxel indices in the input grid, root side first
    points_mm: np.ndarray  # (n, 3) smoothed polyline, scanner mm
    radii_mm: np.ndarray  # (n,)
    arclength_mm: np.ndarray  # (n,) along the polyline from ``start``
    length_mm: float
    mean_radius_mm: float
    min_radius_mm: float
    tortuosity: float
    narrowing: bool = False
    narrowing_pct: float = 0.0  # largest radius drop against the neighbourhood, in % (0 when none measured)
    narrowing_mm: float | None = None  # where along the segment (arclength) the largest drop is
    loop: bool = False  # closes a cycle (touching branches); not part of the tree's spanning structure
    valid: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # samples clear of junction spheres


@dataclass
class Tree:
    name: str
    label: int  # connected-component number (largest first)
    voxels: int
    volume_mm3: float
    nodes: list[Node]
    segments: list[Segment]
    root: int | None
    centroid_mm: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @property
    def length_mm(self) -> float:
        return float(sum(s.length_mm for s in self.segments))

    @property
    def loops(self) -> int:
        return sum(s.loop for s in self.segments)


@dataclass
class Piece:
    """A small detached component: reported, not analysed."""

    voxels: int
    volume_mm3: float
    centroid_mm: np.ndarray
    extent_mm: np.ndarray


def _to_mm(idx: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return np.asarray(idx, dtype=np.float64) @ affine[:3, :3].T + affine[:3, 3]


def _smooth(points: np.ndarray) -> np.ndarray:
    n, h = len(points), SMOOTH_HALF_WINDOW
    if n < 3:
        return points.copy()
    padded = np.concatenate([np.repeat(points[:1], h, 0), points, np.repeat(points[-1:], h, 0)])
    kernel = np.ones(2 * h + 1) / (2 * h + 1)
    out = np.stack([np.convolve(padded[:, d], kernel, mode="valid") for d in range(3)], axis=1)
    out[0], out[-1] = points[0], points[-1]
    return out


@dataclass
class _Geometry:
    """What the measurement needs about the grid and the graph's pixels."""

    affine: np.ndarray
    offset: np.ndarray  # work index -> input voxel index
    radius: np.ndarray  # per pixel, mm
    min_step: float  # finest voxel size, mm
    work: Any = None  # segvol.tree.skeleton.Work: the padded mask, to extend free ends to the surface

    def __post_init__(self) -> None:  # what every free end needs, computed once
        self.inverse = np.linalg.inv(self.affine)
        self.max_radius = float(self.radius.max()) if len(self.radius) else 0.0


def _node_point(graph: VoxelGraph, k: int, geo: _Geometry) -> np.ndarray:
    pix = graph.pixels.coords[graph.nodes[k].pixels] + geo.offset
    return _to_mm(pix.mean(axis=0), geo.affine)


def _orient(graph: VoxelGraph, edge_ids: list[int], root: int | None) -> dict[int, tuple[int, int, int, bool]]:
    """Breadth-first from the root: per edge (start node, end node, generation, closes a loop)."""
    out: dict[int, tuple[int, int, int, bool]] = {}
    inc: dict[int, list[int]] = {}
    for k in edge_ids:
        e = graph.edges[k]
        inc.setdefault(e.u, []).append(k)
        inc.setdefault(e.v, []).append(k)
    starts = [root] if root is not None else []
    starts += sorted(inc)  # other parts (a tree without ends) are reached too
    depth: dict[int, int] = {}
    for s in starts:
        if s in depth:
            continue
        depth[s] = 0
        queue = deque([s])
        while queue:
            n = queue.popleft()
            for k in inc.get(n, []):
                if k in out:
                    continue
                e = graph.edges[k]
                other = e.v if e.u == n else e.u
                loop = other in depth and other != n
                out[k] = (n, other, depth[n] + 1, loop or e.u == e.v)
                if other not in depth:
                    depth[other] = depth[n] + 1
                    queue.append(other)
    return out


def _choose_root(graph: VoxelGraph, node_ids: list[int], edge_ids: list[int], geo: _Geometry) -> int | None:
    """The end node whose first voxels (up to five) are widest."""
    best, best_r = None, -1.0
    for k in edge_ids:
        e = graph.edges[k]
        for node, path in ((e.u, e.path), (e.v, e.path[::-1])):
            if graph.nodes[node].kind != "end":
                continue
            r = float(np.median(geo.radius[path[:5]]))
            if r > best_r:
                best, best_r = node, r
    if best is None and node_ids:
        best = node_ids[0]
    return best


def _to_surface(point: np.ndarray, direction: np.ndarray, geo: _Geometry) -> np.ndarray:
    """``point`` moved along ``direction`` to the last position inside the mask and the volume (one point, (1, 3))."""
    norm = float(np.linalg.norm(direction))
    if geo.work is None or norm < 1e-9:
        return point[None]
    step = direction / norm * 0.25 * geo.min_step
    inv = geo.inverse
    lo = np.array([s.start for s in geo.work.inside])
    hi = np.array([s.stop for s in geo.work.inside])
    last = point
    for i in range(1, 4 * int(np.ceil(geo.max_radius * 2 / geo.min_step)) + 8):
        cand = point + i * step
        idx = np.rint(inv[:3, :3] @ cand + inv[:3, 3]).astype(np.int64) - geo.offset
        if np.any(idx < lo) or np.any(idx >= hi) or not geo.work.mask[tuple(idx)]:
            break
        last = cand
    return last[None]


def _valid_samples(arc: np.ndarray, radii: np.ndarray, r_start: float | None, r_end: float | None) -> np.ndarray:
    """Samples clear of the junction spheres at either end (all samples when that leaves none)."""
    ok = np.ones(len(arc), bool)
    if r_start is not None:
        ok &= arc > r_start
    if r_end is not None:
        ok &= arc < arc[-1] - r_end
    return ok if ok.any() else np.ones(len(arc), bool)


def _segment(graph: VoxelGraph, k: int, start: int, end: int, geo: _Geometry) -> Segment:
    e = graph.edges[k]
    path = e.path if e.u == start else e.path[::-1]
    vox = graph.pixels.coords[path] + geo.offset
    pts = _to_mm(vox, geo.affine)
    pts[0], pts[-1] = _node_point(graph, start, geo), _node_point(graph, end, geo)
    pts = _smooth(pts)
    if len(pts) >= 2:
        if graph.nodes[start].kind == "end":
            pts = np.concatenate([_to_surface(pts[0], pts[0] - pts[min(4, len(pts) - 1)], geo), pts])
            vox, path = np.concatenate([vox[:1], vox]), [path[0], *path]
        if graph.nodes[end].kind == "end":
            pts = np.concatenate([pts, _to_surface(pts[-1], pts[-1] - pts[max(-5, -len(pts))], geo)])
            vox, path = np.concatenate([vox, vox[-1:]]), [*path, path[-1]]
    steps = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    radii = geo.radius[path]
    tip = TIP_FACTOR * float(np.median(radii))  # a free end tapers into its rounded tip
    clear = {n: float(geo.radius[graph.nodes[n].pixels].max()) if graph.nodes[n].kind == "junction" else tip
             for n in (start, end) if graph.nodes[n].kind in ("junction", "end")}
    valid = _valid_samples(arc, radii, clear.get(start), clear.get(end))
    chord = float(np.linalg.norm(pts[-1] - pts[0]))
    length = float(arc[-1])
    return Segment(id=-1, start=start, end=end, parent=None, generation=0, voxels=vox, points_mm=pts,
                   radii_mm=radii, arclength_mm=arc, length_mm=length, mean_radius_mm=float(radii[valid].mean()),
                   min_radius_mm=float(radii[valid].min()),
                   tortuosity=length / chord if chord > 1e-6 else float("nan"), valid=valid)


def _running_median(r: np.ndarray, half: int = 2) -> np.ndarray:
    """Median over ``2 * half + 1`` consecutive samples (fewer at the ends): one-voxel dips are not narrowings."""
    if len(r) <= 2:
        return r
    from scipy.ndimage import median_filter

    return median_filter(r, size=min(2 * half + 1, len(r)), mode="nearest")


def _narrowing(seg: Segment, parent: Segment | None, child: Segment | None, settings: TreeSettings,
               min_step: float) -> None:
    """Set the narrowing fields of ``seg`` (see the module doc)."""
    s_parts, r_parts = [seg.arclength_mm[seg.valid]], [seg.radii_mm[seg.valid]]
    if parent is not None:
        s_parts.append(parent.arclength_mm[parent.valid] - parent.length_mm)
        r_parts.append(parent.radii_mm[parent.valid])
    if child is not None:
        s_parts.append(child.arclength_mm[child.valid] + seg.length_mm)
        r_parts.append(child.radii_mm[child.valid])
    seg.narrowing_pct, seg.narrowing_mm, seg.narrowing = 0.0, None, False
    if max(float(r.max()) for r in r_parts) < RESOLVED_VOXELS * min_step:  # no reference can be resolved
        return
    r_parts = [_running_median(r) for r in r_parts]
    s_all, r_all = np.concatenate(s_parts), np.concatenate(r_parts)
    own_s, own_r = s_parts[0], r_parts[0]
    r_med = float(np.median(own_r))
    gap = max(r_med, min_step)
    window = max(settings.window_factor * r_med, settings.min_window_mm)
    best, at = 0.0, None
    for s, r in zip(own_s, own_r):
        sides = [r_all[(s_all >= s - window) & (s_all <= s - gap)], r_all[(s_all >= s + gap) & (s_all <= s + window)]]
        meds = [float(np.median(x)) for x in sides if len(x) >= 2]
        if not meds:
            continue
        ref = float(np.mean(meds))
        if ref < RESOLVED_VOXELS * min_step:  # too thin for a narrowing to be measured
            continue
        drop = 1.0 - r / ref
        if drop > best and ref - r >= 0.5 * min_step:
            best, at = drop, float(s)
    seg.narrowing_pct = 100.0 * best
    seg.narrowing_mm = at
    seg.narrowing = at is not None and best > settings.narrowing_fraction


def measure_graph(graph: VoxelGraph, node_ids: list[int], edge_ids: list[int], geo: _Geometry,
                  settings: TreeSettings) -> tuple[list[Node], list[Segment], int | None]:
    """Nodes and oriented, measured segments of one connected tree."""
    root = _choose_root(graph, node_ids, edge_ids, geo)
    oriented = _orient(graph, edge_ids, root)
    order = sorted(oriented, key=lambda k: (oriented[k][2], k))
    segments: list[Segment] = []
    for i, k in enumerate(order):
        start, end, gen, loop = oriented[k]
        seg = _segment(graph, k, start, end, geo)
        seg.id, seg.generation, seg.loop = i, gen, loop
        segments.append(seg)
    into = {s.end: s for s in segments if not s.loop}
    for seg in segments:
        parent = into.get(seg.start)
        seg.parent = parent.id if parent is not None else None
    leaving: dict[int, list[Segment]] = {}
    for seg in segments:
        if not seg.loop:
            leaving.setdefault(seg.start, []).append(seg)
    for seg in segments:
        if seg.loop:  # a ring closed by touching branches: no vessel continuity to compare along
            continue
        parent = segments[seg.parent] if seg.parent is not None else None
        children = [c for c in leaving.get(seg.end, []) if c.id != seg.id]
        child = max(children, key=lambda c: c.mean_radius_mm) if children else None
        _narrowing(seg, parent, child, settings, geo.min_step)
    degree = {k: 0 for k in node_ids}
    for k in edge_ids:
        degree[graph.edges[k].u] += 1
        degree[graph.edges[k].v] += 1
    kinds = {"end": "end", "junction": "branch", "point": "point", "ring": "ring"}
    tips = {s.end: s.points_mm[-1] for s in segments if graph.nodes[s.end].kind == "end"}
    tips.update({s.start: s.points_mm[0] for s in segments if graph.nodes[s.start].kind == "end"})
    nodes = [Node(id=k, kind="root" if k == root and graph.nodes[k].kind == "end" else kinds[graph.nodes[k].kind],
                  degree=degree[k], point_mm=tips.get(k, _node_point(graph, k, geo)),
                  radius_mm=float(geo.radius[graph.nodes[k].pixels].max())) for k in node_ids]
    return nodes, segments, root


def runs_end_to_end(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of ``lengths`` elements laid end to end in one array: each run's first index, and for every element
    its run and its position within the run."""
    lengths = np.asarray(lengths, dtype=np.int64)
    first = np.cumsum(lengths) - lengths
    run = np.repeat(np.arange(len(lengths)), lengths)
    return first, run, np.arange(int(lengths.sum())) - first[run]


def _surfaces(points: np.ndarray, directions: np.ndarray, geo: _Geometry) -> np.ndarray:
    """:func:`_to_surface` of many points at once, (n, 3): the walks advance together, with the same arithmetic per
    point. The voxel lookup multiplies by the inverse affine's diagonal, which equals its matrix product exactly
    only when the other entries are zero; any other affine walks point by point."""
    inv = geo.inverse[:3, :3]
    if geo.work is None or len(points) == 0 or np.count_nonzero(inv - np.diag(np.diag(inv))):
        return np.concatenate([_to_surface(p, d, geo) for p, d in zip(points, directions)] or [np.zeros((0, 3))])
    out = points.copy()
    norms = np.array([float(np.linalg.norm(d)) for d in directions])
    moving = np.flatnonzero(norms >= 1e-9)
    steps = np.zeros_like(points)
    steps[moving] = directions[moving] / norms[moving, None] * 0.25 * geo.min_step
    scale, shift = np.diag(inv), geo.inverse[:3, 3]
    lo = np.array([s.start for s in geo.work.inside])
    hi = np.array([s.stop for s in geo.work.inside])
    for i in range(1, 4 * int(np.ceil(geo.max_radius * 2 / geo.min_step)) + 8):
        if moving.size == 0:
            break
        cand = points[moving] + i * steps[moving]
        idx = np.rint(cand * scale + shift).astype(np.int64) - geo.offset
        ok = np.all((idx >= lo) & (idx < hi), axis=1)
        ok[ok] = geo.work.mask[tuple(idx[ok].T)]
        out[moving[ok]] = cand[ok]
        moving = moving[ok]
    return out


def _root_first(graph: VoxelGraph, edge_ids: list[int], geo: _Geometry
                ) -> tuple[list[int], list[int], np.ndarray, np.ndarray]:
    """Start nodes, end nodes, the pixels of all edges laid end to end from their starts, and each edge's pixel
    count: an edge starts at the end :func:`_choose_root` picks as the root of its one-edge tree, the far end only
    when its first (up to five) voxels have the larger median radius."""
    edges = [graph.edges[k] for k in edge_ids]
    n = np.array([len(e.path) for e in edges], dtype=np.int64)
    flat = np.fromiter((q for e in edges for q in e.path), np.int64, count=int(n.sum()))
    first, edge_of, step = runs_end_to_end(n)
    radius = geo.radius[flat]
    flip = np.zeros(len(edges), bool)
    heads = np.minimum(n, 5)
    for m in np.unique(heads).tolist():
        which = np.flatnonzero(heads == m)
        near = np.median(radius[first[which][:, None] + np.arange(m)], axis=1)
        far = np.median(radius[(first[which] + n[which] - 1)[:, None] - np.arange(m)], axis=1)
        flip[which] = far > near
    flat = flat[np.where(flip[edge_of], first[edge_of] + n[edge_of] - 1 - step, first[edge_of] + step)]
    starts = [e.v if f else e.u for e, f in zip(edges, flip.tolist())]
    ends = [e.u if f else e.v for e, f in zip(edges, flip.tolist())]
    return starts, ends, flat, n


@dataclass
class Chains:
    """The segments of :func:`measure_chains`, end to end: chain ``i`` is ``[bounds[i], bounds[i + 1])``."""

    voxels: np.ndarray  # (n, 3) int voxel indices in the input grid, root side first
    points_mm: np.ndarray  # (n, 3) smoothed polylines, extended to the surface at both ends
    radii_mm: np.ndarray  # (n,)
    bounds: np.ndarray  # (chains + 1,)


def _smooth_many(points: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """:func:`_smooth` of each run ``points[first[i]:last[i] + 1]``: one convolution over the runs laid end to end,
    each padded as :func:`_smooth` pads it (an output is the same dot product of the same five samples); the
    outputs across two runs are not used."""
    out = points.copy()
    n = last - first + 1
    runs = np.flatnonzero(n >= 3)
    if runs.size == 0:
        return out
    h = SMOOTH_HALF_WINDOW
    start, run_of, local = runs_end_to_end(n[runs] + 2 * h)
    source = first[runs][run_of] + np.clip(local - h, 0, n[runs][run_of] - 1)
    padded = points[source]
    kernel = np.ones(2 * h + 1) / (2 * h + 1)
    smooth = np.stack([np.convolve(padded[:, d], kernel, mode="valid") for d in range(3)], axis=1)
    _, inner, offset = runs_end_to_end(n[runs])
    out[first[runs][inner] + offset] = smooth[start[inner] + offset]
    out[first] = points[first]
    out[last] = points[last]
    return out


def measure_chains(graph: VoxelGraph, edge_ids: list[int], geo: _Geometry) -> Chains:
    """The one segment of each tree that is a single edge between two free ends, exactly as :func:`measure_graph`
    measures it (from the end it picks as the root; the polyline smoothed and extended to the surface at both
    ends), for many such trees at once: speckle is mostly trees of this kind. The polylines are worked out as
    arrays when the affine's 3x3 part is diagonal (then its matrix product is the same multiplication per axis),
    else one by one."""
    starts, ends, flat, n = _root_first(graph, edge_ids, geo)
    lin = geo.affine[:3, :3]
    if not edge_ids or np.count_nonzero(lin - np.diag(np.diag(lin))):
        segs = [_segment(graph, k, start, end, geo) for start, end, k in zip(starts, ends, edge_ids)]
        return Chains(np.concatenate([s.voxels for s in segs] or [np.zeros((0, 3), np.int64)]),
                      np.concatenate([s.points_mm for s in segs] or [np.zeros((0, 3))]),
                      np.concatenate([s.radii_mm for s in segs] or [np.zeros(0)]),
                      np.cumsum([0] + [len(s.voxels) for s in segs]))
    first = np.cumsum(n) - n
    last = first + n - 1
    vox = graph.pixels.coords[flat] + geo.offset
    scale, shift = np.diag(lin), geo.affine[:3, 3]
    pts = vox * scale + shift  # _to_mm
    for nodes, at in ((starts, first), (ends, last)):
        pixels = [graph.nodes[k].pixels for k in nodes]
        single = np.array([len(p) == 1 for p in pixels])
        pts[at[single]] = (graph.pixels.coords[[p[0] for p, one in zip(pixels, single) if one]] + geo.offset) * scale \
            + shift
        for i in np.flatnonzero(~single).tolist():
            pts[at[i]] = _node_point(graph, nodes[i], geo)
    pts = _smooth_many(pts, first, last)
    head = _surfaces(pts[first], pts[first] - pts[first + np.minimum(4, n - 1)], geo)
    behind = np.where((n >= 5)[:, None], pts[np.maximum(last - 4, 0)], head)
    tail = _surfaces(pts[last], pts[last] - behind, geo)
    # each chain: its first voxel twice, the chain, its last voxel twice; the polyline from ``head`` to ``tail``
    size = n + 2
    bounds = np.concatenate([[0], np.cumsum(size)])
    _, chain_of, local = runs_end_to_end(size)
    source = first[chain_of] + np.clip(local - 1, 0, n[chain_of] - 1)
    points = pts[source]
    points[bounds[:-1]] = head
    points[bounds[1:] - 1] = tail
    return Chains(vox[source], points, geo.radius[flat[source]], bounds)
