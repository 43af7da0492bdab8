"""Measuring a traced centreline graph: polylines in scanner mm, cross-section radii, length, tortuosity, generation.

One path for everything, from one tree to the thousands of speckle pieces of a noisy mask (:func:`measure_trees`;
:func:`measure_graph` is a batch of one): the polylines of all edges are built, smoothed and extended together, and
their cross-sections sampled together.

Conventions (documented in docs/tree.md):

* **polyline**: the voxel chain in mm, smoothed by a moving average over five voxels (ends fixed) so that digital
  staircases do not lengthen oblique vessels; the ends sit on the node positions (a junction node is the mean of
  its voxels), and a free end is extended along its direction to the mask's surface. **length** is measured along
  it, **tortuosity** is length / end-to-end distance (1 = straight).
* **samples**: with cross-sections, the polyline is resampled every half of the finest voxel (its length
  unchanged); without, one sample per skeleton voxel.
* **radius**: the equivalent radius ``sqrt(area / π)`` of the lumen's cross-section perpendicular to the smoothed
  centreline, with its minimum and maximum diameter (:mod:`segvol.tree.sections`); without sections (the
  centreline metrics), the distance-transform radius of the skeleton voxel.
* **junction zone**: samples within a junction's radius of it, and those near it whose section runs open into
  another branch or is elongated, and one vessel radius beyond; any section that runs open or finds no lumen;
  **valid** samples lie clear of junction zones and of the last 1.5 radii before a
  free end (all samples when that leaves none). **mean / min radius** are taken over the valid samples.
* **root**: the free end of the widest terminal segment (the ostium of a coronary tree). Every segment is oriented
  away from it; **generation** is 1 for a segment at the root and one more after every branching.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from segvol.tree.distance import runs_end_to_end
from segvol.tree.graph import VoxelGraph
from segvol.tree.records import Node, Segment
from segvol.tree.sections import cross_sections, tangents

__all__ = ["Geometry", "measure_trees", "measure_graph", "to_mm", "SMOOTH_HALF_WINDOW"]

SMOOTH_HALF_WINDOW = 2  # moving average over 2 * 2 + 1 voxels
TIP_FACTOR = 1.5  # samples within this many radii of a free end lie in its rounded tip
ELONGATED = 1.6  # a section near a junction this much longer than wide cuts into the other branch
JUNCTION_REACH = 3.0  # ... near: within this many junction radii
TANGENT_MM = 1.0  # the centreline's tangent from its copy smoothed over this (Gaussian sigma)
SAMPLE_VOXELS = 1.0  # cross-sections every finest voxel along the centreline


def to_mm(idx: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return np.asarray(idx, dtype=np.float64) @ affine[:3, :3].T + affine[:3, 3]


@dataclass
class Geometry:
    """What the measurement needs about the grid and the graph's pixels."""

    affine: np.ndarray
    offset: np.ndarray  # work index -> input voxel index
    radius: np.ndarray  # per pixel, mm (distance transform)
    spacing: np.ndarray  # voxel size per axis, mm
    work: Any = None  # segvol.tree.thinning.Work: the padded mask, to extend free ends and to cut sections
    prob: np.ndarray | None = None  # a probability map on the input grid, cut instead of the mask when given
    fork: bool = False  # cut half of the sections in a forked child (the same numbers; sections.cross_sections)

    def __post_init__(self) -> None:
        self.min_step = float(np.min(self.spacing))
        self.inverse = np.linalg.inv(self.affine)
        self.max_radius = float(self.radius.max()) if len(self.radius) else 0.0

    def field(self) -> tuple[np.ndarray, np.ndarray, str]:
        """The array the sections cut, scanner mm -> its index, and the mode beyond it."""
        if self.prob is not None:
            return self.prob, self.inverse, "nearest"
        shift = np.eye(4)
        shift[:3, 3] = -self.offset
        return self.work.mask.view(np.uint8), shift @ self.inverse, "constant"


def _orient(graph: VoxelGraph, edge_ids: list[int], root: int | None) -> dict[int, tuple[int, int, int, bool]]:
    """Breadth-first from the root: per edge (start node, end node, generation, closes a loop)."""
    out: dict[int, tuple[int, int, int, bool]] = {}
    inc: dict[int, list[int]] = {}
    for k in edge_ids:
        e = graph.edges[k]
        inc.setdefault(e.u, []).append(k)
        inc.setdefault(e.v, []).append(k)
    starts = ([root] if root is not None else []) + sorted(inc)  # other parts (without ends) are reached too
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
                out[k] = (n, other, depth[n] + 1, (other in depth and other != n) or e.u == e.v)
                if other not in depth:
                    depth[other] = depth[n] + 1
                    queue.append(other)
    return out


def _choose_root(graph: VoxelGraph, node_ids: list[int], edge_ids: list[int], geo: Geometry) -> int | None:
    """The free end of the widest terminal segment (the median radius along the whole segment: a coronary tree's
    trunk is wider than any distal branch, while the few voxels at its cut ostium can read thin, and a blob at a
    distal tip wide); stubs shorter than their own diameter (junction blobs) count only when nothing else ends.
    Of a segment with two free ends, the one whose first voxels are widest."""
    candidates: list[tuple[bool, float, float, int]] = []  # (long enough, median radius, first voxels, node)
    for k in edge_ids:
        e = graph.edges[k]
        ends = [(node, path) for node, path in ((e.u, e.path), (e.v, e.path[::-1]))
                if graph.nodes[node].kind == "end"]
        if not ends:
            continue
        radius = float(np.median(geo.radius[e.path]))
        steps = np.diff(graph.pixels.coords[e.path], axis=0) * geo.spacing
        long_enough = float(np.linalg.norm(steps, axis=1).sum()) >= 2.0 * radius
        for node, path in ends:
            candidates.append((long_enough, radius, float(np.median(geo.radius[path[:5]])), node))
    if not candidates:
        return node_ids[0] if node_ids else None
    return max(candidates, key=lambda c: c[:3])[3]


def _smooth_runs(points: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Moving average over ``2 * SMOOTH_HALF_WINDOW + 1`` samples of each run ``points[first[i]:last[i] + 1]``
    (ends repeated as padding, the end samples kept): one convolution over the runs laid end to end."""
    out = points.copy()
    n = last - first + 1
    runs = np.flatnonzero(n >= 3)
    if runs.size == 0:
        return out
    h = SMOOTH_HALF_WINDOW
    start, run_of, local = runs_end_to_end(n[runs] + 2 * h)
    padded = points[first[runs][run_of] + np.clip(local - h, 0, n[runs][run_of] - 1)]
    kernel = np.ones(2 * h + 1) / (2 * h + 1)
    smooth = np.stack([np.convolve(padded[:, d], kernel, mode="valid") for d in range(3)], axis=1)
    _, inner, offset = runs_end_to_end(n[runs])
    out[first[runs][inner] + offset] = smooth[start[inner] + offset]
    out[first], out[last] = points[first], points[last]
    return out


def _surfaces(points: np.ndarray, directions: np.ndarray, geo: Geometry) -> np.ndarray:
    """Each of ``points`` moved along its direction, in steps of a quarter voxel, to the last position inside the
    mask and the volume (all walks advance together)."""
    out = points.copy()
    norms = np.linalg.norm(directions, axis=1)
    moving = np.flatnonzero(norms >= 1e-9)
    if geo.work is None or moving.size == 0:
        return out
    steps = np.zeros_like(points)
    steps[moving] = directions[moving] / norms[moving, None] * 0.25 * geo.min_step
    lo = np.array([s.start for s in geo.work.inside])
    hi = np.array([s.stop for s in geo.work.inside])
    for i in range(1, 4 * int(np.ceil(geo.max_radius * 2 / geo.min_step)) + 8):
        if moving.size == 0:
            break
        cand = points[moving] + i * steps[moving]
        idx = np.rint(to_mm(cand, geo.inverse)).astype(np.int64) - geo.offset
        ok = np.all((idx >= lo) & (idx < hi), axis=1)
        ok[ok] = geo.work.mask[tuple(idx[ok].T)]
        out[moving[ok]] = cand[ok]
        moving = moving[ok]
    return out


def _polylines(graph: VoxelGraph, oriented: list[tuple[int, int, int]], geo: Geometry
               ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(voxels, polyline in mm, pixel indices) of every edge ``(id, start node, end node)`` (see the module doc)."""
    paths = [graph.edges[k].path if graph.edges[k].u == s else graph.edges[k].path[::-1] for k, s, _ in oriented]
    n = np.array([len(p) for p in paths], dtype=np.int64)
    if not len(n):
        return []
    flat = np.fromiter((q for p in paths for q in p), np.int64, count=int(n.sum()))
    first = np.cumsum(n) - n
    last = first + n - 1
    vox = graph.pixels.coords[flat] + geo.offset
    pts = to_mm(vox, geo.affine)
    for at, col in ((first, 1), (last, 2)):
        for i, node in enumerate(o[col] for o in oriented):
            pix = graph.nodes[node].pixels
            if len(pix) > 1:  # a junction cluster: its mean
                pts[at[i]] = to_mm((graph.pixels.coords[pix] + geo.offset).mean(axis=0), geo.affine)
    pts = _smooth_runs(pts, first, last)
    free_head = np.array([graph.nodes[s].kind == "end" for _, s, _ in oriented]) & (n >= 2)
    free_tail = np.array([graph.nodes[e].kind == "end" for _, _, e in oriented]) & (n >= 2)
    head = _surfaces(pts[first], pts[first] - pts[first + np.minimum(4, n - 1)], geo)
    behind = np.where(((n >= 5) | ~free_head)[:, None], pts[np.maximum(last - 4, first)], head)
    tail = _surfaces(pts[last], pts[last] - behind, geo)
    out = []
    for i in range(len(n)):
        sl = slice(first[i], last[i] + 1)
        p, v, f = pts[sl], vox[sl], flat[sl]
        if free_head[i]:
            p, v, f = np.concatenate([head[i:i + 1], p]), np.concatenate([v[:1], v]), np.concatenate([f[:1], f])
        if free_tail[i]:
            p, v, f = np.concatenate([p, tail[i:i + 1]]), np.concatenate([v, v[-1:]]), np.concatenate([f, f[-1:]])
        out.append((v, p, f))
    return out


def _zones(graph: VoxelGraph, seg: Segment, geo: Geometry, is_open: np.ndarray | None,
           elongation: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(junction zone, valid) per sample of ``seg`` (see the module doc)."""
    arc, n = seg.arclength_mm, len(seg.arclength_mm)
    junction, tip = np.zeros(n, bool), np.zeros(n, bool)
    r_seg = float(np.median(seg.radii_mm))
    for node, dist in ((seg.start, arc), (seg.end, arc[-1] - arc)):
        kind = graph.nodes[node].kind
        if kind == "end":
            tip |= dist < TIP_FACTOR * r_seg
        elif kind == "junction":
            edge = float(geo.radius[graph.nodes[node].pixels].max())
            if is_open is not None and elongation is not None:
                near = dist < max(JUNCTION_REACH * edge, 4.0 * r_seg)
                spill = near & (is_open | (elongation > ELONGATED))
                edge = max(edge, float(dist[spill].max(initial=0.0)) + r_seg)  # and one radius beyond
            junction |= dist <= edge
    if is_open is not None:  # a section that runs into another vessel, or finds no lumen
        junction |= is_open
    valid = ~(junction | tip)
    return junction, (valid if valid.any() else np.ones(n, bool))


def _segment(k: int, start: int, end: int, line: tuple[np.ndarray, np.ndarray, np.ndarray],
             geo: Geometry) -> Segment:
    vox, pts, pix = line
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    chord = float(np.linalg.norm(pts[-1] - pts[0]))
    length = float(arc[-1])
    radii = geo.radius[pix]
    return Segment(id=k, start=start, end=end, parent=None, generation=0, voxels=vox, points_mm=pts,
                   radii_mm=radii, arclength_mm=arc, length_mm=length, mean_radius_mm=0.0, min_radius_mm=0.0,
                   tortuosity=length / chord if chord > 1e-6 else float("nan"),
                   diameter_min_mm=2 * radii, diameter_max_mm=2 * radii)


def _resample(seg: Segment, pix: np.ndarray, step: float) -> np.ndarray:
    """``seg``'s samples every ``step`` mm along its polyline (the ends kept, so the length is unchanged); each new
    sample takes the voxel and pixel of the nearest old one. Returns the pixels."""
    arc = seg.arclength_mm
    if arc[-1] <= step:
        return pix
    s = np.linspace(0.0, arc[-1], int(np.ceil(arc[-1] / step)) + 1)
    near = np.clip(np.searchsorted(arc, s), 1, len(arc) - 1)
    near -= (s - arc[near - 1]) < (arc[near] - s)
    seg.points_mm = np.stack([np.interp(s, arc, seg.points_mm[:, d]) for d in range(3)], axis=1)
    seg.voxels, seg.radii_mm, seg.arclength_mm = seg.voxels[near], seg.radii_mm[near], s
    return pix[near]


def _cut_sections(segments: list[Segment], pixels: list[np.ndarray], geo: Geometry) -> list[tuple[Any, Any]]:
    """Cross-sections of every segment at once; sets radii and diameters, returns (open, elongation) per segment."""
    if not segments:
        return []
    field, to_index, mode = geo.field()
    bounds = np.cumsum([0] + [len(s.points_mm) for s in segments])
    points = np.concatenate([s.points_mm for s in segments])
    tang = tangents(points, TANGENT_MM, bounds)
    reach = 2.5 * np.concatenate([geo.radius[p] for p in pixels]) + 2.0 * float(np.max(geo.spacing))
    cut = cross_sections(field, to_index, points, tang, reach, mode=mode, fork=geo.fork)
    out = []
    for s, a, b in zip(segments, bounds[:-1], bounds[1:]):
        s.radii_mm = cut.radius[a:b]
        s.diameter_min_mm, s.diameter_max_mm = cut.diameter_min[a:b], cut.diameter_max[a:b]
        out.append((cut.open[a:b], cut.diameter_max[a:b] / np.maximum(cut.diameter_min[a:b], 1e-9)))
    return out


def _link(segments: list[Segment]) -> None:
    """Parent of every segment: the one (not closing a loop) that ends where it starts."""
    into = {s.end: s for s in segments if not s.loop}
    for seg in segments:
        parent = into.get(seg.start)
        seg.parent = parent.id if parent is not None else None


def _nodes(graph: VoxelGraph, node_ids: list[int], edge_ids: list[int], segments: list[Segment], root: int | None,
           geo: Geometry) -> list[Node]:
    degree = dict.fromkeys(node_ids, 0)
    for k in edge_ids:
        degree[graph.edges[k].u] += 1
        degree[graph.edges[k].v] += 1
    kinds = {"end": "end", "junction": "branch", "point": "point", "ring": "ring"}
    tips = {s.end: s.points_mm[-1] for s in segments if graph.nodes[s.end].kind == "end"}
    tips.update({s.start: s.points_mm[0] for s in segments if graph.nodes[s.start].kind == "end"})
    out = []
    for k in node_ids:
        node = graph.nodes[k]
        point = tips.get(k)
        if point is None:
            point = to_mm((graph.pixels.coords[node.pixels] + geo.offset).mean(axis=0), geo.affine)
        out.append(Node(id=k, kind="root" if k == root and node.kind == "end" else kinds[node.kind],
                        degree=degree[k], point_mm=point, radius_mm=float(geo.radius[node.pixels].max())))
    return out


def measure_trees(graph: VoxelGraph, trees: list[tuple[list[int], list[int]]], geo: Geometry, *,
                  sections: bool = True) -> list[tuple[list[Node], list[Segment], int | None]]:
    """Nodes, oriented and measured segments, and root of each tree ``(node ids, edge ids)`` (see the module
    doc); with ``sections`` false the radii are those of the distance transform (faster, for the metrics)."""
    plans = []
    for node_ids, edge_ids in trees:
        root = _choose_root(graph, node_ids, edge_ids, geo)
        oriented = _orient(graph, edge_ids, root)
        plans.append((root, oriented, sorted(oriented, key=lambda k: (oriented[k][2], k))))
    order = [(k, o[k][0], o[k][1]) for _, o, ks in plans for k in ks]
    lines = _polylines(graph, order, geo)
    segments = [_segment(k, s, e, line, geo) for (k, s, e), line in zip(order, lines)]
    shapes = []
    if sections:
        pixels = [_resample(seg, line[2], SAMPLE_VOXELS * geo.min_step) for seg, line in zip(segments, lines)]
        shapes = _cut_sections(segments, pixels, geo)
    for i, seg in enumerate(segments):
        is_open, elongation = shapes[i] if shapes else (None, None)
        seg.junction, seg.valid = _zones(graph, seg, geo, is_open, elongation)
        seg.mean_radius_mm = float(seg.radii_mm[seg.valid].mean())
        seg.min_radius_mm = float(seg.radii_mm[seg.valid].min())
        seg.reference_mm = np.full(len(seg.radii_mm), np.nan)
    out, at = [], 0
    for (node_ids, edge_ids), (root, oriented, ks) in zip(trees, plans):
        mine = segments[at:at + len(ks)]
        at += len(ks)
        for i, (k, seg) in enumerate(zip(ks, mine)):
            seg.id, seg.generation, seg.loop = i, oriented[k][2], oriented[k][3]
        _link(mine)
        out.append((_nodes(graph, node_ids, edge_ids, mine, root, geo), mine, root))
    return out


def measure_graph(graph: VoxelGraph, node_ids: list[int], edge_ids: list[int], geo: Geometry, *,
                  sections: bool = True) -> tuple[list[Node], list[Segment], int | None]:
    """:func:`measure_trees` of one tree."""
    return measure_trees(graph, [(node_ids, edge_ids)], geo, sections=sections)[0]
