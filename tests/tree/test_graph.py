"""Centreline graphs of hand-built masks: straight tubes on anisotropic and mirrored grids, a narrowing, a
bifurcation, and the awkward shapes of real masks (holes, bridges, touching branches, borders, empty)."""

from __future__ import annotations

import numpy as np
import pytest

from segvol.tree import TreeSettings, analyse_mask
from tests.tree.tubes import capsule_mask, grid_affine

GRIDS = [((0.5, 0.7, 0.9), (False, False, False)), ((0.9, 0.5, 0.6), (True, False, True)),
         ((0.6, 0.6, 1.0), (False, True, False))]


@pytest.mark.parametrize("spacing,flip", GRIDS)
def test_straight_tube_through_the_volume_is_one_segment_of_known_length_and_radius(spacing, flip):
    shape = (int(24 / spacing[0]), int(22 / spacing[1]), int(40 / spacing[2]))
    aff = grid_affine(spacing, flip, origin=(-30.0, 12.0, 5.0))
    centre_idx = np.array([shape[0] // 2, shape[1] // 2, 0])
    a = aff[:3, :3] @ centre_idx + aff[:3, 3]
    b = aff[:3, :3] @ (centre_idx + [0, 0, shape[2] - 1]) + aff[:3, 3]
    mask = capsule_mask(shape, aff, [(a - (b - a), b + (b - a), 3.0)])  # runs out of both ends of the volume
    assert mask[:, :, 0].any() and mask[:, :, -1].any()
    result = analyse_mask(mask, aff)
    (tree,) = result.trees
    (seg,) = tree.segments
    assert seg.length_mm == pytest.approx((shape[2] - 1) * spacing[2], abs=max(spacing))  # border to border
    assert abs(seg.mean_radius_mm - 3.0) <= max(spacing)
    assert seg.tortuosity == pytest.approx(1.0, abs=0.01)
    assert not seg.narrowing and result.pieces == []
    ends = sorted(n.point_mm[2] for n in tree.nodes)  # in scanner mm, whatever the voxel order
    assert ends[0] == pytest.approx(min(a[2], b[2]), abs=max(spacing))
    assert ends[1] == pytest.approx(max(a[2], b[2]), abs=max(spacing))


@pytest.mark.parametrize("spacing,flip", GRIDS[:2])
def test_oblique_capsule_length_runs_tip_to_tip(spacing, flip):
    aff = grid_affine(spacing, flip)
    shape = tuple(int(36 / s) for s in spacing)
    lo, hi = aff[:3, 3], aff[:3, :3] @ (np.array(shape) - 1) + aff[:3, 3]
    a, b = lo + 0.2 * (hi - lo), lo + 0.8 * (hi - lo)
    mask = capsule_mask(shape, aff, [(a, b, 2.5)])
    (tree,) = analyse_mask(mask, aff).trees
    (seg,) = tree.segments
    assert seg.length_mm == pytest.approx(np.linalg.norm(b - a) + 2 * 2.5, rel=0.05)
    assert abs(seg.mean_radius_mm - 2.5) <= max(spacing)


def _bifurcation(narrow_branch=None):
    spacing = (0.5, 0.6, 0.5)
    aff = grid_affine(spacing, (True, False, False))
    shape = (80, 50, 110)
    p = lambda i, j, k: aff[:3, :3] @ np.array([i, j, k], float) + aff[:3, 3]  # noqa: E731
    root, fork = p(40, 25, 4), p(40, 25, 45)
    left, right = p(14, 25, 104), p(66, 25, 104)
    caps = [(root, fork, 3.2), (fork, left, 2.6), (fork, right, 2.6)]
    narrowing = None if narrow_branch is None else (narrow_branch, 15.0, 2.0, 0.5)
    return capsule_mask(shape, aff, caps, narrowing), aff, caps


def test_bifurcation_gives_three_segments_with_generations_from_the_root():
    mask, aff, caps = _bifurcation()
    (tree,) = analyse_mask(mask, aff).trees
    assert len(tree.segments) == 3
    assert sorted(n.kind for n in tree.nodes) == ["branch", "end", "end", "root"]
    root = tree.nodes[tree.root]
    assert np.linalg.norm(root.point_mm - caps[0][0]) < 3.2 + 1.0  # the widest end, at the trunk's tip
    gens = sorted(s.generation for s in tree.segments)
    assert gens == [1, 2, 2]
    true_length = sum(np.linalg.norm(b - a) for a, b, _ in caps) + 3.2 + 2 * 2.6
    assert tree.length_mm == pytest.approx(true_length, rel=0.05)
    for seg in tree.segments:
        expected = 3.2 if seg.generation == 1 else 2.6
        assert abs(seg.mean_radius_mm - expected) <= 0.6
        assert not seg.narrowing


def test_fifty_percent_narrowing_is_flagged_there_and_nowhere_else():
    """A Gaussian narrowing, 50 % at one point only: it reads 45 % on this 0.5-0.6 mm grid (flagged at 40 %)."""
    mask, aff, caps = _bifurcation(narrow_branch=1)
    (tree,) = analyse_mask(mask, aff, TreeSettings(narrowing_fraction=0.4)).trees
    flagged = [s for s in tree.segments if s.narrowing]
    assert len(flagged) == 1, [(s.id, s.narrowing_pct) for s in tree.segments]
    seg = flagged[0]
    i = int(np.argmin(np.abs(seg.arclength_mm - seg.narrowing_mm)))
    fork, end = caps[1][0], caps[1][1]
    expected = fork + 15.0 * (end - fork) / np.linalg.norm(end - fork)
    assert np.linalg.norm(seg.points_mm[i] - expected) < 3.0
    assert 35.0 < seg.narrowing_pct < 75.0
    assert seg.min_radius_mm < 0.75 * seg.mean_radius_mm


def test_a_stricter_threshold_silences_the_cue():
    mask, aff, _ = _bifurcation(narrow_branch=1)
    (tree,) = analyse_mask(mask, aff, TreeSettings(narrowing_fraction=0.8)).trees
    assert not any(s.narrowing for s in tree.segments)


def test_cavity_inside_a_tube_changes_nothing():
    aff = grid_affine((0.5, 0.5, 0.5))
    mask = capsule_mask((40, 40, 80), aff, [((10, 10, 5), (10, 10, 33), 4.0)])
    holed = mask.copy()
    holed[19:22, 19:22, 30:40] = False  # a closed cavity on the axis
    (plain,), (tree,) = analyse_mask(mask, aff).trees, analyse_mask(holed, aff).trees
    assert len(tree.segments) == 1
    assert tree.length_mm == pytest.approx(plain.length_mm, abs=0.5)


def test_one_voxel_bridge_joins_two_tubes_into_one_tree():
    aff = grid_affine((0.5, 0.5, 0.5))
    mask = capsule_mask((60, 30, 80), aff, [((7, 7, 5), (7, 7, 33), 2.5), ((22, 7, 5), (22, 7, 33), 2.5)])
    assert len(analyse_mask(mask, aff).trees) == 2
    bridged = mask.copy()
    bridged[14:39, 14, 40] = True  # a one-voxel-thick line between the two
    result = analyse_mask(bridged, aff)
    assert len(result.trees) == 1
    (tree,) = result.trees
    assert sorted(n.kind for n in tree.nodes).count("branch") == 2
    assert len(tree.segments) == 5  # two tubes split by the bridge, and the bridge


def test_touching_branches_make_a_loop_not_a_crash():
    aff = grid_affine((0.5, 0.5, 0.5))
    ring = [((10, 5, 5), (10, 5, 30), 2.0), ((10, 5, 30), (10, 20, 30), 2.0), ((10, 20, 30), (10, 20, 5), 2.0),
            ((10, 20, 5), (10, 5, 5), 2.0)]
    mask = capsule_mask((40, 52, 72), aff, ring)
    (tree,) = analyse_mask(mask, aff).trees
    assert tree.loops == 1
    assert tree.length_mm == pytest.approx(2 * 25 + 2 * 15, rel=0.1)


def test_small_detached_pieces_are_reported_not_dropped():
    aff = grid_affine((0.5, 0.5, 0.5))
    mask = capsule_mask((40, 40, 80), aff, [((10, 10, 5), (10, 10, 33), 3.0)])
    mask[2:4, 2:4, 2:4] = True  # 8 voxels = 1 mm^3
    mask[35:37, 2:4, 70:72] = True
    result = analyse_mask(mask, aff)
    assert len(result.trees) == 1
    assert len(result.pieces) == 2
    assert all(p.voxels == 8 and p.volume_mm3 == pytest.approx(1.0) for p in result.pieces)


@pytest.mark.parametrize("flip", [False, True])
def test_two_trees_are_named_by_side_in_scanner_coordinates(flip):
    aff = grid_affine((0.5, 0.5, 0.5), (flip, False, False), origin=(0.0, 0.0, 0.0))
    x20, x100 = (float(aff[0, 0] * i + aff[0, 3]) for i in (20, 100))
    big = ((x20, 5, 3), (x20, 5, 27), 3.0)  # the larger tree
    small = ((x100, 5, 3), (x100, 5, 20), 2.0)
    mask = capsule_mask((120, 20, 60), aff, [big, small])
    result = analyse_mask(mask, aff)
    names = {t.name: t.centroid_mm[0] for t in result.trees}
    assert set(names) == {"left", "right"}
    assert names["left"] < names["right"]  # RAS+: patient left has the smaller x


def test_empty_mask_gives_no_tree():
    result = analyse_mask(np.zeros((10, 10, 10), bool), np.eye(4))
    assert result.trees == [] and result.pieces == []


@pytest.mark.parametrize("width", [4, 8])
def test_blocky_tube_with_an_even_square_section_keeps_its_centreline(width):
    """scikit-image's 3D thinning deletes such tubes entirely (its issue #3757); nearest-neighbour upsampled
    masks are made of them."""
    mask = np.zeros((20, 20, 40), bool)
    mask[6:6 + width, 6:6 + width, 3:37] = True
    aff = grid_affine((0.4, 0.4, 0.5))
    (tree,) = analyse_mask(mask, aff).trees
    (seg,) = tree.segments
    assert seg.length_mm == pytest.approx(34 * 0.5, abs=1.0)  # face to face


def test_root_is_the_trunk_not_a_distal_bulb():
    """The ostium is the free end of the widest terminal segment: a trunk whose cut end tapers (its first voxels read
    thin) beats a thin branch ending in a bulb (its first voxels read wide)."""
    aff = grid_affine((0.5, 0.5, 0.5))
    p = lambda i, j, k: aff[:3, :3] @ np.array([i, j, k], float) + aff[:3, 3]  # noqa: E731
    ostium, fork, tip = p(30, 30, 4), p(30, 30, 70), p(30, 96, 110)
    caps = [(p(30, 30, 12), fork, 2.2), (ostium, p(30, 30, 12), 0.9),  # the trunk, tapering to its cut ostium
            (fork, tip, 0.8), (tip, tip + 0.5, 2.0),  # a thin branch ending in a bulb
            (fork, p(30, 2, 100), 1.0)]  # and another branch
    (tree,) = analyse_mask(capsule_mask((60, 104, 118), aff, caps), aff).trees
    root = tree.nodes[tree.root]
    assert np.linalg.norm(root.point_mm - ostium) < 3.0, root.point_mm
    first = next(s for s in tree.segments if s.generation == 1)
    assert first.mean_radius_mm > 1.5  # the trunk is the first segment
