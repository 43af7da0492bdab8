"""``segvol preprocess``: what the network sees, and the CT intensity mapping it shows (monotonic in HU)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from segvol.cli import main
from segvol.config import config_to_dict, load_config
from segvol.networks import build_network, network_args
from segvol.checkpoint import save_checkpoint
from tests.conftest import write_nifti

# slabs of known HU along x, 6 mm each: what a cardiac CT holds around the coronaries
TISSUES = {"air": -1000, "lung": -800, "fat": -100, "muscle": 40, "contrast": 400}
AFFINE = np.array([[0.5, 0, 0, 10.0], [0, 0.5, 0, -5.0], [0, 0, 0.5, 20.0], [0, 0, 0, 1]])


def _tissue_scan(tmp_path):
    vol = np.full((60, 40, 40), -1000, np.int16)
    for i, hu in enumerate(TISSUES.values()):
        vol[i * 12:(i + 1) * 12] = hu
    return write_nifti(tmp_path / "ct.nii.gz", vol, AFFINE)


def _values_at_slab_centres(out_path) -> dict[str, float]:
    """The preprocessed value at each slab's centre, found through the output's own affine (scanner mm)."""
    img = nib.load(str(out_path))
    data, to_voxel = img.get_fdata(), np.linalg.inv(img.affine)
    values = {}
    for i, name in enumerate(TISSUES):
        world = AFFINE @ np.array([i * 12 + 6, 20, 20, 1.0])
        voxel = np.rint(to_voxel @ world).astype(int)[:3]
        values[name] = float(data[tuple(voxel)])
    return values


def test_ct_window_keeps_tissues_apart_and_ordered(tmp_path, capsys):
    scan = _tissue_scan(tmp_path)
    out = tmp_path / "seen.nii.gz"
    assert main(["preprocess", str(scan), "-o", str(out), "--config", "imagecas"]) == 0
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.float32
    assert np.allclose(np.abs(np.diag(img.affine)[:3]), 1.0)  # the 1 mm grid
    assert img.shape[0] >= 96  # padded to the preset's 96^3 patch
    v = _values_at_slab_centres(out)
    assert v["air"] == pytest.approx(v["lung"])  # both below the window's floor
    assert v["air"] < v["fat"] < v["muscle"] < v["contrast"], v
    steps = np.diff([v["air"], v["fat"], v["muscle"], v["contrast"]])
    assert steps.min() > 0.1, f"tissues nearly merged: {v}"  # distinct, not just ordered
    # z-scored over all the scan's voxels (air included): the padding around it is 0, the scan's mean
    data = img.get_fdata()
    scan = data[data != 0]
    assert scan.size == 30 * 20 * 20  # the 60x40x40 scan at 0.5 mm is 30x20x20 mm; the rest is padding
    assert abs(scan.mean()) < 1e-3 and scan.std() == pytest.approx(1.0, abs=1e-3)
    assert data[0, 0, 0] == 0.0


def _checkpoint(path, cfg_dict):
    args = network_args(load_config("tiny"), 1, 2)
    torch.manual_seed(0)
    save_checkpoint(path, {"config": cfg_dict, "network": args, "state_dict": build_network(args).state_dict(),
                           "task": {"in_channels": 1, "out_channels": 2, "activation": "softmax",
                                    "class_names": ["artery"], "modalities": ["ct"]}})
    return path


def test_model_repeats_its_own_normalisation_old_checkpoints_included(tmp_path):
    scan = _tissue_scan(tmp_path)
    new = config_to_dict(load_config("tiny"))
    assert new["preprocess"]["intensity_norm"] == "window"  # stored with the checkpoint
    old = config_to_dict(load_config("tiny"))
    del old["preprocess"]["intensity_norm"]  # saved before the key existed
    for name, cfg_dict in (("new", new), ("old", old)):
        model = _checkpoint(tmp_path / f"{name}.pt", cfg_dict)
        main(["preprocess", str(scan), "-o", str(tmp_path / f"{name}.nii.gz"), "--model", str(model)])
    v = _values_at_slab_centres(tmp_path / "new.nii.gz")
    assert v["air"] < v["fat"] < v["muscle"] < v["contrast"]
    legacy = _values_at_slab_centres(tmp_path / "old.nii.gz")
    assert legacy["air"] == 0.0 and legacy["fat"] < legacy["muscle"] < legacy["air"]  # as that model was trained


def test_mri_keeps_nonzero_channelwise(tmp_path):
    brain = np.zeros((40, 40, 40), np.float32)
    brain[10:30, 10:30, 10:30] = np.linspace(100, 300, 20)[:, None, None]
    scan = write_nifti(tmp_path / "flair.nii.gz", brain, np.eye(4))
    out = tmp_path / "seen.nii.gz"
    cfg = tmp_path / "flair.yaml"
    cfg.write_text("base: tiny-brats\ndata:\n  labels: binary\n  modalities: [flair]\n")
    assert main(["preprocess", str(scan), "-o", str(out), "--config", str(cfg)]) == 0
    data = nib.load(str(out)).get_fdata()
    inside = data != 0
    assert inside.sum() == 20**3  # the background stays 0
    assert data[inside].mean() == pytest.approx(0.0, abs=1e-4) and data[inside].std() == pytest.approx(1.0, abs=1e-3)


def test_refuses_to_replace_its_input(tmp_path, capsys):
    scan = _tissue_scan(tmp_path)
    before = scan.read_bytes()
    assert main(["preprocess", str(scan), "-o", str(scan), "--config", "tiny", "--overwrite"]) == 2
    assert "is the input scan" in capsys.readouterr().err
    assert scan.read_bytes() == before
