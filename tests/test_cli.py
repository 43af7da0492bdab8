"""The four commands, run as a user would, in a fresh folder."""

from __future__ import annotations

import os
import subprocess
import sys

import nibabel as nib
import numpy as np

from tests.conftest import REPO


def segvol(*args, cwd, check=True):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "segvol", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_help_does_not_import_torch():
    code = "import sys; from segvol.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit: pass\n" \
           "assert 'torch' not in sys.modules and 'monai' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True)


def test_synth_train_export_infer(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.yaml").write_text((REPO / "configs" / "tiny.yaml").read_text())
    (tmp_path / "configs" / "imagecas.yaml").write_text((REPO / "configs" / "imagecas.yaml").read_text())
    segvol("synth", "imagecas", "--out", "data/imagecas", "--cases", "4", cwd=tmp_path)
    assert len(list((tmp_path / "data/imagecas").glob("*.img.nii.gz"))) == 4
    out = segvol("train", "--dataset", "imagecas", "--config", "tiny", "--set", "train.epochs=2",
                 "--set", "train.steps_per_epoch=3", "--set", "train.val_every=1", "--name", "run1", "-q",
                 cwd=tmp_path)
    assert "best val Dice" in out.stdout
    run = tmp_path / "models" / "run1"
    assert {"best.pt", "last.pt", "metrics.csv", "config.yaml", "split.json"} <= {p.name for p in run.iterdir()}
    out = segvol("export-onnx", cwd=tmp_path)
    assert "(dynamic batch and spatial axes (multiples of 16))" in out.stdout
    assert "max |ONNX Runtime - PyTorch|" in out.stdout and (tmp_path / "models" / "model.onnx").is_file()
    scan = tmp_path / "data" / "imagecas" / "4.img.nii.gz"
    out = segvol("infer", str(scan), cwd=tmp_path)
    assert "inference" in out.stdout and "save" in out.stdout
    mask = nib.load(str(tmp_path / "data" / "imagecas" / "4.img_seg.nii.gz"))
    ref = nib.load(str(scan))
    assert mask.shape == ref.shape and np.allclose(mask.affine, ref.affine)
    labels = np.asarray(mask.dataobj)
    assert labels.any() and not labels.all()  # a model that paints nothing (or everything) would pass the above
    voxels = int(out.stdout.splitlines()[1].split()[1])  # the timing table's count is the written mask's
    assert voxels == int((labels > 0).sum())


def test_errors_are_one_line(tmp_path):
    proc = segvol("train", "--dataset", "imagecas", "--data", str(tmp_path / "nowhere"), cwd=tmp_path, check=False)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert "nowhere: no such folder" in lines[-1] and "segvol synth imagecas" in lines[-1]
    proc = segvol("infer", str(tmp_path / "nope.nii.gz"), "--model", str(tmp_path / "m.onnx"), cwd=tmp_path,
                  check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = segvol("train", "--device", "tpu", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "argument --device: 'tpu': expected auto" in proc.stderr
