"""``segvol infer --tree``: the artery tree folder beside the mask."""

from __future__ import annotations

import json

import numpy as np

from segvol.cli import main
from tests.conftest import write_nifti
from tests.inference.test_infer_geometry import untrained_ckpt  # noqa: F401
from tests.tree.tubes import capsule_mask, grid_affine


def test_infer_writes_the_tree_of_the_mask(tmp_path, untrained_ckpt, bright_model, capsys):  # noqa: F811
    affine = grid_affine((0.8, 0.8, 1.0), (True, False, False), origin=(10.0, -5.0, 20.0))
    tube = capsule_mask((40, 30, 36), affine, [(affine[:3, :3] @ (20, 15, 4) + affine[:3, 3],
                                                affine[:3, :3] @ (20, 15, 31) + affine[:3, 3], 3.0)])
    image = np.where(tube, 500, -100).astype(np.int16)
    scan = write_nifti(tmp_path / "cta.nii.gz", image, affine)
    args = ["infer", str(scan), "--model", str(untrained_ckpt), "--device", "cpu", "--tree"]
    assert main(args) == 0
    doc = json.loads((tmp_path / "cta_seg_tree" / "tree.json").read_text())
    (tree,) = doc["trees"]
    assert len(tree["segments"]) == 1
    assert abs(tree["segments"][0]["length_mm"] - (27 + 6)) < 3  # tip to tip of the bright tube, in mm
    capsys.readouterr()
    (tmp_path / "cta_seg.nii.gz").unlink()
    assert main(args) == 2  # the tree folder exists: refused before anything is written
    assert "cta_seg_tree: already exists" in capsys.readouterr().err
