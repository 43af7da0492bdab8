"""Pruning the centreline graph: junctions joined inside their spheres are merged (:func:`contract_links`, a work
queue that re-examines only the edges a change can affect); terminal edges shorter than ``spur_factor`` times the
radius at their junction are removed, shortest first, and nodes left with two edges are dissolved into one edge,
until nothing changes (:func:`prune_spurs`).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

import numpy as np

from segvol.tree.graph import VoxelGraph

__all__ = ["contract_links", "prune_spurs"]


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
