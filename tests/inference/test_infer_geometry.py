"""Inference writes masks on the input's own grid, whatever that grid is."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from segvol import api
from segvol.config import config_to_dict, load_config
from segvol.errors import SegvolError
from segvol.networks import build_network, network_args
from segvol.checkpoint import save_checkpoint
from tests.conftest import write_nifti


@pytest.fixture(scope="module")
def untrained_ckpt(tmp_path_factory):
    cfg = load_config("tiny")
    args = network_args(cfg, 1, 2)
    torch.manual_seed(0)
    model = build_network(args)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, {"config": config_to_dict(cfg), "network": args, "state_dict": model.state_dict(),
                           "task": {"in_channels": 1, "out_channels": 2, "activation": "softmax",
                                    "class_names": ["artery"], "modalities": ["ct"]}})
    return path


AFFINES = {
    "LPI anisotropic offset": np.array([[-0.7, 0, 0, 35.0], [0, -0.9, 0, -12.0], [0, 0, -2.5, 80.0], [0, 0, 0, 1]]),
    "oblique": np.array([[0.0, 1.2, 0.1, -40.0], [-0.8, 0.0, 0.0, 22.0], [0.0, -0.05, 1.7, 5.0], [0, 0, 0, 1]]),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_output_lands_on_input_grid(tmp_path, untrained_ckpt, name):
    affine = AFFINES[name]
    rng = np.random.default_rng(0)
    image = rng.integers(-1000, 1000, size=(37, 29, 11)).astype(np.int16)
    scan = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    (pred,) = api.infer(inputs=[scan], model=untrained_ckpt, device="cpu")
    assert pred.output == tmp_path / "scan_seg.nii.gz"
    out = nib.load(str(pred.output))
    assert out.shape == image.shape
    assert np.allclose(out.affine, nib.load(str(scan)).affine, atol=1e-5)
    assert out.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(out.dataobj))) == {0, 1}  # both classes painted: an empty mask proves nothing


def test_prediction_follows_the_anatomy_through_the_inverse(tmp_path, untrained_ckpt, monkeypatch):
    """A model that marks bright voxels: the written mask must cover the bright box on the original grid."""
    from segvol.inference import backends

    real_load = backends.load_model

    def bright_model(path, device):
        loaded = real_load(path, device)
        loaded.predict = lambda x: torch.cat([-x, x], dim=1)  # class 1 where the normalised image is positive
        return loaded

    monkeypatch.setattr(backends, "load_model", bright_model)
    image = np.full((40, 30, 12), -150, np.int16)
    image[5:18, 10:25, 2:7] = 600
    scan = write_nifti(tmp_path / "box.nii.gz", image, AFFINES["LPI anisotropic offset"])
    (pred,) = api.infer(inputs=[scan], model=untrained_ckpt, device="cpu")
    truth = image > 0
    dice = 2 * (pred.labels.astype(bool) & truth).sum() / (pred.labels.astype(bool).sum() + truth.sum())
    assert dice > 0.85  # 2.5 mm slices resampled to 1 mm and back blur the box's ends
    centre = lambda m: np.argwhere(m).mean(0)  # noqa: E731
    assert np.abs(centre(pred.labels.astype(bool)) - centre(truth)).max() < 1.0  # no shift, no flip


def test_bad_inputs_are_one_line_errors(tmp_path, untrained_ckpt):
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"this is not a nifti file at all")
    with pytest.raises(SegvolError, match="junk.nii.gz: not a readable NIfTI"):
        api.infer(inputs=[junk], model=untrained_ckpt, device="cpu")
    flat = write_nifti(tmp_path / "flat.nii.gz", np.zeros((20, 20), np.int16), np.eye(4))
    with pytest.raises(SegvolError, match="flat.nii.gz: expected a 3D volume"):
        api.infer(inputs=[flat], model=untrained_ckpt, device="cpu")
    with pytest.raises(SegvolError, match="missing.nii.gz: no such file"):
        api.infer(inputs=[tmp_path / "missing.nii.gz"], model=untrained_ckpt, device="cpu")
    assert not list(tmp_path.glob("*_seg*")) and not list(tmp_path.glob(".*partial*"))


def test_truncated_file_leaves_nothing(tmp_path, untrained_ckpt):
    good = write_nifti(tmp_path / "good.nii.gz", np.ones((40, 40, 40), np.int16), np.eye(4))
    data = good.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SegvolError, match="cut.nii.gz"):
        api.infer(inputs=[cut], model=untrained_ckpt, device="cpu")
    assert not (tmp_path / "cut_seg.nii.gz").exists()
    assert not list(tmp_path.glob(".*partial*"))


def test_refuses_to_overwrite(tmp_path, untrained_ckpt):
    scan = write_nifti(tmp_path / "s.nii.gz", np.zeros((20, 20, 20), np.int16), np.eye(4))
    api.infer(inputs=[scan], model=untrained_ckpt, device="cpu")
    with pytest.raises(SegvolError, match="already exists"):
        api.infer(inputs=[scan], model=untrained_ckpt, device="cpu")
    api.infer(inputs=[scan], model=untrained_ckpt, device="cpu", overwrite=True)
