"""From a binary mask to a pruned centreline graph in voxel indices: crop, skeleton, pixel graph, nodes and edges.

The steps, each cheap on a full-size CT because everything runs in the mask's bounding box:

1. :func:`prepare` crops the mask to its bounding box, fills enclosed cavities, and pads it. Where the mask touches
   the volume border the last slice is repeated outwards (a vessel cut by the field of view continues), so that
   the skeleton reaches the border and the distance transform sees no false wall there; elsewhere one zero voxel.
2. :func:`skeletonize` (scikit-image, Lee's 3D thinning) on that array, kept inside the original volume.
3. :func:`pixel_graph`: 26-neighbour adjacency of the skeleton voxels; a diagonal link is dropped when two shorter
   links already join its ends through a common neighbour (the corners of digital staircases), so that plain curve
   voxels have exactly two neighbours.
4. :func:`trace_graph`: nodes at voxels with one neighbour (ends), none (a single voxel) or three and more
   (junctions; touching junction voxels form one node); edges are the ordered voxel chains between them. A closed
   ring without a node gets one.
5. :func:`prune_spurs`: junctions joined inside their spheres are merged (:func:`contract_links`, a work queue that
   re-examines only the edges a change can affect); terminal edges shorter than ``spur_factor`` times the radius at
   their junction are removed, shortest first, and nodes left with two edges are dissolved into one edge, until
   nothing changes.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

__all__ = ["Work", "prepare", "skeleton_of", "PixelGraph", "pixel_graph", "GraphNode", "GraphEdge", "VoxelGraph",
           "trace_graph", "contract_links", "prune_spurs", "repair_skeleton", "keep_inside", "MAX_BORDER_PAD"]

SMALL_REPAIR = 16  # components whose re-thinning window is no wider are re-thinned together
MAX_BORDER_PAD = 48  # voxels repeated beyond a border the mask touches (enough for vessels up to ~45 voxels wide)
_OFFSETS = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)
                     if (a, b, c) > (0, 0, 0)], dtype=np.int64)  # the 13 forward neighbours


@dataclass
class Work:
    """The cropped, padded mask and how its indices map back: ``original = work index + offset``."""

    mask: np.ndarray  # bool, padded
    offset: np.ndarray  # (3,) int
    inside: tuple[slice, ...]  # the part of ``mask`` that lies in the original volume


def _border_pad(face: np.ndarray, spacing_face: list[float], step: float) -> int:
    """Voxels to repeat beyond a border face: the widest in-plane radius on the face, in voxels along the normal."""
    if not face.any():
        return 0
    radius = float(ndimage.distance_transform_edt(np.pad(face, 1), sampling=spacing_face).max())
    return int(min(np.ceil(radius / step) + 3, MAX_BORDER_PAD))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes(mask)``: the background parts (6-connected) that reach no face of the array are
    filled; found by labelling the background once instead of growing it from the faces step by step."""
    background, n = ndimage.label(~mask)
    outside = np.zeros(n + 1, bool)
    for ax in range(3):
        for end in (0, -1):
            outside[np.take(background, end, axis=ax)] = True
    outside[0] = False
    return ~outside[background]


def prepare(mask: np.ndarray, spacing: np.ndarray) -> Work | None:
    """Crop to the bounding box, fill cavities, pad (see the module doc); None for an empty mask."""
    coords = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(c.size == 0 for c in coords):
        return None
    lo = np.array([c[0] for c in coords])
    hi = np.array([c[-1] + 1 for c in coords])
    arr = fill_holes(mask[tuple(slice(a, b) for a, b in zip(lo, hi))])
    pads = []
    for ax in range(3):
        plane = [s for a, s in enumerate(spacing) if a != ax]
        before = _border_pad(np.take(arr, 0, axis=ax), plane, spacing[ax]) if lo[ax] == 0 else 0
        after = _border_pad(np.take(arr, -1, axis=ax), plane, spacing[ax]) if hi[ax] == mask.shape[ax] else 0
        pads.append((before, after))
    arr = np.pad(arr, pads, mode="edge")
    arr = np.pad(arr, 1)
    inside = tuple(slice(1 + b, 1 + b + (h - lo_)) for (b, _), lo_, h in zip(pads, lo, hi))
    offset = lo - np.array([1 + b for b, _ in pads])
    return Work(np.ascontiguousarray(arr), offset.astype(np.int64), inside)


def skeleton_of(work: Work, *, inside_only: bool = True) -> np.ndarray:
    """Lee's 3D thinning of the work mask (bool, work shape), kept inside the original volume unless not
    ``inside_only`` (see :func:`keep_inside`)."""
    from skimage.morphology import skeletonize

    skel = skeletonize(work.mask).astype(bool)
    return keep_inside(skel, work) if inside_only else skel


def keep_inside(skel: np.ndarray, work: Work) -> np.ndarray:
    """``skel`` without its voxels in the padding beyond the volume's border."""
    kept = np.zeros_like(skel)
    kept[work.inside] = skel[work.inside]
    return kept


def _skeleton_pieces(skel: np.ndarray) -> int:
    return int(ndimage.label(skel, ndimage.generate_binary_structure(3, 3))[1])


def _shifted(comp: np.ndarray, axis: int) -> np.ndarray:
    """``comp`` with a one-voxel layer added on its high side along ``axis``."""
    shifted = comp.copy()
    sl = [slice(None)] * 3
    sl[axis] = slice(1, None)
    src = [slice(None)] * 3
    src[axis] = slice(None, -1)
    shifted[tuple(sl)] |= comp[tuple(src)]
    return shifted


def _repair_one(skel: np.ndarray, comp: np.ndarray, grown: tuple[slice, ...]) -> None:
    """Re-thin the component ``comp`` (a mask of the window ``grown`` of ``skel``) as :func:`repair_skeleton`
    says, one shift after the other."""
    from skimage.morphology import skeletonize

    for axis in range(3):
        again = skeletonize(_shifted(comp, axis)).astype(bool) & comp
        if _skeleton_pieces(again) == 1:
            region = skel[grown]
            region[comp] = again[comp]
            return


def _repair_many(skel: np.ndarray, windows: list[tuple[np.ndarray, tuple[slice, ...]]]) -> None:
    """:func:`_repair_one` for many small components at once: windows of one cross-section are stacked along the
    first axis with a layer of zeros between them and thinned together. Lee's thinning decides on each voxel from
    its 26 neighbours and pads the array with zeros, so a window's result is the same as alone."""
    from skimage.morphology import skeletonize

    left = list(range(len(windows)))
    for axis in range(3):
        groups: dict[tuple[int, int], list[int]] = {}
        for i in left:
            groups.setdefault(windows[i][0].shape[1:], []).append(i)
        failed = []
        for (ny, nz), members in groups.items():
            starts = np.cumsum([0] + [windows[i][0].shape[0] + 1 for i in members])
            comp = np.zeros((int(starts[-1]), ny, nz), bool)
            shifted = np.zeros_like(comp)
            for i, at in zip(members, starts[:-1].tolist()):
                c = windows[i][0]
                comp[at:at + c.shape[0]] = c
                shifted[at:at + c.shape[0]] = _shifted(c, axis)
            again = skeletonize(shifted).astype(bool) & comp
            pieces, n = ndimage.label(again, ndimage.generate_binary_structure(3, 3))
            first = np.array([box[0].start for box in ndimage.find_objects(pieces)], np.int64)  # a layer of each
            count = np.bincount(np.searchsorted(starts, first, side="right") - 1, minlength=len(members))
            for j, (i, at) in enumerate(zip(members, starts[:-1].tolist())):
                c, grown = windows[i]
                if count[j] != 1:
                    failed.append(i)
                    continue
                region = skel[grown]
                region[c] = again[at:at + c.shape[0]][c]
        left = sorted(failed)


def repair_skeleton(skel: np.ndarray, labels: np.ndarray, which: list[int]) -> np.ndarray:
    """Re-thin components whose skeleton vanished or fell apart (scikit-image issue #3757: Lee's thinning can
    delete a tube whose cross-section is an even square, as nearest-neighbour upsampled masks have).

    Such a component is thinned again with a one-voxel layer added on one side (along x, else y, else z), which
    breaks the symmetry and shifts the centreline by half a voxel at most; the first result in one piece is kept.
    ``skel`` is the thinning of the whole work mask, padding included (:func:`skeleton_of` with ``inside_only``
    false): cut at the volume's border, a skeleton may lie in several pieces that the padding joins. Small
    components (speckle: thousands of them) are re-thinned together (:func:`_repair_many`).
    """
    # a piece of skeleton lies in one component: count the pieces of every component at once
    pieces, n = ndimage.label(skel, ndimage.generate_binary_structure(3, 3))
    at = np.flatnonzero(pieces)
    piece_of = pieces.ravel()[at]
    component = np.bincount(piece_of, weights=labels.ravel()[at], minlength=n + 1)[1:]  # summed over a piece ...
    component = (component / np.bincount(piece_of, minlength=n + 1)[1:]).round().astype(np.int64)  # ... mean
    per_component = np.bincount(component, minlength=int(labels.max()) + 1)
    boxes = ndimage.find_objects(labels)
    small = []
    for lab in which:
        box = boxes[lab - 1]
        if box is None or per_component[lab] == 1:
            continue
        grown = tuple(slice(max(b.start - 2, 0), b.stop + 2) for b in box)
        comp = labels[grown] == lab
        if max(comp.shape) <= SMALL_REPAIR:
            small.append((comp, grown))
        else:
            _repair_one(skel, comp, grown)
    _repair_many(skel, small)
    return skel


@dataclass
class PixelGraph:
    """Skeleton voxels (work indices) and their neighbours after removing staircase shortcuts."""

    coords: np.ndarray  # (N, 3) int
    neighbours: list[list[int]]


def pixel_graph(skel: np.ndarray) -> PixelGraph:
    """26-neighbour graph of the skeleton voxels (see the module doc for the dropped diagonals)."""
    coords = np.argwhere(skel)
    n = len(coords)
    index = np.full(skel.shape, -1, dtype=np.int32 if n < 2**31 else np.int64)  # a full-grid lookup: keep it small
    index[tuple(coords.T)] = np.arange(n)
    shape = np.array(skel.shape)
    links: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for off in _OFFSETS:
        q = coords + off
        ok = np.all((q >= 0) & (q < shape), axis=1)
        j = np.full(n, -1, dtype=np.int64)
        j[ok] = index[tuple(q[ok].T)]
        hit = j >= 0
        links.append((np.flatnonzero(hit), j[hit], np.full(int(hit.sum()), int(off @ off))))
    src = np.concatenate([a for a, _, _ in links]) if links else np.zeros(0, np.int64)
    dst = np.concatenate([b for _, b, _ in links]) if links else np.zeros(0, np.int64)
    sq = np.concatenate([c for _, _, c in links]) if links else np.zeros(0, np.int64)
    near: list[dict[int, int]] = [{} for _ in range(n)]
    for a, b, s in zip(src.tolist(), dst.tolist(), sq.tolist()):
        near[a][b] = s
        near[b][a] = s
    for a, b, s in zip(src.tolist(), dst.tolist(), sq.tolist()):
        if s > 1 and b in near[a] and any(near[a][k] < s and near[b].get(k, 99) < s for k in near[a] if k != b):
            del near[a][b], near[b][a]
    return PixelGraph(coords, [list(d) for d in near])


@dataclass
class GraphNode:
    pixels: list[int]  # pixel indices (several for a junction cluster)
    kind: str  # "end", "junction", "point" (an isolated voxel) or "ring" (a node placed on a closed loop)


@dataclass
class GraphEdge:
    u: int
    v: int
    path: list[int]  # pixel indices from a pixel of node u to a pixel of node v


@dataclass
class VoxelGraph:
    """Nodes and edges over the pixels of a :class:`PixelGraph`.

    Edges are added and removed through :meth:`add_edge`, :meth:`pop_edge` and :meth:`relink`, which keep a
    node -> incident edges index; edge ids only grow, so the order of ``edges`` is the order of the ids.
    """

    pixels: PixelGraph
    nodes: dict[int, GraphNode] = field(default_factory=dict)
    edges: dict[int, GraphEdge] = field(default_factory=dict)
    _at: dict[int, set[int]] = field(default_factory=dict, repr=False)  # node -> ids of the edges touching it
    _next: int = field(default=0, repr=False)

    def add_edge(self, u: int, v: int, path: list[int]) -> int:
        k = self._next
        self._next += 1
        self.edges[k] = GraphEdge(u, v, path)
        self._at.setdefault(u, set()).add(k)
        self._at.setdefault(v, set()).add(k)
        return k

    def pop_edge(self, k: int) -> GraphEdge:
        e = self.edges.pop(k)
        self._at[e.u].discard(k)
        self._at[e.v].discard(k)
        return e

    def relink(self, old: int, new: int) -> None:
        """Move every edge end at node ``old`` to node ``new``."""
        for k in self._at.pop(old, set()):
            e = self.edges[k]
            e.u = new if e.u == old else e.u
            e.v = new if e.v == old else e.v
            self._at.setdefault(new, set()).add(k)

    def incident(self, node: int) -> list[int]:
        """Ids of the edges at ``node`` in id order, a loop onto it twice."""
        return [k for k in sorted(self._at.get(node, ())) for end in (self.edges[k].u, self.edges[k].v)
                if end == node]

    def links(self, node: int) -> list[tuple[int, int]]:
        """(edge, node at its other end) for every edge at ``node``."""
        out = []
        for k in self._at.get(node, ()):
            e = self.edges[k]
            out.append((k, e.v if e.u == node else e.u))
        return out


def _node_pixels(pg: PixelGraph) -> dict[int, GraphNode]:
    degree = np.array([len(nb) for nb in pg.neighbours])
    nodes: dict[int, GraphNode] = {}
    junction = set(np.flatnonzero(degree >= 3).tolist())
    seen: set[int] = set()
    for start in sorted(junction):  # touching junction voxels form one node
        if start in seen:
            continue
        cluster, stack = [], [start]
        seen.add(start)
        while stack:
            p = stack.pop()
            cluster.append(p)
            for q in pg.neighbours[p]:
                if q in junction and q not in seen:
                    seen.add(q)
                    stack.append(q)
        nodes[len(nodes)] = GraphNode(sorted(cluster), "junction")
    for p in np.flatnonzero(degree <= 1).tolist():
        nodes[len(nodes)] = GraphNode([p], "end" if degree[p] == 1 else "point")
    return nodes


def _walk(pg: PixelGraph, node_of: np.ndarray, start: int, first: int) -> list[int]:
    path, prev, cur = [start, first], start, first
    while node_of[cur] < 0:
        nxt = next((q for q in pg.neighbours[cur] if q != prev), None)
        if nxt is None:  # cannot happen for a degree-2 voxel; stop safely
            break
        path.append(nxt)
        prev, cur = cur, nxt
        if cur == start:
            break
    return path


def trace_graph(pg: PixelGraph) -> VoxelGraph:
    """Nodes and edges of the pixel graph (see the module doc)."""
    graph = VoxelGraph(pg, _node_pixels(pg))
    node_of = np.full(len(pg.coords), -1, dtype=np.int64)
    for k, node in graph.nodes.items():
        node_of[node.pixels] = k
    walked: set[tuple[int, int]] = set()
    on_edge = np.zeros(len(pg.coords), dtype=bool)

    def trace_from(k: int) -> None:
        for p in graph.nodes[k].pixels:
            for q in pg.neighbours[p]:
                if node_of[q] == k or (p, q) in walked:
                    continue
                path = _walk(pg, node_of, p, q)
                walked.update({(path[0], path[1]), (path[-1], path[-2])})
                on_edge[path] = True
                graph.add_edge(k, int(node_of[path[-1]]), path)

    for k in list(graph.nodes):
        trace_from(k)
    for p in range(len(pg.coords)):  # closed rings without any node
        if not on_edge[p] and node_of[p] < 0:
            k = len(graph.nodes)
            graph.nodes[k] = GraphNode([p], "ring")
            node_of[p] = k
            trace_from(k)
    return graph


def _path_length(coords_mm: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(coords_mm, axis=0), axis=1).sum()) if len(coords_mm) > 1 else 0.0


class _Lengths(dict):
    """Edge id -> polyline length in mm, measured on first use (edge ids are never reused)."""

    def __init__(self, graph: VoxelGraph, coords_mm: np.ndarray) -> None:
        super().__init__()
        self.graph, self.coords_mm = graph, coords_mm

    def __missing__(self, k: int) -> float:
        value = self[k] = _path_length(self.coords_mm[self.graph.edges[k].path])
        return value


def _merge_through(graph: VoxelGraph, node: int) -> int | None:
    """Dissolve a node with exactly two edges (not a loop onto itself) into one edge; returns the new edge's id."""
    inc = graph.incident(node)
    if len(inc) != 2 or inc[0] == inc[1] or graph.nodes[node].kind == "ring":
        return None
    a, b = graph.pop_edge(inc[0]), graph.pop_edge(inc[1])
    pa = a.path if a.v == node else a.path[::-1]  # ... -> node
    pb = b.path if b.u == node else b.path[::-1]  # node -> ...
    ua = a.u if a.v == node else a.v
    vb = b.v if b.u == node else b.u
    joined = pa + (pb[1:] if pb[0] == pa[-1] else pb)
    del graph.nodes[node]
    graph._at.pop(node, None)
    return graph.add_edge(ua, vb, joined)


def _settle(graph: VoxelGraph, node: int) -> int | None:
    """Give a junction that lost edges the kind its degree says, and dissolve it when two edges are left (the id
    of the edge that replaces them, else None)."""
    if len(graph._at.get(node, ())) > 2:  # three edges or more: stays a junction
        return None
    left = len(graph.incident(node))
    if left <= 1:
        graph.nodes[node].kind = "end" if left == 1 else "point"
    return _merge_through(graph, node)


def _within(graph: VoxelGraph, sources: set[int], lengths: _Lengths, limit: float, *, avoid: int | None = None,
            target: int | None = None) -> dict[int, float]:
    """Nodes no further than ``limit`` mm along the graph from any of ``sources``, with their distance, not
    walking edge ``avoid``; the search stops once ``target``'s distance is final."""
    best = dict.fromkeys(sources, 0.0)
    heap = [(0.0, n) for n in sources]
    while heap:
        d, n = heapq.heappop(heap)
        if n == target:
            break
        if d > best[n]:
            continue
        for k, m in graph.links(n):
            nd = d + lengths[k]
            if k != avoid and nd <= limit and nd < best.get(m, np.inf):
                best[m] = nd
                heapq.heappush(heap, (nd, m))
    return best


class _Radii(dict):
    """Node -> the largest radius (mm) over its pixels, measured on first use (forget a node whose pixels change)."""

    def __init__(self, graph: VoxelGraph, radius_at: np.ndarray) -> None:
        super().__init__()
        self.graph, self.radius_at = graph, radius_at

    def __missing__(self, node: int) -> float:
        value = self[node] = float(self.radius_at[self.graph.nodes[node].pixels].max())
        return value


def _between_junctions(graph: VoxelGraph, k: int, radii: _Radii) -> float | None:
    """The larger junction radius of edge ``k`` when both its ends are junctions, else None."""
    e = graph.edges[k]
    if graph.nodes[e.u].kind != "junction" or graph.nodes[e.v].kind != "junction":
        return None
    return max(radii[e.u], radii[e.v])


def _absorbable(graph: VoxelGraph, k: int, radii: _Radii, lengths: _Lengths) -> bool:
    """An edge between junctions no longer than the larger radius, or a loop onto one no longer than four times."""
    r = _between_junctions(graph, k, radii)
    e = graph.edges[k]
    return r is not None and lengths[k] <= (4.0 * r if e.u == e.v else r)


def _shortcut(graph: VoxelGraph, k: int, radii: _Radii, lengths: _Lengths) -> bool:
    """A link between two junctions no longer than four times the larger radius that closes a ring with a path
    also no longer than that."""
    r = _between_junctions(graph, k, radii)
    e = graph.edges[k]
    return (r is not None and e.u != e.v and lengths[k] <= 4.0 * r
            and _detour(graph, lengths, k, 4.0 * r) is not None)


def _absorb(graph: VoxelGraph, k: int, radii: _Radii) -> tuple[set[int], set[int]]:
    """Merge the far junction of edge ``k`` and the edge's voxels into its near junction (its pixels are
    deduplicated and sorted by :func:`contract_links` at the end). Returns the nodes whose surroundings changed and
    the edges whose junction radius, ends or kind may have changed."""
    e = graph.pop_edge(k)
    u, v = e.u, e.v
    keep = graph.nodes[u]
    before = radii[u]
    radii[u] = max(before, radii[v], float(radii.radius_at[e.path].max()))
    keep.pixels.extend(e.path[1:-1])
    moved: set[int] = set()
    if v != u:
        keep.pixels.extend(graph.nodes[v].pixels)
        moved = set(graph._at.get(v, ()))
        del graph.nodes[v]
        radii.pop(v, None)
        graph.relink(v, u)
    if radii[u] > before:
        moved |= graph._at.get(u, set())
    new = _settle(graph, u)
    if new is None:
        return {u}, moved
    return {graph.edges[new].u, graph.edges[new].v}, {j for j in moved if j in graph.edges} | {new}


def _drop_shortcut(graph: VoxelGraph, k: int) -> set[int]:
    """Remove the link ``k`` that closes a small ring; the nodes whose surroundings changed."""
    e = graph.pop_edge(k)
    touched = set()
    for node in (e.u, e.v):
        if node in graph.nodes and graph.nodes[node].kind == "junction":
            new = _settle(graph, node)
            touched |= {node} if new is None else {graph.edges[new].u, graph.edges[new].v}
    return {n for n in touched if n in graph.nodes}


class _Queue:
    """Edge ids waiting to be looked at, smallest first, each once."""

    def __init__(self, ids: Iterable[int]) -> None:
        self.heap = sorted(set(ids))
        self.waiting = set(self.heap)

    def push(self, ids: Iterable[int]) -> None:
        for k in ids:
            if k not in self.waiting:
                self.waiting.add(k)
                heapq.heappush(self.heap, k)

    def push_at(self, graph: VoxelGraph, nodes: Iterable[int]) -> None:
        for node in nodes:
            self.push(graph._at.get(node, ()))

    def pop(self) -> int:
        k = heapq.heappop(self.heap)
        self.waiting.discard(k)
        return k


def contract_links(graph: VoxelGraph, radius_at: np.ndarray, coords_mm: np.ndarray, *,
                   edges: Iterable[int] | None = None, lengths: _Lengths | None = None) -> int:
    """Merge junctions joined by an edge that lies inside their spheres, and drop small loops onto one junction.

    Thick junctions thin into small clusters of voxels joined by short chains (parallel links, tiny rings); an edge
    between two junctions no longer than the larger junction radius, or a loop onto one junction no longer than
    four times its radius, is part of the junction and absorbed into it; then an edge no longer than four times the
    larger junction radius that closes a ring with a path also no longer than that is dropped. Returns how many
    edges were absorbed or dropped.

    Two work queues, in edge id order: every absorbable edge is absorbed before any ring is looked for, and after a
    change only the edges it can affect are queued again (those at the changed junctions; after an absorption
    that follows a ring check, also those at junctions close enough for the shortened paths to close a small
    ring). ``edges`` limits the first queues to those ids (the rest are known to qualify for neither);
    ``lengths`` caches edge lengths between calls.
    """
    lengths = lengths if lengths is not None else _Lengths(graph, coords_mm)
    radii = _Radii(graph, radius_at)
    reach = 4.0 * float(radius_at.max()) if len(radius_at) else 0.0
    first = list(graph.edges) if edges is None else [k for k in edges if k in graph.edges]
    absorb, rings = _Queue(first), _Queue(first)
    rings_begun = edges is not None  # until then every edge still waits in ``rings``: nothing to queue again
    changed = 0
    grown: set[int] = set()  # nodes that absorbed pixels
    while absorb.heap or rings.heap:
        if absorb.heap:
            k = absorb.pop()
            if k not in graph.edges or not _absorbable(graph, k, radii, lengths):
                continue
            touched, again = _absorb(graph, k, radii)
            grown.update(touched)
            absorb.push(again)
            rings.push(again)
            if rings_begun:  # paths through the merged junction got shorter: rings may have become small
                near = _within(graph, touched, lengths, reach)
                rings.push_at(graph, [n for n, d in near.items() if d <= 4.0 * radii[n]])
        else:
            rings_begun = True
            k = rings.pop()
            if k not in graph.edges or not _shortcut(graph, k, radii, lengths):
                continue
            touched = _drop_shortcut(graph, k)  # only lengthens paths: the changed junctions' edges suffice
            absorb.push_at(graph, touched)
            rings.push_at(graph, touched)
        changed += 1
    for n in grown:
        if n in graph.nodes:
            graph.nodes[n].pixels = sorted(set(graph.nodes[n].pixels))
    return changed


def _detour(graph: VoxelGraph, lengths: _Lengths, edge: int, limit: float) -> float | None:
    """Length of the shortest path between the ends of ``edge`` that avoids it, if one is no longer than
    ``limit``."""
    e = graph.edges[edge]
    return _within(graph, {e.u}, lengths, limit, avoid=edge, target=e.v).get(e.v)


def _spurs(graph: VoxelGraph, radius_at: np.ndarray, spur_factor: float,
           lengths: _Lengths) -> list[tuple[float, int, int]]:
    """(length, edge, junction) of every terminal edge shorter than its limit, shortest first."""
    found = []
    for k, e in graph.edges.items():
        kinds = graph.nodes[e.u].kind, graph.nodes[e.v].kind
        if e.u == e.v or "junction" not in kinds or "end" not in kinds:
            continue
        junction = e.u if kinds[0] == "junction" else e.v
        limit = spur_factor * float(radius_at[graph.nodes[junction].pixels].max())
        if lengths[k] < limit:
            found.append((lengths[k], k, junction))
    return sorted(found)


def prune_spurs(graph: VoxelGraph, radius_at: np.ndarray, spacing: np.ndarray, spur_factor: float) -> int:
    """Remove short terminal edges (see the module doc); returns how many were removed.

    Args:
        graph: the traced graph (changed in place).
        radius_at: radius in mm per pixel.
        spacing: voxel size in mm (pixel coordinates times spacing give mm offsets).
        spur_factor: a terminal edge shorter than this times the radius at its junction is a spur.
    """
    coords_mm = graph.pixels.coords * spacing
    lengths = _Lengths(graph, coords_mm)
    removed = 0
    for node in [k for k, n in graph.nodes.items() if n.kind == "junction"]:
        _merge_through(graph, node)  # junction voxels left with two edges after the staircase clean-up
    check: list[int] | None = None  # all edges at first; then only those made by removing spurs
    while True:
        contract_links(graph, radius_at, coords_mm, edges=check, lengths=lengths)
        spurs = _spurs(graph, radius_at, spur_factor, lengths)
        if not spurs:
            return removed
        check = []
        for _, k, junction in spurs:
            if k not in graph.edges or graph.nodes.get(junction) is None or graph.nodes[junction].kind != "junction":
                continue
            e = graph.pop_edge(k)
            end = e.v if e.u == junction else e.u
            del graph.nodes[end]
            graph._at.pop(end, None)
            removed += 1
            new = _settle(graph, junction)
            if new is not None:
                check.append(new)
