from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segvol import api
from segvol.app.logic import choose_model, dice_score, mesh_stl, render_slice, safe_name, segment_upload, server_path
from segvol.errors import SegvolError


def test_model_priority(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_PATH", "/env/model.onnx")
    assert choose_model(("m.onnx", b"x"), "/typed.onnx", tmp_path).reason == "uploaded file m.onnx"
    allowed = tmp_path / "data"
    allowed.mkdir()
    typed = choose_model(None, str(allowed / "typed.onnx"), tmp_path, allowed=allowed)
    assert typed.path == (allowed / "typed.onnx").resolve() and typed.reason == "path typed in the sidebar"
    assert choose_model(None, "  ", tmp_path).reason == "MODEL_PATH environment variable"
    monkeypatch.delenv("MODEL_PATH")
    assert choose_model(None, None, tmp_path).path == Path("models/model.onnx")


def test_server_paths_are_off_without_a_data_dir(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"x")
    with pytest.raises(SegvolError, match="reading files on the server is off"):
        choose_model(None, str(model), tmp_path)
    with pytest.raises(SegvolError, match="reading files on the server is off"):
        server_path(str(model), None)


def test_server_paths_outside_the_data_dir_are_refused(tmp_path):
    allowed = tmp_path / "data"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "sub" / "scan.nii.gz").write_bytes(b"x")
    secret = tmp_path / "secret.onnx"
    secret.write_bytes(b"x")
    (allowed / "link.onnx").symlink_to(secret)
    assert server_path("sub/scan.nii.gz", allowed) == (allowed / "sub" / "scan.nii.gz").resolve()  # relative: inside
    assert server_path(str(allowed / "sub" / "scan.nii.gz"), allowed) == (allowed / "sub" / "scan.nii.gz").resolve()
    for outside in (str(secret), "../secret.onnx", "sub/../../secret.onnx", "link.onnx", "/etc/passwd", "~"):
        with pytest.raises(SegvolError, match="outside the app's data folder"):
            server_path(outside, allowed)
    with pytest.raises(SegvolError, match="outside the app's data folder"):
        choose_model(None, str(secret), tmp_path, allowed=allowed)


def test_results_are_keyed_by_content(tmp_path):
    from segvol.app.logic import ModelChoice, result_key

    model = tmp_path / "model.onnx"
    model.write_bytes(b"weights-1")
    choice = ModelChoice(model, "test")
    key = result_key([("scan.nii.gz", b"AAAA")], choice)
    assert result_key([("scan.nii.gz", b"AAAA")], choice) == key  # the same scan: the cached result
    assert result_key([("scan.nii.gz", b"AAAB")], choice) != key  # same name and size, other scan
    model.write_bytes(b"weights-2")  # a replaced model at the same path
    assert result_key([("scan.nii.gz", b"AAAA")], choice) != key


def test_upload_names_cannot_escape(tmp_path):
    assert safe_name("../../etc/passwd.nii.gz", (".nii.gz",)) == "passwd.nii.gz"
    assert safe_name("C:\\x\\..\\scan.nii", (".nii",)) == "scan.nii"
    with pytest.raises(SegvolError, match="expected a .nii"):
        safe_name("scan.png", (".nii", ".nii.gz"))


def test_segment_upload_and_render(onnx_model, imagecas_small, tmp_path):
    from segvol.app.logic import ModelChoice

    data = (imagecas_small / "3.img.nii.gz").read_bytes()
    res = segment_upload([("../3.img.nii.gz", data)], ModelChoice(onnx_model, "test"), device="cpu")
    assert res.mask.shape == res.image.shape and res.mask_bytes[:2] == b"\x1f\x8b" and res.seconds > 0
    assert res.mask.any()  # the untrained model paints something here; an empty mask would test nothing
    (direct,) = api.infer(inputs=[imagecas_small / "3.img.nii.gz"], model=onnx_model, device="cpu",
                          out=tmp_path / "direct.nii.gz")
    assert np.array_equal(res.mask, direct.labels)  # the app shows what segvol infer writes
    mask = np.zeros_like(res.mask)
    mask[10:20, 10:20, :] = 1
    rgb = render_slice(res.image, mask, axis=2, index=5, opacity=1.0)
    red = (rgb[..., 0] == 255) & (rgb[..., 1] == 0) & (rgb[..., 2] == 0)
    assert red.sum() == 100
    hidden, plain = render_slice(res.image, mask, 2, 5, 0.0), render_slice(res.image, np.zeros_like(mask), 2, 5, 1.0)
    assert np.array_equal(hidden, plain)  # opacity 0: the scan exactly as without a mask
    assert (hidden[..., 0] == hidden[..., 1]).all() and (hidden[..., 1] == hidden[..., 2]).all()  # grey
    assert hidden[..., 0][red].std() > 0  # the scan's own texture shows where the mask is

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
    a, b = np.zeros((4, 4, 4)), np.zeros((4, 4, 4))
    assert dice_score(a, b) == 1.0
    a[0, 0, :2] = 1
    b[0, 0, 1:3] = 1
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
    assert [name for name, _ in view.cprs] == ["cpr_tree1_1.png"] and view.cprs[0][1][:4] == b"\x89PNG"
    with pytest.raises(SegvolError, match="empty"):
        tree_view(np.zeros_like(mask), aff)
