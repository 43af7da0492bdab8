"""Shared fixtures: tiny phantoms in tmp folders, a tiny config, a trained tiny model, a stand-in model that marks
bright voxels, and paths to the real sample scans."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_dir() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"real sample scans not present at {REAL} (only in the development checkout)")
    return REAL


@pytest.fixture(scope="session")
def imagecas_small(tmp_path_factory) -> Path:
    """Six small ImageCAS phantoms in the real layout (written once per session)."""
    from segvol.data.synth import write_phantoms

    out = tmp_path_factory.mktemp("imagecas")
    write_phantoms("imagecas", out, cases=6, size="small", seed=0, progress=False)
    return out


@pytest.fixture()
def tiny_cfg(imagecas_small):
    from segvol.config import load_config

    return load_config(str(REPO / "configs" / "tiny.yaml"),
                       ["train.epochs=1", "train.steps_per_epoch=2", "train.val_every=1"],
                       data={"root": str(imagecas_small)})


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(array, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return path


@pytest.fixture(scope="session")
def trained_imagecas(tmp_path_factory):
    """A tiny BasicUNet trained on eight small ImageCAS phantoms (about two minutes on the CPU, once per session):
    ``(cfg, spec, groups, untrained_val_dice, FitResult)``. Learning is asserted by tests/training/test_learning.py;
    other tests reuse the trained model (e.g. the inference quality gate)."""
    import torch

    from segvol import api
    from segvol.config import load_config
    from segvol.networks import build_network, network_args
    from segvol.training.data import cached_volumes
    from segvol.training.trainer import validate

    tmp = tmp_path_factory.mktemp("trained")
    data = tmp / "imagecas"
    api.synth(dataset="imagecas", out=data, cases=8, size="small", seed=1, progress=False)
    cfg = load_config(str(REPO / "configs" / "tiny.yaml"), ["train.epochs=20", "train.val_every=4"],
                      data={"root": str(data)})
    _, spec, groups, _ = api.resolve_records(cfg)
    torch.manual_seed(cfg.train.seed)
    untrained = build_network(network_args(cfg, spec.in_channels, spec.out_channels))
    before = validate(untrained, cached_volumes(groups["val"], cfg, spec), cfg, spec, torch.device("cpu"))["val_dice"]
    result = api.train(cfg=cfg, models_dir=tmp / "models", name="learn", device="cpu", progress=False)
    return cfg, spec, groups, before, result


@pytest.fixture()
def bright_model(monkeypatch):
    """Every loaded model marks the voxels brighter than the scan's mean (class 1 where the normalised image > 0)."""
    import torch

    from segvol.inference import backends

    real_load = backends.load_model

    def load(path, device):
        loaded = real_load(path, device)
        loaded.predict = lambda x: torch.cat([-x, x], dim=1)
        return loaded

    monkeypatch.setattr(backends, "load_model", load)
