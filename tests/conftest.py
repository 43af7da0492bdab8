"""Shared fixtures: tiny phantoms in tmp folders, a tiny config, and paths to the real sample scans."""

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
    from segvol.data.phantoms import write_phantoms

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
