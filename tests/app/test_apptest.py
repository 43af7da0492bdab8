"""The Streamlit page driven by Streamlit's AppTest (no browser)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

PAGE = str(Path(__file__).resolve().parents[2] / "segvol" / "app" / "streamlit_app.py")


def _allow(monkeypatch, *paths) -> Path:
    """Start the page as ``segvol app --data-dir`` would, with the folder holding ``paths``."""
    from segvol.app.logic import DATA_DIR_ENV

    folder = Path(os.path.commonpath([str(p) for p in paths]))
    monkeypatch.setenv(DATA_DIR_ENV, str(folder))
    return folder


def test_page_segments_a_scan_from_a_path(onnx_model, imagecas_small, monkeypatch):
    _allow(monkeypatch, onnx_model, imagecas_small)
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception and "Upload a scan" in at.info[0].value
    at.text_input(key="model_path").input(str(onnx_model)).run()
    assert str(onnx_model) in at.sidebar.caption[0].value and "typed" in at.sidebar.caption[0].value
    at.text_input(key="scan_path").input(str(imagecas_small / "2.img.nii.gz")).run()
    assert not at.exception and not at.error
    assert "Segmented in" in at.success[0].value
    assert len(at.slider) == 2  # slice and opacity
    at.radio(key="axis").set_value("sagittal (x)").run()
    assert not at.exception
    # the untrained model's noisy mask is traced to its artery tree in seconds
    at.button(key="trace_tree").click().run()
    assert not at.exception and not at.error
    cprs = at.session_state["tree"].cprs
    assert cprs and len(at.get("image")) == 2 + len(cprs)  # the slice, the tree picture, a CPR per main artery
    assert any("tree.json" in b.proto.label for b in at.get("download_button"))
    assert any("not a diagnosis" in c.value for c in at.caption)


def test_missing_model_is_a_message(tmp_path, imagecas_small, monkeypatch):
    _allow(monkeypatch, tmp_path, imagecas_small)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    at.text_input(key="model_path").input(str(tmp_path / "absent.onnx")).run()
    at.text_input(key="scan_path").input(str(imagecas_small / "2.img.nii.gz")).run()
    assert not at.exception and "model not found" in at.error[0].value


def test_no_server_paths_without_a_data_dir(monkeypatch):
    from segvol.app.logic import DATA_DIR_ENV

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception and "Upload a scan" in at.info[0].value
    assert not [t for t in at.text_input if t.key in ("model_path", "scan_path")]  # uploads only


def test_path_outside_the_data_dir_is_refused(tmp_path, imagecas_small, monkeypatch):
    _allow(monkeypatch, imagecas_small)
    secret = tmp_path / "secret.nii.gz"
    secret.write_bytes((imagecas_small / "2.img.nii.gz").read_bytes())
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    at.text_input(key="scan_path").input(str(secret)).run()
    assert not at.exception and "outside the app's data folder" in at.error[0].value
    assert not at.success  # nothing was read or segmented
