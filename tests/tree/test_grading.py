"""Stenosis grading against analytic narrowings: CAD-RADS band, place and length; healthy tubes, tapers, arcs and
bifurcations never flagged; places that cannot be graded reported as not assessable; real disease-free trees
unflagged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segvol.tree import analyse_mask
from segvol.tree.records import band_of
from tests.tree.tubes import arc_points, grid_affine, lesion_profile, straight_tube_mask, tube_mask

SPACING = (0.4, 0.4, 0.625)
REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "coronary"


def _narrowed_tube(fraction, length, radius=1.5, centre=22.0):
    """An oblique 44 mm tube on a mirrored anisotropic grid, narrowed by ``fraction`` of its diameter over
    ``length`` mm centred ``centre`` mm from its start."""
    aff = grid_affine(SPACING, (False, True, True), origin=(-10.0, 30.0, 80.0))
    shape = (90, 70, 80)
    lo, hi = aff[:3, 3], aff[:3, :3] @ (np.array(shape) - 1) + aff[:3, 3]
    a, b = lo + np.array([0.2, 0.3, 0.1]) * (hi - lo), lo + np.array([0.8, 0.6, 0.9]) * (hi - lo)
    mask = straight_tube_mask(shape, aff, a, b, lambda s: radius * lesion_profile(s, centre, length, fraction))
    return mask, aff, a + centre * (b - a) / np.linalg.norm(b - a)


@pytest.mark.parametrize("fraction,length", [(0.5, 3.0), (0.5, 8.0), (0.55, 5.0), (0.7, 3.0), (0.7, 8.0), (0.75, 4.0)])
def test_stenosis_is_flagged_in_its_band_at_its_place(fraction, length):
    mask, aff, where = _narrowed_tube(fraction, length)
    assert mask.any()
    (tree,) = analyse_mask(mask, aff).trees
    flagged = [les for les in tree.lesions if les.flagged]
    assert len(flagged) == 1, [(les.pct, les.at_mm) for les in tree.lesions]
    (les,) = flagged
    # in its band; a narrowing right on a band's edge may read a little either side of it
    assert les.band == band_of(100 * fraction) or abs(les.pct - 100 * fraction) <= 2.5, les.pct
    assert abs(les.pct - 100 * fraction) <= 5.0
    assert np.linalg.norm(les.point_mm - where) <= 1.5
    assert length - 2.5 <= les.length_mm <= length + 1.5
    assert tree.segments[les.segment].narrowing


def test_mild_stenosis_is_graded_in_its_band_or_not_flagged():
    mask, aff, where = _narrowed_tube(0.25, 5.0)
    assert mask.any()
    (tree,) = analyse_mask(mask, aff).trees
    assert not any(les.flagged for les in tree.lesions)
    for les in tree.lesions:
        assert les.band == "25-49" and np.linalg.norm(les.point_mm - where) <= 1.5


def test_healthy_tubes_tapers_arcs_and_bifurcations_are_never_flagged():
    aff = grid_affine(SPACING, (True, False, False))
    shape = (100, 100, 64)
    centre = aff[:3, :3] @ ((np.array(shape) - 1) / 2) + aff[:3, 3]
    masks = []
    arc = arc_points(centre, 15.0, -20, 200, axis_u=(1, 0, 0.2), axis_v=(0, 1, 0))
    masks.append(tube_mask(shape, aff, arc, np.linspace(2.2, 1.2, len(arc))))  # an arc that tapers
    a, fork = centre + [0, -16, -8], centre + [0, 0, 0]
    t = np.linspace(0, 1, 120)[:, None]
    y = np.zeros(shape, bool)
    for end, r0, r1 in ((fork, 2.8, 2.5), (centre + [-14, 16, 8], 2.2, 1.6), (centre + [14, 14, 6], 1.8, 1.3)):
        start = a if end is fork else fork
        y |= tube_mask(shape, aff, start + t * (end - start), np.linspace(r0, r1, len(t)))
    masks.append(y)
    for mask in masks:
        assert mask.any()
        result = analyse_mask(mask, aff)
        assert result.trees and not any(les.flagged for t in result.trees for les in t.lesions)
        assert not any(s.narrowing for _, s in result.segments)


def test_what_cannot_be_graded_is_reported_with_the_reason():
    mask, aff, _ = _narrowed_tube(0.5, 4.0, radius=0.5)  # a 1 mm vessel: below what the grid resolves
    (tree,) = analyse_mask(mask, aff).trees
    assert not tree.lesions
    reasons = {span.reason for span in tree.not_assessable}
    assert {"ostium", "tip"} <= reasons and reasons & {"thin", "no reference"}
    assert all(s.grade == "not assessable" for s in tree.segments)


def test_cad_rads_bands():
    assert [band_of(p) for p in (0, 0.4, 1, 24, 24.6, 25, 49, 50, 69.4, 70, 99, 100)] == [
        "0", "0", "1-24", "1-24", "25-49", "25-49", "25-49", "50-69", "50-69", "70-99", "70-99", "100"]


@pytest.mark.skipif(not REAL.is_dir(), reason="the real coronary masks (../shared/data/real/coronary) are absent")
@pytest.mark.parametrize("name", ["Normal_19", "Normal_20"])
def test_real_disease_free_trees_are_not_flagged(name):
    from segvol.io.masks import load_mask

    data, affine = load_mask(REAL / f"{name}.nii.gz")
    mask = np.asarray(data) != 0
    assert mask.any()
    result = analyse_mask(mask, affine)
    assert len(result.trees) == 2
    assert not [(t.name, les.segment, round(les.pct)) for t in result.trees for les in t.lesions if les.flagged]
    assert not any(s.narrowing for _, s in result.segments)
