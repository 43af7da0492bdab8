"""The array core of ``segvol tree``: a binary vessel mask and its affine in, the measured artery trees out.

:func:`analyse_mask` crops to the mask's bounding box, skeletonises once, traces and prunes the centreline graph
(:mod:`segvol.tree.skeleton`), splits it by connected component (26-connectivity), measures each tree
(:mod:`segvol.tree.measure`) and names the two largest by side: in scanner (NIfTI RAS+) coordinates the tree
whose centroid lies further towards the patient's left (smaller x) is ``left``, the other ``right`` (the ImageCAS
left and right coronary trees). Without an orientation (an identity affine) or when the two centroids are less than
:data:`SIDE_MARGIN_MM` apart in x, they are ``tree1`` and ``tree2``. Components beyond ``max_trees`` or smaller than
``min_tree_mm3`` are reported as detached pieces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from segvol.tree.measure import (Node, Piece, Segment, Tree, TreeSettings, _Geometry, _to_mm, measure_graph,
                                 runs_end_to_end)
from segvol.tree.skeleton import (VoxelGraph, Work, keep_inside, pixel_graph, prepare, prune_spurs,
                                  repair_skeleton, skeleton_of, trace_graph)

__all__ = ["TreeAnalysis", "TracedGraph", "analyse_mask", "trace_mask", "spacing_of_affine", "radius_from_edt",
           "SIDE_MARGIN_MM"]

log = logging.getLogger(__name__)
SIDE_MARGIN_MM = 10.0
WINDOW_MARGIN = 2  # voxels around each speckle blob's centreline for its distance transform


@dataclass
class TreeAnalysis:
    """Every tree and detached piece of one mask, in the mask's scanner millimetres."""

    shape: tuple[int, ...]
    affine: np.ndarray
    spacing: np.ndarray
    settings: TreeSettings
    trees: list[Tree] = field(default_factory=list)
    pieces: list[Piece] = field(default_factory=list)
    spurs_removed: int = 0

    @property
    def segments(self) -> list[tuple[Tree, Segment]]:
        return [(t, s) for t in self.trees for s in t.segments]


def radius_from_edt(edt: np.ndarray, step: float) -> np.ndarray:
    """Vessel radius (mm) from the distance (mm) of a centreline voxel to the nearest outside voxel.

    The boundary lies between the last inside and the first outside voxel centre, so the distance overshoots it by
    up to a voxel where the vessel is a voxel or two wide and hardly at all where it is many voxels wide:
    ``edt - step**2 / (2 * edt)`` is half a voxel for a one-voxel-wide line and tends to ``edt`` for wide vessels.
    """
    edt = np.maximum(np.asarray(edt, dtype=np.float64), step)
    return edt - step**2 / (2.0 * edt)


def spacing_of_affine(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm per axis (norms of the affine's columns)."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def _components(work_mask: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(work_mask, ndimage.generate_binary_structure(3, 3))


def _centres(label_img: np.ndarray, labs: list[int]) -> np.ndarray:
    """(len(labs), 3) mean voxel index of each label, from the set voxels only (speckle is sparse in a full grid)."""
    labs_arr = np.asarray(labs)
    flat = np.flatnonzero(label_img)
    at = label_img.ravel()[flat]
    size = int(label_img.max()) + 1
    counts = np.bincount(at, minlength=size)[labs_arr]
    return np.stack([np.bincount(at, weights=c, minlength=size)[labs_arr]
                     for c in np.unravel_index(flat, label_img.shape)], axis=1) / counts[:, None]


def _pieces(label_img: np.ndarray, labs: list[int], offset: np.ndarray, affine: np.ndarray, sizes: np.ndarray,
            voxel_mm3: float) -> list[Piece]:
    """Size, centroid and extent of the components ``labs`` (one pass each over the label image, not per piece)."""
    if not labs:
        return []
    centres = _centres(label_img, labs)
    boxes = ndimage.find_objects(label_img)
    corners = np.array([[[s.start for s in boxes[lab - 1]], [s.stop - 1 for s in boxes[lab - 1]]] for lab in labs],
                       dtype=np.float64)
    ends = _to_mm(corners.reshape(-1, 3) + offset, affine).reshape(-1, 2, 3)
    centroids = _to_mm(centres + offset, affine)
    extents = np.abs(ends[:, 1] - ends[:, 0])
    return [Piece(voxels=int(sizes[lab - 1]), volume_mm3=float(sizes[lab - 1]) * voxel_mm3, centroid_mm=c, extent_mm=x)
            for lab, c, x in zip(labs, centroids, extents)]


def _split_graph(graph, comp_of_pixel: np.ndarray) -> dict[int, tuple[list[int], list[int]]]:  # noqa: ANN001
    parts: dict[int, tuple[list[int], list[int]]] = {}
    for k, node in graph.nodes.items():
        parts.setdefault(int(comp_of_pixel[node.pixels[0]]), ([], []))[0].append(k)
    for k, edge in graph.edges.items():
        parts.setdefault(int(comp_of_pixel[edge.path[0]]), ([], []))[1].append(k)
    return parts


def _renumber(nodes: list[Node], segments: list[Segment], root: int | None) -> int | None:
    order = sorted(nodes, key=lambda n: (n.id != root, n.id))
    new = {n.id: i for i, n in enumerate(order)}
    for n in nodes:
        n.id = new[n.id]
    nodes.sort(key=lambda n: n.id)
    for s in segments:
        s.start, s.end = new[s.start], new[s.end]
    return new[root] if root is not None else None


def _name_trees(trees: list[Tree], affine: np.ndarray) -> None:
    for i, tree in enumerate(trees):
        tree.name = f"tree{i + 1}"
    if len(trees) < 2 or np.allclose(affine, np.eye(4)):
        return
    x = [float(t.centroid_mm[0]) for t in trees[:2]]
    if abs(x[0] - x[1]) >= SIDE_MARGIN_MM:
        left = 0 if x[0] < x[1] else 1
        trees[left].name, trees[1 - left].name = "left", "right"


def _box_of(labels: np.ndarray, which: list[int], margin: int = 8) -> tuple[slice, ...]:
    """The bounding box of the components ``which``, grown by ``margin`` voxels (within the array)."""
    found = ndimage.find_objects(labels)
    boxes = [b for b in (found[lab - 1] for lab in which) if b is not None]
    return tuple(slice(max(min(b[ax].start for b in boxes) - margin, 0),
                       min(max(b[ax].stop for b in boxes) + margin, labels.shape[ax])) for ax in range(3))


def _edt_at(mask: np.ndarray, coords: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """``ndimage.distance_transform_edt(mask, sampling=spacing)[tuple(coords.T)]``, with the same arithmetic, from
    the feature transform alone: the distances are worked out at ``coords`` only, not over the whole array."""
    feature = ndimage.distance_transform_edt(mask, sampling=spacing, return_distances=False, return_indices=True)
    offsets = (feature[(slice(None),) + tuple(coords.T)] - coords.T).astype(np.float64)
    for ax, step in enumerate(np.asarray(spacing, dtype=np.float64)):
        offsets[ax] *= step
    np.multiply(offsets, offsets, offsets)
    return np.sqrt(np.add.reduce(offsets, axis=0))


def _distance_at(mask: np.ndarray, box: tuple[slice, ...], coords: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """The Euclidean distance (mm) from each of ``coords`` to the nearest voxel outside ``mask``: computed in
    ``box``, which is exact wherever it is no larger than the distance to the box's inner faces; the whole mask
    is used when that does not hold somewhere."""
    lo = np.array([b.start for b in box])
    hi = np.array([b.stop for b in box])
    rel = coords - lo
    dist = _edt_at(mask[box], rel, spacing)
    room = np.full(len(coords), np.inf)
    for ax in range(3):
        if lo[ax] > 0:
            room = np.minimum(room, (rel[:, ax] + 1) * spacing[ax])
        if hi[ax] < mask.shape[ax]:
            room = np.minimum(room, (hi[ax] - coords[:, ax]) * spacing[ax])
    if np.all(dist <= room):
        return dist
    return _edt_at(mask, coords, spacing)


def _distance_in_windows(mask: np.ndarray, coords: np.ndarray, group: np.ndarray, spacing: np.ndarray,
                         margin: int = WINDOW_MARGIN) -> np.ndarray:
    """:func:`_distance_at` of ``coords`` that lie in many small clusters (``group``: the component of each; the
    speckle of a noisy mask): each cluster's box grown by ``margin``, the boxes of one cross-section stacked along
    the first axis and transformed together. A distance smaller than the room to its box's faces (including those
    towards its neighbours in the stack) is exact; the others are computed again in one box around them."""
    shape = np.array(mask.shape)
    if len(coords) == 0:
        return np.zeros(0)
    order = np.argsort(group, kind="stable")
    cuts = np.flatnonzero(np.diff(group[order])) + 1
    starts = np.concatenate([[0], cuts])
    lo = np.maximum(np.minimum.reduceat(coords[order], starts) - margin, 0)
    hi = np.minimum(np.maximum.reduceat(coords[order], starts) + 1 + margin, shape)
    box_of = np.empty(len(coords), np.int64)
    box_of[order] = np.repeat(np.arange(len(starts)), np.diff(np.concatenate([starts, [len(coords)]])))
    dist = np.full(len(coords), np.nan)
    section = (hi - lo)[:, 1:]
    keys, which = np.unique(section, axis=0, return_inverse=True)
    for g, (ny, nz) in enumerate(keys.tolist()):
        boxes = np.flatnonzero(which.ravel() == g)
        first_row, window, row = runs_end_to_end(hi[boxes, 0] - lo[boxes, 0])  # the boxes stacked along axis 0
        packed = mask[(lo[boxes, 0][window] + row)[:, None, None],
                      (lo[boxes, 1][window][:, None] + np.arange(ny))[:, :, None],
                      (lo[boxes, 2][window][:, None] + np.arange(nz))[:, None, :]]
        slot = np.full(len(lo), -1)
        slot[boxes] = np.arange(len(boxes))
        mine = np.flatnonzero(slot[box_of] >= 0)
        b = box_of[mine]
        rel = coords[mine] - lo[b]
        at = rel + np.column_stack([first_row[slot[b]], np.zeros((len(b), 2), np.int64)])
        d = _edt_at(packed, at, spacing)
        room = np.minimum((rel[:, 0] + 1) * spacing[0], (hi[b, 0] - coords[mine, 0]) * spacing[0])
        for ax in (1, 2):
            room = np.where(lo[b, ax] > 0, np.minimum(room, (rel[:, ax] + 1) * spacing[ax]), room)
            room = np.where(hi[b, ax] < shape[ax], np.minimum(room, (hi[b, ax] - coords[mine, ax]) * spacing[ax]), room)
        dist[mine] = np.where(d < room, d, np.nan)
    again = np.flatnonzero(np.isnan(dist))
    if again.size:
        box = tuple(slice(max(int(a) - 8, 0), min(int(z) + 9, int(n)))
                    for a, z, n in zip(coords[again].min(axis=0), coords[again].max(axis=0), shape))
        dist[again] = _distance_at(mask, box, coords[again], spacing)
    return dist


@dataclass
class TracedGraph:
    """A mask's pruned centreline graph split by tree component, before the trees are measured
    (:func:`trace_mask`; :func:`analyse_mask` measures every tree, the centreline metrics only what they use)."""

    result: TreeAnalysis  # the pieces are filled in, the trees not yet
    tree_labels: list[int]  # component labels of the trees, largest first
    sizes: np.ndarray  # voxels per component (label - 1)
    offset: np.ndarray  # work index -> input voxel index
    graph: VoxelGraph | None = None
    geo: _Geometry | None = None
    parts: dict[int, tuple[list[int], list[int]]] = field(default_factory=dict)  # label -> (node ids, edge ids)
    centroids: np.ndarray | None = None  # mean work index per tree label

    def tree(self, rank: int, nodes: list[Node], segments: list[Segment], root: int | None) -> Tree:
        """The :class:`Tree` of ``tree_labels[rank]`` from its measured nodes and segments."""
        lab = self.tree_labels[rank]
        centroid = self.centroids[rank] if self.centroids is not None else np.zeros(3)
        voxel_mm3 = float(np.prod(self.result.spacing))
        return Tree(name="", label=rank + 1, voxels=int(self.sizes[lab - 1]),
                    volume_mm3=float(self.sizes[lab - 1]) * voxel_mm3, nodes=nodes, segments=segments, root=root,
                    centroid_mm=_to_mm(np.add(centroid, self.offset), self.result.affine))


def trace_mask(mask: np.ndarray, affine: np.ndarray, settings: TreeSettings | None = None) -> TracedGraph:
    """Everything of :func:`analyse_mask` up to the measurement: crop, components, pieces, skeleton, graph,
    pruning."""
    settings = settings or TreeSettings()
    mask = np.asarray(mask) != 0
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {mask.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    spacing = spacing_of_affine(affine)
    result = TreeAnalysis(tuple(mask.shape), affine, spacing, settings)
    work = prepare(mask, spacing)
    if work is None:
        return TracedGraph(result, [], np.zeros(0, np.int64), np.zeros(3, np.int64))
    labels, n = _components(work.mask)
    inside = np.zeros_like(labels)
    inside[work.inside] = labels[work.inside]
    sizes = np.bincount(inside.ravel(), minlength=n + 1)[1:]
    voxel_mm3 = float(np.prod(spacing))
    order = [int(i) + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] > 0]
    limit = len(order) if settings.max_trees is None else settings.max_trees
    tree_labels = [lab for lab in order[:limit] if sizes[lab - 1] * voxel_mm3 >= settings.min_tree_mm3]
    chosen = set(tree_labels)
    result.pieces = _pieces(inside, [lab for lab in order if lab not in chosen], work.offset, affine, sizes,
                            voxel_mm3)
    traced = TracedGraph(result, tree_labels, sizes, work.offset)
    if not tree_labels:
        return traced
    box = _box_of(labels, tree_labels)  # the trees, not the speckle around them, are thinned and measured
    lo = np.array([b.start for b in box])
    sub = Work(work.mask[box], work.offset + lo,
               tuple(slice(max(w.start - b.start, 0), max(min(w.stop, b.stop) - b.start, 0))
                     for w, b in zip(work.inside, box)))
    is_tree = np.zeros(n + 1, bool)
    is_tree[tree_labels] = True
    thin = skeleton_of(sub, inside_only=False) & is_tree[labels[box]]
    pg = pixel_graph(keep_inside(repair_skeleton(thin, labels[box], tree_labels), sub))
    pg.coords += lo  # work indices from here on
    min_step = float(spacing.min())
    radius = radius_from_edt(_distance_in_windows(work.mask, pg.coords, labels[tuple(pg.coords.T)], spacing),
                             min_step)
    traced.graph = trace_graph(pg)
    result.spurs_removed = prune_spurs(traced.graph, radius, spacing, settings.spur_factor)
    traced.geo = _Geometry(affine, work.offset, radius, min_step, work)
    traced.parts = _split_graph(traced.graph, labels[tuple(pg.coords.T)])
    traced.centroids = _centres(inside, tree_labels)
    return traced


def analyse_mask(mask: np.ndarray, affine: np.ndarray, settings: TreeSettings | None = None) -> TreeAnalysis:
    """Centreline trees of a binary 3D mask.

    Args:
        mask: (X, Y, Z) array; anything non-zero is vessel.
        affine: 4x4 voxel -> scanner mm (the NIfTI affine; any orientation, anisotropic, mirrored).
        settings: pruning, narrowing and tree/piece thresholds.

    Returns:
        A :class:`TreeAnalysis`; empty (no trees, no pieces) for an empty mask.
    """
    traced = trace_mask(mask, affine, settings)
    result = traced.result
    if traced.graph is None or traced.geo is None:  # no trees
        return result
    for rank, lab in enumerate(traced.tree_labels):
        node_ids, edge_ids = traced.parts.get(lab, ([], []))
        nodes, segments, root = measure_graph(traced.graph, node_ids, edge_ids, traced.geo, result.settings)
        root = _renumber(nodes, segments, root)
        result.trees.append(traced.tree(rank, nodes, segments, root))
    _name_trees(result.trees, result.affine)
    return result
