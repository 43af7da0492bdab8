"""DICOM series in, and the optional outputs of ``segvol infer`` (probability map, overlay, GIF, mesh)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from segvol import api
from segvol.cli import main
from segvol.io.dicom import is_series_folder, read_series, write_series
from segvol.inference.core import stitch_device
from tests.conftest import write_nifti
from tests.inference.test_infer_geometry import AFFINES, untrained_ckpt  # noqa: F401

OBLIQUE = AFFINES["oblique"]



def _box_scan(shape=(40, 30, 12)):
    image = np.full(shape, -150, np.int16)
    image[5:18, 10:25, 2:7] = 600
    return image


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_series_round_trip_keeps_values_and_geometry(tmp_path, name):
    volume = np.random.default_rng(1).integers(-1000, 2000, (21, 17, 6)).astype(np.int16)
    folder = write_series(volume, AFFINES[name], tmp_path / "series")
    assert is_series_folder(folder) and len(list(folder.iterdir())) == 6
    data, grid = read_series(folder)
    assert np.array_equal(data, volume)
    assert np.allclose(grid.affine, AFFINES[name], atol=1e-4)


def test_infer_on_a_dicom_series_matches_the_nifti(tmp_path, untrained_ckpt, bright_model):  # noqa: F811
    image = _box_scan()
    series = write_series(image, OBLIQUE, tmp_path / "case7")
    nifti = write_nifti(tmp_path / "case7.nii.gz", image, OBLIQUE)
    (from_dicom,) = api.infer(inputs=[series], model=untrained_ckpt, device="cpu")
    (from_nifti,) = api.infer(inputs=[nifti], model=untrained_ckpt, device="cpu", out=tmp_path / "n_seg.nii.gz")
    assert from_dicom.output == tmp_path / "case7_seg.nii.gz"  # beside the series folder
    out = nib.load(str(from_dicom.output))
    assert out.shape == image.shape and np.allclose(out.affine, OBLIQUE, atol=1e-4)  # the series' geometry
    assert int(out.header["sform_code"]) == 1 and int(out.header["qform_code"]) == 1
    mask = np.asarray(out.dataobj)
    assert np.array_equal(mask, from_nifti.labels)
    truth = image > 0
    assert 2 * (mask.astype(bool) & truth).sum() / (mask.astype(bool).sum() + truth.sum()) > 0.8  # oblique: blurred


def test_a_folder_of_series_and_broken_series(tmp_path, untrained_ckpt, bright_model, capsys):  # noqa: F811
    root = tmp_path / "dicoms"
    for case in ("a", "b"):
        write_series(_box_scan((20, 16, 5)), np.diag([1.5, 1.5, 2.0, 1.0]), root / case)
    results = api.infer(inputs=[root], model=untrained_ckpt, device="cpu")
    assert [r.output.name for r in results] == ["a_seg.nii.gz", "b_seg.nii.gz"]

    broken = root / "broken"
    write_series(_box_scan((20, 16, 5)), np.eye(4), broken)
    slice_file = sorted(broken.iterdir())[2]
    slice_file.write_bytes(slice_file.read_bytes()[:400])  # truncated in its header
    assert main(["infer", str(broken), "--model", str(untrained_ckpt), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(broken) in err
    assert not (root / "broken_seg.nii.gz").exists()

    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a scan")
    assert main(["infer", str(empty), "--model", str(untrained_ckpt), "--device", "cpu"]) == 2
    assert "holds no .nii/.nii.gz scans and no DICOM series" in capsys.readouterr().err


def test_extra_outputs(tmp_path, untrained_ckpt, bright_model, capsys):  # noqa: F811
    from PIL import Image

    from segvol.viz.overlays import frame_count

    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    affine[:3, 3] = (-10.0, 25.0, 40.0)
    image = _box_scan() + np.random.default_rng(0).integers(-20, 20, (40, 30, 12)).astype(np.int16)  # GIF frames differ
    scan = write_nifti(tmp_path / "box.nii.gz", image, affine)
    args = ["infer", str(scan), "--model", str(untrained_ckpt), "--device", "cpu", "--prob", "--overlay", "--gif",
            "--mesh"]
    assert main(args) == 0
    mask = np.asarray(nib.load(str(tmp_path / "box_seg.nii.gz")).dataobj).astype(bool)

    prob = nib.load(str(tmp_path / "box_prob.nii.gz"))
    assert prob.shape == image.shape and np.allclose(prob.affine, affine)
    assert prob.get_data_dtype() == np.float32
    p = np.asarray(prob.dataobj)
    assert 0.0 <= p.min() and p.max() <= 1.0
    assert ((p > 0.5) == mask).mean() > 0.99  # no post-processing in this config: the mask is the thresholded map

    rgb = np.asarray(Image.open(tmp_path / "box_overlay.png").convert("RGB")).astype(int)
    red = (rgb[..., 0] > 180) & (rgb[..., 1] < 120) & (rgb[..., 2] < 120)
    assert red.sum() > 200  # the mask is drawn in red
    assert frame_count(tmp_path / "box_seg.gif") > 1

    from segvol.mesh import Mesh, signed_volume

    raw = (tmp_path / "box_seg.stl").read_bytes()
    n = int.from_bytes(raw[80:84], "little")
    tris = np.frombuffer(raw[84:], dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]), count=n)
    verts = tris["v"].reshape(-1, 3).astype(float)
    lo = affine[:3, :3] @ np.array([5, 10, 2]) + affine[:3, 3]
    hi = affine[:3, :3] @ np.array([17, 24, 6]) + affine[:3, 3]
    assert np.all(verts.min(0) >= lo - 2.1) and np.all(verts.max(0) <= hi + 2.1)  # the box, in scanner mm
    volume = signed_volume(Mesh(verts, np.arange(len(verts)).reshape(-1, 3)))
    assert volume == pytest.approx(mask.sum() * 0.8 * 0.8 * 2.0, rel=0.15)
    capsys.readouterr()

    (tmp_path / "box_seg.nii.gz").unlink()
    assert main(args) == 2  # the extras exist: refuse before writing anything
    assert "box_prob.nii.gz: already exists" in capsys.readouterr().err
    assert not (tmp_path / "box_seg.nii.gz").exists()


def test_stitching_moves_to_the_cpu_when_the_output_does_not_fit():
    cuda = torch.device("cuda", 0)
    shape = (1, 1, 512, 512, 300)  # 2 channels + count map in float32: 0.94 GB
    assert stitch_device(shape, 2, cuda, free_bytes=8 * 2**30) == cuda
    assert stitch_device(shape, 2, cuda, free_bytes=1 * 2**30) == torch.device("cpu")
    assert stitch_device(shape, 2, torch.device("cpu")) == torch.device("cpu")


def test_synth_writes_dicom_series(tmp_path):
    api.synth(dataset="imagecas", out=tmp_path / "ct", cases=1, size="small", dicom=True, progress=False)
    data, grid = read_series(tmp_path / "ct" / "dicom" / "1")
    scan = nib.load(str(tmp_path / "ct" / "1.img.nii.gz"))
    assert np.array_equal(data, np.asanyarray(scan.dataobj)) and np.allclose(grid.affine, scan.affine, atol=1e-4)
    assert main(["synth", "brats", "--out", str(tmp_path / "b"), "--dicom"]) == 2


def test_out_of_memory_while_stitching_retries_on_the_cpu(monkeypatch, untrained_ckpt, caplog):  # noqa: F811
    """An accelerator that runs out of memory stitching the output: the same windows are stitched on the CPU."""
    from segvol.inference import predictor
    from segvol.inference.backends import load_model

    model = load_model(untrained_ckpt, torch.device("cpu"))
    model.device = torch.device("cuda", 0)  # pretend: the windows run "on the GPU"
    seen = []

    def fake_sliding_window(predict, image, cfg, device=None, **kw):
        seen.append(torch.device(device))
        if torch.device(device).type == "cuda":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return torch.zeros((1, 2, *image.shape[2:]))

    monkeypatch.setattr(predictor, "stitch_device", lambda shape, channels, device: device)
    monkeypatch.setattr(predictor, "sliding_window", fake_sliding_window)
    out = predictor._windows(model, torch.zeros(1, 1, 8, 8, 8), None, None, False, amp=False)
    assert seen == [torch.device("cuda", 0), torch.device("cpu")] and out.shape == (1, 2, 8, 8, 8)
    assert "stitching the sliding-window output on the CPU instead" in caplog.text
