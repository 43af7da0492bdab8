"""Thinning and distances against independent references: skeletons in one piece for every component, cavities
filled and distances equal to scipy's, and the speckle of a noisy mask measured in one batch without changing the
trees' lengths."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import skeletonize

from segvol.data.phantoms.noise import speckled
from segvol.evaluation.centreline import centreline_metrics
from segvol.tree import TreeSettings, analyse_mask
from segvol.tree.distance import distance_to_background, surface_voxels
from segvol.tree.thinning import fill_holes, repair_skeleton
from tests.tree.tubes import capsule_mask, grid_affine


def test_every_component_keeps_a_skeleton_in_one_piece():
    """Blocks with even square sections vanish under Lee's thinning (scikit-image #3757); repaired in one batch,
    each component has a skeleton in one piece."""
    rng = np.random.default_rng(0)
    labels = np.zeros((60, 50, 40), np.int32)
    shapes = [np.ones((2, 2, 2), bool), np.ones((2, 2, 5), bool), np.ones((4, 4, 4), bool), np.ones((4, 4, 7), bool),
              np.array([[[1, 1], [1, 0]]], bool), np.ones((1, 2, 3), bool), np.ones((6, 2, 2), bool)]
    lab = 0
    for x in range(2, 54, 8):
        for y in range(2, 44, 8):
            for z in range(2, 34, 8):
                lab += 1
                s = shapes[rng.integers(len(shapes))]  # clear of the array's faces, as in a padded work mask
                labels[x:x + s.shape[0], y:y + s.shape[1], z:z + s.shape[2]][s] = lab
    skel = skeletonize(labels > 0).astype(bool)
    pieces = lambda sk, k: ndimage.label(sk & (labels == k), np.ones((3, 3, 3)))[1]  # noqa: E731
    assert sum(pieces(skel, k) != 1 for k in range(1, lab + 1)) > 20  # many vanished or split
    repaired = repair_skeleton(skel.copy(), labels, list(range(1, lab + 1)))
    assert all(pieces(repaired, k) == 1 for k in range(1, lab + 1))
    assert not (repaired & (labels == 0)).any()


def test_fill_holes_and_distances_equal_scipy():
    """Blobs with cavities, three spacings: holes filled as scipy fills them, and the distance from every voxel (mask
    and background) to the background as scipy's transform gives it."""
    rng = np.random.default_rng(3)
    for spacing in ((0.5, 0.5, 0.5), (0.33, 0.33, 0.41), (0.7, 0.31, 1.3)):
        mask = ndimage.gaussian_filter(rng.random((40, 30, 24)), 1.0) > 0.48
        filled = ndimage.binary_fill_holes(mask)
        assert (filled & ~mask).any() and np.array_equal(fill_holes(mask), filled)
        at = np.argwhere(np.ones_like(mask))
        expected = ndimage.distance_transform_edt(mask, sampling=spacing)[tuple(at.T)]
        assert expected.max() > 3 * min(spacing)
        assert np.allclose(distance_to_background(mask, at, np.asarray(spacing)), expected, rtol=0, atol=1e-12)


def test_fill_holes_of_nested_cavities_and_thin_shells():
    """A hollow box holding a hollow box, a cavity leaking through a one-voxel hole, and random blobs."""
    mask = np.zeros((20, 20, 20), bool)
    mask[2:18, 2:18, 2:18] = True
    mask[4:16, 4:16, 4:16] = False  # cavity ...
    mask[7:13, 7:13, 7:13] = True  # ... holding a box ...
    mask[9:11, 9:11, 9:11] = False  # ... with its own cavity
    leaky = mask.copy()
    leaky[2, 10, 10] = False  # the outer cavity now reaches the outside
    for m in (mask, leaky):
        assert np.array_equal(fill_holes(m), ndimage.binary_fill_holes(m))
    rng = np.random.default_rng(7)
    for _ in range(20):
        m = ndimage.gaussian_filter(rng.random((24, 20, 16)), rng.uniform(0.7, 1.5)) > rng.uniform(0.45, 0.55)
        assert np.array_equal(fill_holes(m), ndimage.binary_fill_holes(m))


def test_surface_voxels_are_the_background_touching_the_mask():
    rng = np.random.default_rng(4)
    mask = ndimage.gaussian_filter(rng.random((30, 20, 25)), 1.0) > 0.5
    touching = ndimage.binary_dilation(mask, ndimage.generate_binary_structure(3, 1)) & ~mask
    assert np.array_equal(surface_voxels(mask), np.argwhere(touching))
    full = np.ones((4, 5, 6), bool)
    assert len(surface_voxels(full)) == 0
    assert np.isinf(distance_to_background(full, np.array([[1, 2, 3]]), np.ones(3))).all()


def test_distances_at_skeleton_voxels_equal_the_whole_transform():
    """A tube cut by a face of the array, with hundreds of speckle pieces around it, anisotropic voxels."""
    spacing = np.array([0.33, 0.33, 0.41])
    tube = capsule_mask((50, 40, 60), grid_affine(tuple(spacing)), [((8, 6, 0), (8, 6, 20), 2.5)])  # cut by a face
    mask = speckled(tube, fraction=0.04, seed=5)
    labels, _ = ndimage.label(mask, np.ones((3, 3, 3)))
    at = np.argwhere(skeletonize(mask))
    expected = ndimage.distance_transform_edt(mask, sampling=spacing)[tuple(at.T)]
    assert tube.any() and len(np.unique(labels[tuple(at.T)])) > 100 and expected.max() > 4 * spacing.min()
    assert np.allclose(distance_to_background(mask, at, spacing), expected, rtol=0, atol=1e-12)


def test_speckle_measured_in_one_batch_leaves_the_tube_length():
    """Hundreds of speckle pieces, most of them single chains, measured together: the tube keeps its length and
    the centreline metrics count every piece's length."""
    spacing = (0.4, 0.35, 0.6)
    aff = grid_affine(spacing)
    tube = capsule_mask((60, 40, 70), aff, [((12, 7, 3), (12, 7, 38), 2.0)])
    mask = speckled(tube, fraction=0.03, seed=2)
    clean = analyse_mask(tube, aff).trees[0].length_mm
    assert clean == pytest.approx(35 + 2 * 2.0, rel=0.03)
    every = analyse_mask(mask, aff, TreeSettings(max_trees=None, min_tree_mm3=0.0))
    assert len(every.trees) > 100
    main = max(every.trees, key=lambda t: t.voxels)
    assert clean - 1.0 <= main.length_mm <= clean + 15.0  # speckle touching it may add short branches
    m = centreline_metrics(mask, tube, spacing)
    assert m["tree_length_pred_mm"] == pytest.approx(sum(t.length_mm for t in every.trees), rel=1e-9)
    assert m["cl_cover_ref"] == pytest.approx(1.0)
