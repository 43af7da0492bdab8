"""The array core of ``segvol tree``: a binary vessel mask and its affine in, the measured, graded artery trees out.

:func:`analyse_mask` crops to the mask's bounding box, thins it (:mod:`segvol.tree.thinning`), traces and prunes the
centreline graph (:mod:`segvol.tree.graph`, :mod:`segvol.tree.pruning`), splits it by connected component
(26-connectivity), measures every tree in one batch (:mod:`segvol.tree.measure`, cross-sections from
:mod:`segvol.tree.sections`), grades each (:mod:`segvol.tree.grading`) and names the two largest by side: in scanner
(NIfTI RAS+) coordinates the tree whose centroid lies further towards the patient's left (smaller x) is ``left``,
the other ``right`` (the ImageCAS left and right coronary trees). Without an orientation (an identity affine) or when
the two centroids are less than :data:`SIDE_MARGIN_MM` apart in x, they are ``tree1`` and ``tree2``. Components
beyond ``max_trees`` or smaller than ``min_tree_mm3`` are reported as detached pieces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from segvol.errors import SegvolError

from segvol.tree.distance import distance_to_background, radius_from_edt
from segvol.tree.grading import grade_tree
from segvol.tree.graph import VoxelGraph, pixel_graph, trace_graph
from segvol.tree.measure import Geometry, measure_trees, to_mm
from segvol.tree.pruning import prune_spurs
from segvol.tree.records import Node, Piece, Segment, Tree, TreeSettings
from segvol.tree.thinning import Work, keep_inside, prepare, repair_skeleton, skeleton_of_components

__all__ = ["TreeAnalysis", "TracedGraph", "analyse_mask", "trace_mask", "spacing_of_affine", "SIDE_MARGIN_MM"]

log = logging.getLogger(__name__)
SIDE_MARGIN_MM = 10.0


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


def spacing_of_affine(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm per axis (norms of the affine's columns)."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def _components(work_mask: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(work_mask, ndimage.generate_binary_structure(3, 3))


def _set_voxels(label_img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flat indices of the labelled voxels of ``label_img`` and their labels."""
    flat = np.flatnonzero(label_img)
    return flat, label_img.ravel()[flat]


def _centres(label_img: np.ndarray, labs: list[int], voxels: tuple[np.ndarray, np.ndarray] | None = None
             ) -> np.ndarray:
    """(len(labs), 3) mean voxel index of each label, from the set voxels only (speckle is sparse in a full grid;
    ``voxels``: their :func:`_set_voxels` when known)."""
    labs_arr = np.asarray(labs)
    flat, at = _set_voxels(label_img) if voxels is None else voxels
    size = int(at.max(initial=0)) + 1
    counts = np.bincount(at, minlength=size)[labs_arr]
    return np.stack([np.bincount(at, weights=c, minlength=size)[labs_arr]
                     for c in np.unravel_index(flat, label_img.shape)], axis=1) / counts[:, None]


def _pieces(label_img: np.ndarray, labs: list[int], offset: np.ndarray, affine: np.ndarray, sizes: np.ndarray,
            voxel_mm3: float, voxels: tuple[np.ndarray, np.ndarray] | None = None) -> list[Piece]:
    """Size, centroid and extent of the components ``labs`` (one pass each over the label image, not per piece)."""
    if not labs:
        return []
    centres = _centres(label_img, labs, voxels)
    boxes = ndimage.find_objects(label_img)
    corners = np.array([[[s.start for s in boxes[lab - 1]], [s.stop - 1 for s in boxes[lab - 1]]] for lab in labs],
                       dtype=np.float64)
    ends = to_mm(corners.reshape(-1, 3) + offset, affine).reshape(-1, 2, 3)
    centroids = to_mm(centres + offset, affine)
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


def _box_of(found: list[tuple[slice, ...] | None], shape: tuple[int, ...], which: list[int], margin: int = 8
           ) -> tuple[slice, ...]:
    """The bounding box of the components ``which`` (``found``: their ``ndimage.find_objects``), grown by
    ``margin`` voxels (within an array of ``shape``)."""
    boxes = [b for b in (found[lab - 1] for lab in which) if b is not None]
    return tuple(slice(max(min(b[ax].start for b in boxes) - margin, 0),
                       min(max(b[ax].stop for b in boxes) + margin, shape[ax])) for ax in range(3))


def _within(found: list[tuple[slice, ...] | None], which: list[int], box: tuple[slice, ...]
            ) -> list[tuple[slice, ...] | None]:
    """``found`` (``ndimage.find_objects``) as within ``box`` for the components ``which``, which lie in it (as
    ``find_objects`` of the labels in ``box`` gives them); None for the others."""
    out: list[tuple[slice, ...] | None] = [None] * len(found)
    for lab in which:
        b = found[lab - 1]
        if b is not None:
            out[lab - 1] = tuple(slice(s.start - c.start, s.stop - c.start) for s, c in zip(b, box))
    return out


@dataclass
class TracedGraph:
    """A mask's pruned centreline graph split by tree component, before the trees are measured
    (:func:`trace_mask`; :func:`analyse_mask` measures every tree, the centreline metrics only what they use)."""

    result: TreeAnalysis  # the pieces are filled in, the trees not yet
    tree_labels: list[int]  # component labels of the trees, largest first
    sizes: np.ndarray  # voxels per component (label - 1)
    offset: np.ndarray  # work index -> input voxel index
    graph: VoxelGraph | None = None
    geo: Geometry | None = None
    parts: dict[int, tuple[list[int], list[int]]] = field(default_factory=dict)  # label -> (node ids, edge ids)
    centroids: np.ndarray | None = None  # mean work index per tree label

    def tree(self, rank: int, nodes: list[Node], segments: list[Segment], root: int | None) -> Tree:
        """The :class:`Tree` of ``tree_labels[rank]`` from its measured nodes and segments."""
        lab = self.tree_labels[rank]
        centroid = self.centroids[rank] if self.centroids is not None else np.zeros(3)
        voxel_mm3 = float(np.prod(self.result.spacing))
        return Tree(name="", label=rank + 1, voxels=int(self.sizes[lab - 1]),
                    volume_mm3=float(self.sizes[lab - 1]) * voxel_mm3, nodes=nodes, segments=segments, root=root,
                    centroid_mm=to_mm(np.add(centroid, self.offset), self.result.affine))


def _fork(processes: int | None) -> bool:
    """Whether a forked child shares the work (:func:`analyse_mask`'s ``processes``)."""
    if processes is None:
        from segvol.viz.workers import available_cpus

        return available_cpus() > 1
    return processes > 1


def trace_mask(mask: np.ndarray, affine: np.ndarray, settings: TreeSettings | None = None, *,
               prob: np.ndarray | None = None, processes: int | None = 1) -> TracedGraph:
    """Everything of :func:`analyse_mask` up to the measurement: crop, components, pieces, skeleton, graph,
    pruning (``processes``: as :func:`analyse_mask`'s)."""
    settings = settings or TreeSettings()
    mask = np.asarray(mask)
    mask = mask if mask.dtype == bool else mask != 0
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
    voxels = _set_voxels(inside)  # the components' voxels inside the volume: their sizes, centres and pieces
    sizes = np.bincount(voxels[1], minlength=n + 1)[1:]
    voxel_mm3 = float(np.prod(spacing))
    order = [int(i) + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] > 0]
    limit = len(order) if settings.max_trees is None else settings.max_trees
    tree_labels = [lab for lab in order[:limit] if sizes[lab - 1] * voxel_mm3 >= settings.min_tree_mm3]
    chosen = set(tree_labels)
    result.pieces = _pieces(inside, [lab for lab in order if lab not in chosen], work.offset, affine, sizes,
                            voxel_mm3, voxels)
    traced = TracedGraph(result, tree_labels, sizes, work.offset)
    if not tree_labels:
        return traced
    found = ndimage.find_objects(labels)  # once: the trees' boxes, and their boxes within the trees' box
    box = _box_of(found, labels.shape, tree_labels)  # the trees, not the speckle around them, are thinned
    lo = np.array([b.start for b in box])
    sub = Work(work.mask[box], work.offset + lo,
               tuple(slice(max(w.start - b.start, 0), max(min(w.stop, b.stop) - b.start, 0))
                     for w, b in zip(work.inside, box)))
    boxes = _within(found, tree_labels, box)
    fork = _fork(processes)
    thin = skeleton_of_components(labels[box], tree_labels, boxes=boxes, fork=fork)
    pg = pixel_graph(keep_inside(repair_skeleton(thin, labels[box], tree_labels, boxes=boxes), sub))
    pg.coords += lo  # work indices from here on
    radius = radius_from_edt(distance_to_background(work.mask, pg.coords, spacing), float(spacing.min()))
    traced.graph = trace_graph(pg)
    result.spurs_removed = prune_spurs(traced.graph, radius, spacing, settings.spur_factor)
    traced.geo = Geometry(affine, work.offset, radius, spacing, work, prob, fork=fork)
    traced.parts = _split_graph(traced.graph, labels[tuple(pg.coords.T)])
    traced.centroids = _centres(inside, tree_labels, voxels)
    return traced


def analyse_mask(mask: np.ndarray, affine: np.ndarray, settings: TreeSettings | None = None, *,
                 prob: np.ndarray | None = None, processes: int | None = 1) -> TreeAnalysis:
    """Centreline trees of a binary 3D mask, measured and graded.

    Args:
        mask: (X, Y, Z) array; anything non-zero is vessel.
        affine: 4x4 voxel -> scanner mm (the NIfTI affine; any orientation, anisotropic, mirrored).
        settings: pruning, grading and tree/piece thresholds.
        prob: optional (X, Y, Z) vessel probability (0-1) on the mask's grid; the cross-sections are cut through
            it instead of the mask (sub-voxel edges at probability 0.5).
        processes: 1 (the default): all here; 2 or more: the trees are thinned and the cross-sections cut in two
            processes, this one and a forked child (:class:`segvol.viz.workers.Beside`; the same results); None:
            two when a CPU is idle now (:func:`segvol.viz.workers.available_cpus`).

    Returns:
        A :class:`TreeAnalysis`; empty (no trees, no pieces) for an empty mask.
    """
    if prob is not None and np.shape(prob) != np.shape(mask):
        raise SegvolError(f"probability map of shape {np.shape(prob)} does not match the mask's {np.shape(mask)}")
    traced = trace_mask(mask, affine, settings, prob=None if prob is None else np.asarray(prob, np.float32),
                        processes=processes)
    result = traced.result
    if traced.graph is None or traced.geo is None:  # no trees
        return result
    parts = [traced.parts.get(lab, ([], [])) for lab in traced.tree_labels]
    for rank, (nodes, segments, root) in enumerate(measure_trees(traced.graph, parts, traced.geo)):
        root = _renumber(nodes, segments, root)
        tree = traced.tree(rank, nodes, segments, root)
        grade_tree(tree, result.settings, float(result.spacing.min()))
        result.trees.append(tree)
    _name_trees(result.trees, result.affine)
    return result
