"""Centreline metrics of ``segvol evaluate`` against hand-built cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segvol.evaluation.centreline import centreline_metrics
from segvol.evaluation.metrics import METRIC_NAMES, binary_metrics
from tests.tree.tubes import capsule_mask, grid_affine

SPACING = (0.5, 0.5, 0.5)


def _masks():
    aff = grid_affine(SPACING)
    shape = (70, 30, 90)
    trunk, left, right = ((17, 7, 3), (17, 7, 20), 2.0), ((17, 7, 20), (5, 7, 40), 1.6), ((17, 7, 20), (29, 7, 40), 1.6)
    ref = capsule_mask(shape, aff, [trunk, left, right])
    missing_right = capsule_mask(shape, aff, [trunk, left])
    return ref, missing_right, (trunk, left, right)


def test_identical_trees_cover_each_other_fully():
    ref, _, _ = _masks()
    m = centreline_metrics(ref, ref, SPACING)
    assert m["cl_cover_ref"] == pytest.approx(1.0) and m["cl_cover_pred"] == pytest.approx(1.0)
    assert m["branches_ref"] == 3 and m["branches_detected"] == 3 and m["branches_missed"] == 0
    assert m["tree_length_err_pct"] == pytest.approx(0.0)


def test_a_missing_branch_is_missed_and_uncovered():
    ref, pred, (trunk, left, right) = _masks()
    assert pred.any()
    m = centreline_metrics(pred, ref, SPACING)
    assert m["branches_ref"] == 3 and m["branches_detected"] == 2 and m["branches_missed"] == 1
    seg = lambda c: float(np.linalg.norm(np.subtract(c[1], c[0])))  # noqa: E731
    total = seg(trunk) + seg(left) + seg(right) + trunk[2] + left[2] + right[2]
    # the right branch beyond the fork's radius is not traced by the prediction
    assert m["cl_cover_ref"] == pytest.approx(1 - (seg(right) + right[2] - trunk[2]) / total, abs=0.08)
    assert m["cl_cover_pred"] > 0.97  # what was traced is all real
    assert m["tree_length_err_pct"] == pytest.approx(-100 * (seg(right) + right[2]) / total, abs=6.0)
    r = centreline_metrics(ref, pred, SPACING)  # roles swapped: an extra branch
    assert r["cl_cover_pred"] == pytest.approx(m["cl_cover_ref"], abs=0.02)
    assert r["branches_missed"] == 0 and r["tree_length_err_pct"] > 0


def test_a_shifted_prediction_is_covered_only_within_the_radius():
    aff = grid_affine(SPACING)
    ref = capsule_mask((40, 40, 80), aff, [((10, 10, 5), (10, 10, 33), 1.5)])
    near = capsule_mask((40, 40, 80), aff, [((11, 10, 5), (11, 10, 33), 1.5)])  # 1 mm off: within the radius
    far = capsule_mask((40, 40, 80), aff, [((14, 10, 5), (14, 10, 33), 1.5)])  # 4 mm off: apart
    assert centreline_metrics(near, ref, SPACING)["cl_cover_ref"] > 0.95
    m = centreline_metrics(far, ref, SPACING)
    assert m["cl_cover_ref"] == 0.0 and m["branches_detected"] == 0
    assert m["tree_length_err_pct"] == pytest.approx(0.0, abs=3.0)  # same length, wrong place


def test_empty_cases():
    empty, ref = np.zeros((20, 20, 20), bool), np.zeros((20, 20, 20), bool)
    ref[5:15, 9:12, 9:12] = True
    both = centreline_metrics(empty, empty, SPACING)
    assert both["cl_cover_ref"] == 1.0 and both["tree_length_err_pct"] == 0.0
    no_pred = centreline_metrics(empty, ref, SPACING)
    assert no_pred["cl_cover_ref"] == 0.0 and math.isnan(no_pred["cl_cover_pred"])
    assert no_pred["branches_missed"] == no_pred["branches_ref"] == 2 and no_pred["tree_length_err_pct"] == -100.0
    no_ref = centreline_metrics(ref, empty, SPACING)
    assert math.isnan(no_ref["cl_cover_ref"]) and math.isinf(no_ref["tree_length_err_pct"])


def test_binary_metrics_carries_them_for_vessels_only():
    ref, pred, _ = _masks()
    with_vessel = binary_metrics(pred, ref, SPACING, vessel=True)
    assert set(with_vessel) == set(METRIC_NAMES)
    assert with_vessel["branches_missed"] == 1
    assert math.isnan(binary_metrics(pred, ref, SPACING, vessel=False)["cl_cover_ref"])


def test_evaluate_folders_reports_them_beside_cldice(tmp_path):
    import nibabel as nib

    from segvol import api

    ref, pred, _ = _masks()
    aff = grid_affine(SPACING)
    for folder, mask in (("ref", ref), ("pred", pred)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), aff), str(tmp_path / folder / "1.label.nii.gz"))
    result = api.evaluate(pred=tmp_path / "pred", ref=tmp_path / "ref", out=tmp_path / "run" / "eval", gif=False,
                          progress=False)
    stats = result.summary["metrics"]["foreground"]
    assert stats["branches_missed"]["mean"] == 1.0 and 0.5 < stats["cl_cover_ref"]["mean"] < 0.9
    md, _ = api.report(run=tmp_path / "run")
    text = md.read_text()
    assert "### Centrelines" in text and "cl_cover_ref" in text and "cldice" in text
