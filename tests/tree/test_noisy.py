"""Noisy masks (speckle, a network of junctions) are traced to the end and give a sane result."""

from __future__ import annotations

import numpy as np

from segvol.data.phantoms.noise import noise_mask, speckled
from segvol.tree import TreeSettings, analyse_mask
from tests.tree.tubes import capsule_mask, grid_affine


def test_noise_network_is_traced_and_its_small_pieces_reported():
    mask = noise_mask((64, 64, 40), fraction=0.3)
    result = analyse_mask(mask, grid_affine((0.4, 0.4, 0.5)))
    assert mask.any() and result.trees
    big = result.trees[0]
    assert big.voxels > 0.95 * mask.sum()  # one network fills the volume
    assert len(big.segments) > 1000 and big.loops > 100
    assert all(np.isfinite(s.length_mm) and s.length_mm > 0 for s in big.segments)
    assert len(result.pieces) > 50  # the blobs that touch nothing, each reported
    assert sum(t.voxels for t in result.trees) + sum(p.voxels for p in result.pieces) >= mask.sum()  # + cavities


def test_speckle_around_a_tube_leaves_the_tube_the_largest_tree():
    affine = grid_affine((0.5, 0.5, 0.5))
    tube = capsule_mask((90, 60, 60), affine, [((5.0, 15.0, 15.0), (40.0, 15.0, 15.0), 3.0)])
    mask = speckled(tube, fraction=0.03)
    result = analyse_mask(mask, affine, TreeSettings(max_trees=None, min_tree_mm3=0.0))  # as evaluation does
    assert tube.any() and len(result.trees) > 20  # every speckle blob is analysed as a tree of its own
    main = result.trees[0]
    assert main.voxels >= tube.sum()
    assert 30.0 < main.length_mm < 80.0  # the 40 mm tube, with a few speckle branches on it
