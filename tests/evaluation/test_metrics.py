"""Each metric against answers worked out by hand on small masks, including anisotropic spacing and empties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segvol.evaluation.metrics import binary_metrics, cldice, count_components, overlap_metrics, surface_distances


def cube(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def test_overlap_counts_by_hand():
    # ref: 2x2x2 = 8 voxels; pred: 2x2x3 = 12 voxels, overlapping the ref in all 8
    ref = cube((6, 6, 6), (1, 1, 1), (3, 3, 3))
    pred = cube((6, 6, 6), (1, 1, 1), (3, 3, 4))
    m = overlap_metrics(pred, ref, voxel_ml=0.002)  # 2 mm³ voxels
    assert m["dice"] == pytest.approx(2 * 8 / 20)
    assert m["iou"] == pytest.approx(8 / 12)
    assert m["precision"] == pytest.approx(8 / 12)
    assert m["sensitivity"] == pytest.approx(1.0)
    assert m["ref_ml"] == pytest.approx(0.016) and m["pred_ml"] == pytest.approx(0.024)
    assert m["vol_diff_ml"] == pytest.approx(0.008) and m["vol_diff_pct"] == pytest.approx(50.0)
    assert m["fp_ml"] == pytest.approx(0.008) and m["fn_ml"] == 0


def test_distances_on_an_anisotropic_grid():
    # the same 2x2x2 cube shifted by 2 voxels along an axis with 2 mm spacing (4 mm) or 0.5 mm spacing (1 mm)
    a = cube((8, 8, 8), (2, 2, 2), (4, 4, 4))
    b = cube((8, 8, 8), (2, 2, 4), (4, 4, 6))
    d = surface_distances(b, a, spacing=(1.0, 1.0, 2.0))
    # every voxel is a surface voxel; slice z=2 is 2 slices (4 mm) from the nearest of b, z=3 1 slice (2 mm)
    assert d["hd95_mm"] == pytest.approx(np.percentile([4, 4, 4, 4, 2, 2, 2, 2], 95))
    assert d["asd_mm"] == pytest.approx(3.0)
    d = surface_distances(b, a, spacing=(1.0, 1.0, 0.5))
    assert d["asd_mm"] == pytest.approx(0.75) and d["hd95_mm"] == pytest.approx(1.0)


def test_asymmetric_distances_by_hand():
    # ref: one voxel; pred: that voxel and another 3 slices away at 2 mm spacing (6 mm)
    ref = np.zeros((5, 5, 8), bool)
    ref[2, 2, 2] = True
    pred = ref.copy()
    pred[2, 2, 5] = True
    d = surface_distances(pred, ref, spacing=(1.0, 1.0, 2.0))
    # directed ref->pred {0}; pred->ref {0, 6}; HD95 = max of the directed 95th percentiles; ASD = mean of all
    assert d["hd95_mm"] == pytest.approx(np.percentile([0.0, 6.0], 95))  # 5.7
    assert d["asd_mm"] == pytest.approx(2.0)


def test_both_empty():
    empty = np.zeros((4, 4, 4), bool)
    m = binary_metrics(empty, empty, (1.0, 1.0, 1.0), vessel=True)
    assert m["dice"] == m["iou"] == m["precision"] == m["sensitivity"] == 1.0
    assert m["hd95_mm"] == m["asd_mm"] == 0.0
    assert m["cldice"] == 1.0 and m["vol_diff_pct"] == 0.0
    assert m["ref_components"] == m["pred_components"] == 0


def test_prediction_empty():
    ref = cube((6, 6, 6), (1, 1, 1), (3, 3, 3))
    m = binary_metrics(np.zeros_like(ref), ref, (1.0, 1.0, 1.0), vessel=True)
    assert m["dice"] == 0 and m["iou"] == 0 and m["sensitivity"] == 0
    assert math.isnan(m["precision"])
    assert math.isinf(m["hd95_mm"]) and math.isinf(m["asd_mm"])
    assert m["cldice"] == 0 and m["vol_diff_pct"] == -100.0


def test_reference_empty():
    pred = cube((6, 6, 6), (1, 1, 1), (3, 3, 3))
    m = binary_metrics(pred, np.zeros_like(pred), (1.0, 1.0, 1.0))
    assert m["dice"] == 0 and m["precision"] == 0
    assert math.isnan(m["sensitivity"]) and math.isinf(m["hd95_mm"])
    assert math.isinf(m["vol_diff_pct"]) and math.isnan(m["cldice"])  # vessel=False: not computed


def tube(length_from=5, length_to=45, gap=None):
    m = np.zeros((50, 9, 9), bool)
    m[length_from:length_to, 3:6, 3:6] = True
    if gap:
        m[gap[0]:gap[1]] = False
    return m


def test_cldice_on_a_tube_with_a_gap():
    ref = tube()  # 3x3 bar along x from 5 to 44: its skeleton is the 40-voxel centre line
    pred = tube(gap=(23, 27))  # a 4-voxel gap
    # Tprec: the predicted skeleton lies inside the reference = 1; Tsens: 36 of 40 centre-line voxels predicted
    tsens = 36 / 40
    assert cldice(pred, ref) == pytest.approx(2 * tsens / (1 + tsens))
    assert cldice(ref, ref) == pytest.approx(1.0)


def test_cldice_ignores_thickness_but_not_breaks():
    ref = tube()
    fat = np.zeros_like(ref)
    fat[5:45, 2:7, 2:7] = True  # over-segmented but topologically right
    assert cldice(fat, ref) == pytest.approx(1.0)
    assert overlap_metrics(fat, ref)["dice"] < 0.6
    broken = fat.copy()
    broken[20:30] = False
    assert cldice(broken, ref) < 0.9


def test_components_counted_with_26_connectivity():
    m = np.zeros((6, 6, 6), bool)
    m[1, 1, 1] = m[2, 2, 2] = True  # diagonal neighbours: one component
    m[4, 4, 4] = True
    assert count_components(m) == 2
    metrics = binary_metrics(m, m, (1, 1, 1))
    assert metrics["ref_components"] == metrics["pred_components"] == 2


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        binary_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)), (1, 1, 1))


def test_crop_to_union_keeps_every_voxel_of_both_masks():
    from segvol.evaluation.metrics import crop_to_union

    rng = np.random.default_rng(0)
    for _ in range(20):
        pred, ref = np.zeros((30, 20, 25), bool), np.zeros((30, 20, 25), bool)
        for mask in (pred, ref):
            idx = tuple(rng.integers(0, s, 4) for s in mask.shape)
            mask[idx] = True
        p, r = crop_to_union(pred, ref, margin=1)
        assert p.sum() == pred.sum() and r.sum() == ref.sum()  # nothing cut off
        coords = np.argwhere(pred | ref)
        expected = tuple(min(int(hi) + 2, s) - max(int(lo) - 1, 0)
                         for lo, hi, s in zip(coords.min(0), coords.max(0), pred.shape))
        assert p.shape == r.shape == expected  # the tight box plus the margin, clipped at the borders
    empty = np.zeros((4, 4, 4), bool)
    assert crop_to_union(empty, empty)[0].size == 0
