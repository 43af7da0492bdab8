"""Radii from cross-sections against analytic tubes: straight, curved, tapering and branching, oblique in a
mirrored anisotropic grid (0.4 x 0.4 x 0.625 mm, the grid of coronary CTA)."""

from __future__ import annotations

import numpy as np
import pytest

from segvol.tree import analyse_mask
from tests.tree.tubes import arc_points, grid_affine, tube_mask

SPACING = (0.4, 0.4, 0.625)
FLIP = (True, False, True)


def _grid(extent_mm):
    shape = tuple(int(np.ceil(e / s)) + 1 for e, s in zip(extent_mm, SPACING))
    assert max(shape) <= 120
    return shape, grid_affine(SPACING, FLIP, origin=(40.0, -20.0, 35.0))


def _inside(shape, aff, t):
    """Scanner point at fraction ``t`` (3,) of the box."""
    return aff[:3, :3] @ (np.asarray(t) * (np.array(shape) - 1)) + aff[:3, 3]


def _volume_ratio(result, mask, aff):
    """Sum of pi r^2 dl over every segment, against the mask's volume."""
    v = sum(float(np.sum(np.pi * 0.5 * (s.radii_mm[:-1] ** 2 + s.radii_mm[1:] ** 2) * np.diff(s.arclength_mm)))
            for _, s in result.segments)
    return v / (mask.sum() * abs(np.linalg.det(aff[:3, :3])))


@pytest.mark.parametrize("radius", [0.8, 1.2, 2.0, 3.0])
def test_oblique_straight_tube_radius_volume_and_length(radius):
    shape, aff = _grid((44, 44, 60))
    a, b = _inside(shape, aff, (0.15, 0.8, 0.12)), _inside(shape, aff, (0.85, 0.25, 0.88))
    pts = a + np.linspace(0, 1, 200)[:, None] * (b - a)
    mask = tube_mask(shape, aff, pts, np.full(len(pts), radius))
    assert mask.any() and not mask[0].any() and not mask[-1].any()
    result = analyse_mask(mask, aff)
    (seg,) = result.trees[0].segments
    assert seg.mean_radius_mm == pytest.approx(radius, rel=0.05)  # radius >= 2 voxels of the finest axis
    assert _volume_ratio(result, mask, aff) == pytest.approx(1.0, abs=0.10)
    assert seg.length_mm == pytest.approx(np.linalg.norm(b - a) + 2 * radius, rel=0.03)  # tip to tip
    assert not result.trees[0].lesions and not seg.narrowing


def test_arc_reads_its_radius():
    shape, aff = _grid((46, 46, 40))
    centre = _inside(shape, aff, (0.5, 0.5, 0.5))
    pts = arc_points(centre, 19.0, 0, 180, axis_u=(1, 0, 0.3), axis_v=(0, 1, 0))  # 60 mm of arc, tilted
    mask = tube_mask(shape, aff, pts, np.full(len(pts), 1.5))
    assert mask.any()
    result = analyse_mask(mask, aff)
    (seg,) = result.trees[0].segments
    assert seg.mean_radius_mm == pytest.approx(1.5, rel=0.05)  # it read 1.28 mm from the distance transform
    assert _volume_ratio(result, mask, aff) == pytest.approx(1.0, abs=0.10)
    assert not result.trees[0].lesions


def test_tapering_tube_follows_its_radius():
    shape, aff = _grid((30, 30, 70))
    a, b = _inside(shape, aff, (0.5, 0.3, 0.08)), _inside(shape, aff, (0.4, 0.7, 0.92))
    t = np.linspace(0, 1, 300)
    true_r = 3.0 - 1.8 * t  # 3.0 -> 1.2 mm
    mask = tube_mask(shape, aff, a + t[:, None] * (b - a), true_r)
    assert mask.any()
    result = analyse_mask(mask, aff)
    (seg,) = result.trees[0].segments
    along = np.clip((seg.points_mm - a) @ (b - a) / np.dot(b - a, b - a), 0, 1)
    if seg.start != result.trees[0].root:  # the root is the wide end
        pytest.fail("the root is not at the wide end")
    expected = 3.0 - 1.8 * along
    rel = np.abs(seg.radii_mm[seg.valid] / expected[seg.valid] - 1)
    assert seg.valid.sum() > 0.7 * len(seg.valid) and np.median(rel) < 0.05
    assert _volume_ratio(result, mask, aff) == pytest.approx(1.0, abs=0.10)
    assert not any(s.narrowing for _, s in result.segments) and not result.trees[0].lesions


def test_bifurcation_radii_and_volume():
    shape, aff = _grid((44, 30, 70))
    root, fork = _inside(shape, aff, (0.5, 0.5, 0.06)), _inside(shape, aff, (0.5, 0.5, 0.45))
    left, right = _inside(shape, aff, (0.15, 0.4, 0.94)), _inside(shape, aff, (0.85, 0.6, 0.94))
    t = np.linspace(0, 1, 150)[:, None]
    parts = [(root + t * (fork - root), 2.5), (fork + t * (left - fork), 2.0), (fork + t * (right - fork), 1.6)]
    mask = np.zeros(shape, bool)
    for pts, r in parts:
        mask |= tube_mask(shape, aff, pts, np.full(len(pts), r))
    assert mask.any()
    result = analyse_mask(mask, aff)
    (tree,) = result.trees
    assert len(tree.segments) == 3
    for seg in tree.segments:
        mid = seg.points_mm[len(seg.points_mm) // 2]
        truth = min(parts, key=lambda p: np.linalg.norm(p[0] - mid, axis=1).min())[1]
        assert seg.mean_radius_mm == pytest.approx(truth, rel=0.05), seg.id
        assert seg.junction.any() and not seg.junction.all()  # the junction zone is marked, and only there
    assert _volume_ratio(result, mask, aff) == pytest.approx(1.0, abs=0.10)
    assert not tree.lesions


def test_probability_map_is_cut_instead_of_the_mask():
    """A smooth probability (a logistic of the signed distance) on a coarse 0.8 mm grid: the 0.5 edge lies on the
    true wall, so the radius is right where the mask's voxels are coarse."""
    aff = grid_affine((0.8, 0.8, 0.8), (False, True, False))
    shape = (40, 40, 60)
    a, b = _inside(shape, aff, (0.3, 0.6, 0.1)), _inside(shape, aff, (0.7, 0.4, 0.9))
    p = np.indices(shape).reshape(3, -1).T @ aff[:3, :3].T + aff[:3, 3]
    t = np.clip((p - a) @ (b - a) / np.dot(b - a, b - a), 0, 1)
    dist = np.linalg.norm(p - (a + t[:, None] * (b - a)), axis=1) - 1.7
    prob = (1 / (1 + np.exp(dist / 0.3))).reshape(shape).astype(np.float32)
    mask = prob >= 0.5
    assert mask.any()
    (seg,) = analyse_mask(mask, aff, prob=prob).trees[0].segments
    assert seg.mean_radius_mm == pytest.approx(1.7, rel=0.03)
