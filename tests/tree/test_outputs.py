"""``segvol tree``: files written (JSON, CSV, VTK read back, pictures), the CLI, and bad input."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from segvol.cli import main
from segvol.errors import SegvolError
from segvol.tree.files import CSV_COLUMNS, LESION_COLUMNS, read_vtk_polylines
from segvol.tree.outputs import write_tree
from tests.tree.tubes import capsule_mask, grid_affine, lesion_profile, straight_tube_mask


@pytest.fixture(scope="module")
def y_mask():
    aff = grid_affine((0.6, 0.5, 0.6), (True, False, False), origin=(20.0, -10.0, 30.0))
    p = lambda i, j, k: aff[:3, :3] @ np.array([i, j, k], float) + aff[:3, 3]  # noqa: E731
    caps = [(p(30, 20, 3), p(30, 20, 35), 2.8), (p(30, 20, 35), p(10, 20, 75), 2.2),
            (p(30, 20, 35), p(50, 20, 75), 2.2)]
    return capsule_mask((60, 40, 80), aff, caps).astype(np.uint8) * 2, aff  # label value 2


def test_write_tree_files_agree_with_each_other(y_mask, tmp_path):
    mask, aff = y_mask
    out = write_tree(mask, aff, tmp_path / "tree")
    assert sorted(p.name for p in (tmp_path / "tree").iterdir()) == sorted(
        ["tree.json", "segments.csv", "lesions.csv", "centrelines.vtk", "tree.png", "radius_profiles.png",
         "cpr_tree1_1.png"])  # one main artery: the Y's branches are shorter than 40 mm
    doc = json.loads((tmp_path / "tree" / "tree.json").read_text())
    (tree,) = doc["trees"]
    assert len(tree["segments"]) == 3 and "not a diagnosis" in doc["note"]
    with open(tmp_path / "tree" / "segments.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [float(r["length_mm"]) for r in rows] == pytest.approx([s["length_mm"] for s in tree["segments"]], rel=1e-3)
    points, lines, arrays = read_vtk_polylines(tmp_path / "tree" / "centrelines.vtk")
    assert len(lines) == 3
    for line, seg in zip(lines, out.analysis.segments):
        np.testing.assert_allclose(points[line], seg[1].points_mm, atol=1e-3)  # the same points, in scanner mm
        np.testing.assert_allclose(points[line], np.array(tree["segments"][seg[1].id]["points_mm"]), atol=2e-3)
    assert arrays["radius_mm"].shape == (len(points),)
    assert set(arrays["generation"].tolist()) == {1.0, 2.0}
    for name in ("tree.png", "radius_profiles.png", "cpr_tree1_1.png"):
        assert (tmp_path / "tree" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_narrowing_is_in_the_lesion_table_and_its_artery_picture(tmp_path):
    aff = grid_affine((0.4, 0.4, 0.625), (True, False, False))
    a, b = (aff[:3, :3] @ np.array([40.0, 30.0, k]) + aff[:3, 3] for k in (4.0, 76.0))
    mask = straight_tube_mask((80, 60, 80), aff, a, b, lambda s: 1.5 * lesion_profile(s, 22.0, 6.0, 0.6))
    scan = np.where(mask, 400.0, -50.0)
    out = write_tree(mask, aff, tmp_path / "tree", image=scan, prob=mask.astype(np.float32))
    with open(out.files["lesions.csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == LESION_COLUMNS
    (row,) = [r for r in rows if r["flagged"] == "1"]
    assert row["band"] == "50-69" and abs(float(row["stenosis_pct"]) - 60) <= 5
    doc = json.loads(out.files["tree.json"].read_text())
    (lesion,) = [les for les in doc["trees"][0]["lesions"] if les["flagged"]]
    assert np.linalg.norm(np.array(lesion["point_mm"]) - (a + 22.0 * (b - a) / np.linalg.norm(b - a))) <= 1.5
    assert {span["reason"] for span in doc["trees"][0]["not_assessable"]} >= {"ostium", "tip"}
    assert out.files["cpr_tree1_1.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SegvolError, match="probability map has shape"):
        write_tree(mask, aff, tmp_path / "other", prob=np.zeros((4, 4, 4)))


def test_cli_tree_writes_beside_the_mask_and_refuses_to_overwrite(y_mask, tmp_path, capsys):
    mask, aff = y_mask
    path = tmp_path / "case_seg.nii.gz"
    nib.save(nib.Nifti1Image(mask, aff), str(path))
    assert main(["tree", str(path), "--label", "2", "-q"]) == 0
    assert "3 segments" in capsys.readouterr().out
    out_dir = tmp_path / "case_seg_tree"
    assert (out_dir / "tree.json").is_file()
    before = (out_dir / "tree.json").read_bytes()
    assert main(["tree", str(path), "-q"]) == 2  # exists: refused, untouched
    assert "already exists" in capsys.readouterr().err
    assert (out_dir / "tree.json").read_bytes() == before
    assert main(["tree", str(path), "--overwrite", "--narrowing", "0.3", "-q"]) == 0


def test_empty_mask_and_missing_label_are_one_line_errors(tmp_path, capsys):
    path = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.eye(4)), str(path))
    assert main(["tree", str(path)]) == 2
    err = capsys.readouterr().err
    assert "empty" in err and str(path) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "empty_tree").exists()
    with pytest.raises(SegvolError, match="no voxel labelled 3"):
        write_tree(np.ones((5, 5, 5), np.uint8), np.eye(4), tmp_path / "t", label=3)


@pytest.mark.parametrize("flip", [(False, False, False), (True, False, True), (False, True, False)])
def test_projection_on_the_voxel_grid_shows_every_voxel_where_the_scanner_puts_it(flip):
    from segvol.tree.figures import aligned_projection

    mask = np.random.default_rng(0).random((20, 16, 12)) > 0.97
    aff = grid_affine((0.5, 0.6, 0.7), flip, origin=(3.0, -2.0, 7.0))
    pts = np.argwhere(mask) @ aff[:3, :3].T + aff[:3, 3]
    assert mask.any()
    for a, b in ((0, 2), (0, 1)):
        image, (left, _, bottom, _) = aligned_projection(mask, aff, a, b)
        cols = np.floor((pts[:, a] - left) / abs(aff[a, a])).astype(int)
        rows = np.floor((pts[:, b] - bottom) / abs(aff[b, b])).astype(int)
        assert image[rows, cols].all() and image.sum() == len(set(zip(rows.tolist(), cols.tolist())))
    assert aligned_projection(mask, np.array([[0.6, 0.3, 0, 0], [-0.3, 0.6, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), 0,
                              1) is None  # rotated: drawn from the voxels' scanner points instead
