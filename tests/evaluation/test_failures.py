"""Failure analysis: component locations in scanner mm and the rules behind the one-line readings."""

from __future__ import annotations

import numpy as np
import pytest

from segvol.data.brats import BRATS_LABEL_NAMES
from segvol.data.registry import region_schemes
from segvol.labels import class_defs, class_mask, guess_scheme
from segvol.evaluation.evaluate import score_case
from segvol.evaluation.failures import analyse_errors

AFFINE = np.diag([0.5, 0.5, 2.0, 1.0])
AFFINE[:3, 3] = [-10.0, 20.0, 30.0]
SPACING = (0.5, 0.5, 2.0)


def vessel_tree(shape=(80, 40, 20)):
    """A thick trunk along x (radius 3 voxels) and a thin branch (radius 1) along y."""
    i, j, k = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    trunk = ((j - 10) ** 2 + (k - 10) ** 2 <= 9) & (i >= 5) & (i < 75)
    branch = ((i - 40) ** 2 + (k - 10) ** 2 <= 1) & (j >= 10) & (j < 38)
    return trunk | branch, branch & ~trunk


def test_missed_thin_branch_is_read_as_distal_branches():
    ref, branch = vessel_tree()
    pred = ref & ~branch
    found = analyse_errors(pred, ref, AFFINE, SPACING, "artery", vessel=True)
    assert found["reading"].startswith("misses small distal branches")
    assert found["fp_ml"] == 0 and found["fn_ml"] == pytest.approx(branch.sum() * 0.5 / 1000)
    comp = found["missed"][0]
    centre_vox = np.argwhere(branch).mean(axis=0)
    assert comp["centroid_mm"] == pytest.approx(list(centre_vox * [0.5, 0.5, 2.0] + [-10, 20, 30]), abs=0.1)
    assert not comp["detached"]  # the branch stays attached to the predicted trunk


def test_large_bright_detached_false_positive():
    ref, _ = vessel_tree()
    image = np.zeros(ref.shape, np.float32)
    image[ref] = 400.0
    blob = np.zeros_like(ref)
    blob[50:75, 25:40, 2:8] = True  # 25*15*6 voxels * 0.5 mm³ = 1.1 mL, away from the vessels
    image[blob] = 450.0
    found = analyse_errors(ref | blob, ref, AFFINE, SPACING, "artery", image=image, vessel=True)
    assert found["reading"].startswith("false positive in a large bright structure")
    assert found["spurious_objects"] == 1 and found["spurious"][0]["detached"]
    image[blob] = 50.0  # the same blob, dark: just a detached spurious component
    found = analyse_errors(ref | blob, ref, AFFINE, SPACING, "artery", image=image, vessel=True)
    assert "spurious detached component" in found["reading"]


def test_edema_under_segmentation_and_empty_predictions():
    labels = np.zeros((30, 30, 10), np.int16)
    labels[5:25, 5:25, 2:8] = 2  # edema
    labels[10:20, 10:20, 3:7] = 1  # core
    labels[12:18, 12:18, 4:6] = 4  # enhancing
    pred = labels.copy()
    pred[labels == 2] = 0  # edema missed
    wt = class_defs("brats", schemes=region_schemes())[1]
    found = analyse_errors(class_mask(pred, wt), class_mask(labels, wt), AFFINE, SPACING, "wt",
                           ref_labels=labels, label_names=BRATS_LABEL_NAMES)
    assert found["reading"].startswith("under-segments edema")
    empty = analyse_errors(np.zeros(labels.shape, bool), labels > 0, AFFINE, SPACING, "wt")
    assert empty["reading"].startswith("misses the wt entirely")
    both = analyse_errors(np.zeros(labels.shape, bool), np.zeros(labels.shape, bool), AFFINE, SPACING, "wt")
    assert both["reading"] == "nothing to find, nothing found"


def test_brats_regions_from_label_values():
    ref = np.zeros((10, 10, 4), np.int16)
    ref[0:4] = 2  # 40*4 = 160 edema voxels
    ref[4:6] = 1  # 80 core
    ref[6:7] = 4  # 40 enhancing
    pred = ref.copy()
    pred[6:7] = 1  # enhancing predicted as necrotic core
    assert guess_scheme(np.unique(ref), region_schemes()) == "brats"
    rows = {r["class"]: r for r in score_case("c", pred, ref, np.eye(4), class_defs("brats", schemes=region_schemes()))}
    assert rows["wt"]["dice"] == pytest.approx(1.0) and rows["tc"]["dice"] == pytest.approx(1.0)
    assert rows["et"]["dice"] == 0 and rows["et"]["sensitivity"] == 0
    # BraTS 2023 (enhancing = 3) scores the same way
    rows23 = {r["class"]: r for r in score_case("c", np.where(pred == 4, 3, pred), np.where(ref == 4, 3, ref),
                                                np.eye(4), class_defs("brats", schemes=region_schemes()))}
    assert rows23["et"]["dice"] == 0 and rows23["tc"]["dice"] == pytest.approx(1.0)


def test_scheme_guess():
    assert guess_scheme([0, 1]) == "binary"
    assert guess_scheme([0, 1, 2, 4], region_schemes()) == "brats"
    assert guess_scheme([0, 1, 2, 4]) == "multi"  # no region scheme offered: this module knows no dataset
    assert guess_scheme([0, 1, 2, 3], region_schemes()) == "multi"
    assert [c.name for c in class_defs("multi", [0, 3, 1], ["a", "b", "c"])] == ["a", "c"]
