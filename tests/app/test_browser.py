"""The app in a real headless Chromium: upload a phantom, wait for the overlay, check the red mask pixels land
where the mask is."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from segvol import api
from segvol.app.logic import render_slice
from tests.conftest import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (CI installs Debian's chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited early: {proc.stdout.read() if proc.stdout else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError("app did not start")


def _red(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(int)
    return (rgb[..., 0] > 150) & (rgb[..., 0] - rgb[..., 1] > 80) & (rgb[..., 0] - rgb[..., 2] > 80)


def test_upload_in_chromium_shows_the_mask(tmp_path, onnx_model, imagecas_small):
    pytest.importorskip("playwright")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    scan = imagecas_small / "5.img.nii.gz"
    (pred,) = api.infer(inputs=[scan], model=onnx_model, out=tmp_path / "ref.nii.gz", device="cpu")
    assert pred.labels.any(), "the untrained model must paint something for this test to mean anything"
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "segvol", "app", "--port", str(port), "--model", str(onnx_model)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    try:
        _wait_for(port, proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(f"http://127.0.0.1:{port}", timeout=60_000)
            page.get_by_text("Upload a scan to segment it").wait_for(timeout=60_000)
            uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="Scan (.nii")
            uploader.locator('input[type="file"]').set_input_files(str(scan))
            page.get_by_text("Segmented in").wait_for(timeout=120_000)
            image = page.locator('[data-testid="stImage"] img').first
            image.wait_for(timeout=30_000)
            time.sleep(1.0)
            shot = tmp_path / "app.png"
            image.screenshot(path=str(shot))
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    seen = np.asarray(Image.open(shot).convert("RGB"))
    axial = int(pred.labels.sum(axis=(0, 1)).argmax())  # the app opens on the slice with most mask
    import nibabel as nib

    expected = render_slice(np.asanyarray(nib.load(str(scan)).dataobj).astype(np.float32), pred.labels, 2, axial,
                            0.5)
    want = np.asarray(Image.fromarray(expected).resize(seen.shape[1::-1], Image.NEAREST))
    want_red, seen_red = _red(want), _red(seen)
    assert seen_red.sum() > 50, "no red mask pixels in the screenshot"
    assert (want_red & seen_red).sum() / want_red.sum() > 0.7
    assert (seen_red & ~want_red).sum() / seen_red.sum() < 0.3
