"""The centreline graph of a skeleton: pixel adjacency, nodes (ends, junctions) and the voxel chains between them.

1. :func:`pixel_graph`: 26-neighbour adjacency of the skeleton voxels; a diagonal link is dropped when two shorter
   links already join its ends through a common neighbour (the corners of digital staircases), so that plain curve
   voxels have exactly two neighbours.
2. :func:`trace_graph`: nodes at voxels with one neighbour (ends), none (a single voxel) or three and more
   (junctions; touching junction voxels form one node); edges are the ordered voxel chains between them. A closed
   ring without a node gets one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["PixelGraph", "pixel_graph", "neighbour_links", "GraphNode", "GraphEdge", "VoxelGraph", "trace_graph"]

_OFFSETS = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)
                     if (a, b, c) > (0, 0, 0)], dtype=np.int64)  # the 13 forward neighbours



@dataclass
class PixelGraph:
    """Skeleton voxels (work indices) and their neighbours after removing staircase shortcuts."""

    coords: np.ndarray  # (N, 3) int
    neighbours: list[list[int]]


def neighbour_links(coords: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of 26-neighbours among the voxels ``coords`` (n, 3) of an array of ``shape``, once: the two
    indices into ``coords`` and the squared length of the step (1, 2 or 3)."""
    n = len(coords)
    index = np.full(shape, -1, dtype=np.int32 if n < 2**31 else np.int64)  # a full-grid lookup: keep it small
    index[tuple(coords.T)] = np.arange(n)
    bound = np.array(shape)
    links: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for off in _OFFSETS:
        q = coords + off
        ok = np.all((q >= 0) & (q < bound), axis=1)
        j = np.full(n, -1, dtype=np.int64)
        j[ok] = index[tuple(q[ok].T)]
        hit = j >= 0
        links.append((np.flatnonzero(hit), j[hit], np.full(int(hit.sum()), int(off @ off))))
    return tuple(np.concatenate([link[i] for link in links]) for i in range(3))  # type: ignore[return-value]


def pixel_graph(skel: np.ndarray) -> PixelGraph:
    """26-neighbour graph of the skeleton voxels (see the module doc for the dropped diagonals)."""
    coords = np.argwhere(skel)
    n = len(coords)
    src, dst, sq = neighbour_links(coords, skel.shape)
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
