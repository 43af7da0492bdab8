from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segvol.app.logic import choose_model, dice_score, mesh_stl, render_slice, safe_name, segment_upload
from segvol.errors import SegvolError


def test_model_priority(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_PATH", "/env/model.onnx")
    assert choose_model(("m.onnx", b"x"), "/typed.onnx", tmp_path).reason == "uploaded file m.onnx"
    assert choose_model(None, "/typed.onnx", tmp_path).path == Path("/typed.onnx")
    assert choose_model(None, "  ", tmp_path).reason == "MODEL_PATH environment variable"
    monkeypatch.delenv("MODEL_PATH")
    assert choose_model(None, None, tmp_path).path == Path("models/model.onnx")


def test_upload_names_cannot_escape(tmp_path):
    assert safe_name("../../etc/passwd.nii.gz", (".nii.gz",)) == "passwd.nii.gz"
    assert safe_name("C:\\x\\..\\scan.nii", (".nii",)) == "scan.nii"
    with pytest.raises(SegvolError, match="expected a .nii"):
        safe_name("scan.png", (".nii", ".nii.gz"))


def test_segment_upload_and_render(onnx_model, imagecas_small):
    from segvol.app.logic import ModelChoice

    data = (imagecas_small / "3.img.nii.gz").read_bytes()
    res = segment_upload([("../3.img.nii.gz", data)], ModelChoice(onnx_model, "test"), device="cpu")
    assert res.mask.shape == res.image.shape and res.mask_bytes[:2] == b"\x1f\x8b" and res.seconds > 0
    mask = np.zeros_like(res.mask)
    mask[10:20, 10:20, :] = 1
    rgb = render_slice(res.image, mask, axis=2, index=5, opacity=1.0)
    red = (rgb[..., 0] == 255) & (rgb[..., 1] == 0) & (rgb[..., 2] == 0)
    assert red.sum() == 100
    assert render_slice(res.image, mask, 2, 5, 0.0)[..., 0][red].std() >= 0  # opacity 0 leaves the scan grey
    assert not ((render_slice(res.image, mask, 2, 5, 0.0)[..., 0] == 255)
                & (render_slice(res.image, mask, 2, 5, 0.0)[..., 1] == 0)).any()

    stl = mesh_stl(mask, res.affine)  # the box's surface, in the scan's millimetres
    n = int.from_bytes(stl[80:84], "little")
    tris = np.frombuffer(stl[84:], np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]), count=n)
    corners = np.array([[10, 10, 0, 1], [19, 19, mask.shape[2] - 1, 1]], float) @ res.affine.T
    lo, hi = corners[:, :3].min(0), corners[:, :3].max(0)
    verts = tris["v"].reshape(-1, 3)
    assert n > 0 and (verts.min(0) >= lo - 1.0).all() and (verts.max(0) <= hi + 1.0).all()
    with pytest.raises(SegvolError, match="mask is empty"):
        mesh_stl(np.zeros_like(mask), res.affine)


def test_bad_uploads_are_messages(onnx_model, tmp_path):
    from segvol.app.logic import ModelChoice

    with pytest.raises(SegvolError, match="not a readable NIfTI"):
        segment_upload([("scan.nii.gz", b"garbage")], ModelChoice(onnx_model, "test"), device="cpu")
    with pytest.raises(SegvolError, match="model not found"):
        segment_upload([("scan.nii.gz", b"x")], ModelChoice(tmp_path / "none.onnx", "typed"), device="cpu")


def test_dice():
    a = np.zeros((4, 4, 4)); b = np.zeros((4, 4, 4))
    assert dice_score(a, b) == 1.0
    a[0, 0, :2] = 1; b[0, 0, 1:3] = 1
    assert dice_score(a, b) == pytest.approx(0.5)


def test_tree_view_of_a_vessel_mask():
    import json

    from segvol.app.logic import tree_view
    from tests.tree.tubes import capsule_mask, grid_affine

    aff = grid_affine((0.5, 0.5, 0.5))
    mask = capsule_mask((30, 30, 60), aff, [((7, 7, 3), (7, 7, 25), 2.5)]).astype(np.uint8)
    view = tree_view(mask, aff)
    assert view.png[:8] == b"\x89PNG\r\n\x1a\n" and "1 segments" in view.summary
    assert len(json.loads(view.json)["trees"][0]["segments"]) == 1
    with pytest.raises(SegvolError, match="empty"):
        tree_view(np.zeros_like(mask), aff)
