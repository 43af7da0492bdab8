"""The bulk paths for speckle give exactly what measuring every piece on its own gives."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import skeletonize

from segvol.data.phantoms.noise import speckled
from segvol.evaluation.centreline import _Traced
from segvol.tree import TreeSettings, analyse_mask
from segvol.tree.core import _distance_in_windows, _edt_at
from segvol.tree.skeleton import _repair_one, fill_holes, repair_skeleton
from tests.tree.tubes import capsule_mask, grid_affine


def _per_tree(mask: np.ndarray, spacing: np.ndarray) -> dict[str, np.ndarray]:
    """Centreline samples, free ends and length from every tree of :func:`analyse_mask`, one after the other (what
    the centreline metrics did before measuring speckle in bulk)."""
    result = analyse_mask(mask, np.diag([*spacing, 1.0]), TreeSettings(max_trees=None, min_tree_mm3=0.0))
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
    return {"voxels": np.concatenate(voxels), "radii": np.concatenate(radii), "weights": np.concatenate(weights),
            "ends": np.array(ends).reshape(-1, 3), "length": np.array(sum(t.length_mm for t in result.trees)),
            "trees": np.array(len(result.trees))}


@pytest.mark.parametrize(("spacing", "fraction", "seed"), [((0.5, 0.5, 0.5), 0.03, 1), ((0.4, 0.35, 0.6), 0.05, 2)])
def test_centreline_samples_of_speckle_equal_measuring_each_piece(spacing, fraction, seed):
    step = np.asarray(spacing)
    aff = grid_affine(spacing)
    tree = capsule_mask((60, 40, 70), aff, [((12, 8, 3), (12, 8, 16), 2.0), ((12, 8, 16), (4, 8, 30), 1.5),
                                            ((12, 8, 16), (20, 8, 30), 1.5)])
    mask = speckled(np.roll(tree, 2, axis=2), fraction=fraction, seed=seed)  # the tree touches the volume border
    old = _per_tree(mask, step)
    new = _Traced(mask, step)
    assert tree.any() and old["trees"] > 200 and len(new.ends) > 200  # hundreds of pieces, most of them chains
    for name in ("voxels", "radii", "weights", "ends"):
        assert np.array_equal(getattr(new, name), old[name]), name
    assert new.length == old["length"]


def test_components_rethinned_together_equal_one_by_one():
    rng = np.random.default_rng(0)
    labels = np.zeros((60, 50, 40), np.int32)
    shapes = [np.ones((2, 2, 2), bool), np.ones((2, 2, 5), bool), np.ones((4, 4, 4), bool),
              np.array([[[1, 1], [1, 0]]], bool), np.ones((1, 2, 3), bool), np.ones((6, 2, 2), bool)]
    lab = 0
    for x in range(2, 54, 8):
        for y in range(2, 44, 8):
            for z in range(2, 34, 8):
                lab += 1
                s = shapes[rng.integers(len(shapes))]
                labels[x:x + s.shape[0], y:y + s.shape[1], z:z + s.shape[2]][s] = lab
    skel = skeletonize(labels > 0).astype(bool)
    which = list(range(1, lab + 1))
    boxes = ndimage.find_objects(labels)
    alone = skel.copy()
    vanished = 0
    for k in which:
        comp_skel = skel[boxes[k - 1]] & (labels[boxes[k - 1]] == k)
        if ndimage.label(comp_skel, np.ones((3, 3, 3)))[1] == 1:
            continue
        vanished += 1
        grown = tuple(slice(max(b.start - 2, 0), b.stop + 2) for b in boxes[k - 1])
        _repair_one(alone, labels[grown] == k, grown)
    together = repair_skeleton(skel.copy(), labels, which)
    assert vanished > 20 and not np.array_equal(together, skel)  # there was something to repair
    assert np.array_equal(together, alone)


def test_fill_holes_and_distances_equal_scipy():
    rng = np.random.default_rng(3)
    for spacing in ((0.5, 0.5, 0.5), (0.33, 0.33, 0.41), (0.7, 0.31, 1.3)):
        mask = ndimage.gaussian_filter(rng.random((40, 30, 24)), 1.0) > 0.48
        filled = ndimage.binary_fill_holes(mask)
        assert (filled & ~mask).any() and np.array_equal(fill_holes(mask), filled)
        at = np.argwhere(mask)
        expected = ndimage.distance_transform_edt(mask, sampling=spacing)[tuple(at.T)]
        assert np.array_equal(_edt_at(mask, at, np.asarray(spacing)), expected)


@pytest.mark.parametrize("margin", [0, 2])
def test_distances_in_stacked_boxes_equal_the_whole_transform(margin):
    spacing = np.array([0.33, 0.33, 0.41])
    tube = capsule_mask((50, 40, 60), grid_affine(tuple(spacing)), [((8, 6, 0), (8, 6, 20), 2.5)])  # cut by a face
    mask = speckled(tube, fraction=0.04, seed=5)
    labels, _ = ndimage.label(mask, np.ones((3, 3, 3)))
    at = np.argwhere(skeletonize(mask))
    expected = ndimage.distance_transform_edt(mask, sampling=spacing)[tuple(at.T)]
    assert tube.any() and len(np.unique(labels[tuple(at.T)])) > 100 and expected.max() > 4 * spacing.min()
    assert np.array_equal(_distance_in_windows(mask, at, labels[tuple(at.T)], spacing, margin), expected)


@pytest.mark.parametrize("rotated", [False, True])
def test_chains_measured_together_equal_measure_graph(rotated):
    from segvol.evaluation.centreline import _is_chain
    from segvol.tree.core import trace_mask
    from segvol.tree.measure import measure_chains, measure_graph

    affine = grid_affine((0.4, 0.4, 0.5), flip=(True, False, False))
    if rotated:  # a 3x3 part that is not diagonal: measured one by one
        c, s = np.cos(0.3), np.sin(0.3)
        affine = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]) @ affine
    mask = speckled(np.zeros((40, 40, 30), bool), fraction=0.04, seed=6)
    traced = trace_mask(mask, affine, TreeSettings(max_trees=None, min_tree_mm3=0.0))
    chains = [(lab, traced.parts[lab][1][0]) for lab in traced.tree_labels if lab in traced.parts
              and _is_chain(traced.graph, *traced.parts[lab])]
    got = measure_chains(traced.graph, [k for _, k in chains], traced.geo)
    assert len(chains) > 50
    for i, (lab, _) in enumerate(chains):
        _, (seg,), _ = measure_graph(traced.graph, *traced.parts[lab], traced.geo, traced.result.settings)
        part = slice(got.bounds[i], got.bounds[i + 1])
        assert np.array_equal(got.voxels[part], seg.voxels) and np.array_equal(got.radii_mm[part], seg.radii_mm)
        assert np.array_equal(got.points_mm[part], seg.points_mm)
