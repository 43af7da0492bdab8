"""Tiny nnU-Net v2 raw datasets for the plan tests: ``imagesTr/X_000c.nii.gz``, ``labelsTr/X.nii.gz`` and
``dataset.json``, written with nibabel on RAS-aligned grids (a positive diagonal affine), so that segvol's RAS axis
order is the voxel order and nnU-Net's (SimpleITK's array order) is its reverse."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["DATASETS", "write_dataset"]


def _ellipsoid(shape: tuple[int, ...], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    return (((grid - centre) / radii) ** 2).sum(-1) <= 1.0


def _case(kind: str, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray, tuple[float, ...]]:
    """Channels, label and spacing of one case of ``kind``."""
    if kind == "ct_iso":
        n = int(rng.integers(40, 49))
        shape, spacing = (n, n + 2, n - 2), (0.8, 0.8, 0.8)
    elif kind == "ct_mixed":
        shape = (int(rng.integers(36, 49)), int(rng.integers(36, 49)), int(rng.integers(16, 41)))
        spacing = (float(rng.uniform(0.6, 0.9)),) * 2 + (float(rng.choice([1.0, 1.25, 2.0, 2.5])),)
    elif kind == "mri_aniso":
        shape, spacing = (64, 60, int(rng.integers(9, 13))), (0.7, 0.7, float(rng.choice([4.0, 4.5, 5.0, 5.5, 6.0])))
    else:  # mri_4ch
        shape, spacing = (36, 40, 32), (1.0, 1.0, 1.0)
    size_mm = np.asarray(shape) * np.asarray(spacing)
    body = _ellipsoid(shape, np.asarray(shape) / 2, np.asarray(shape) * (0.3 if kind == "mri_aniso" else 0.45))
    centre = np.asarray(shape) / 2 + rng.uniform(-2, 2, 3)
    radii = np.maximum(np.asarray([8.0, 8.0, 8.0]) / np.asarray(spacing), 1.5) * (size_mm.min() / 30)
    lesion = _ellipsoid(shape, centre, radii) & body
    core = _ellipsoid(shape, centre, radii / 2) & lesion
    label = lesion.astype(np.uint8) + core.astype(np.uint8)
    if kind.startswith("ct"):
        img = np.full(shape, -1000.0) + rng.normal(0, 10, shape)
        img[body] = rng.normal(40, 20, int(body.sum()))
        img[lesion] = rng.normal(150, 40, int(lesion.sum())) + rng.uniform(-20, 20)
        img[core] = rng.normal(300, 60, int(core.sum()))
        return [np.rint(img)], label, spacing
    chans = []
    for c in range(1 if kind == "mri_aniso" else 4):
        gain = float(rng.uniform(0.8, 1.2)) * (c + 1)
        img = np.zeros(shape) if kind == "mri_aniso" else np.abs(rng.normal(5, 2, shape))  # zero or noisy air
        img[body] = rng.normal(300, 40, int(body.sum())) * gain
        img[lesion] = rng.normal(300 + 150 * (-1) ** c, 40, int(lesion.sum())) * gain
        chans.append(img.astype(np.float32))
    return chans, label, spacing


DATASETS = {  # name -> (kind, channel names, label names, cases)
    "Dataset901_CTiso": ("ct_iso", ("CT",), ("background", "lesion", "core"), 6),
    "Dataset902_MRaniso": ("mri_aniso", ("T2",), ("background", "lesion", "core"), 8),
    "Dataset903_MR4ch": ("mri_4ch", ("T1", "T1ce", "T2", "FLAIR"), ("background", "lesion", "core"), 6),
    "Dataset904_CTmixed": ("ct_mixed", ("CT",), ("background", "lesion", "core"), 8),
}


def write_dataset(root: Path, name: str, seed: int = 0) -> Path:
    """Write the dataset ``name`` of :data:`DATASETS` into ``root/name``; returns its folder."""
    kind, channels, labels, cases = DATASETS[name]
    out = root / name
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(cases):
        chans, label, spacing = _case(kind, rng)
        affine = np.diag([*spacing, 1.0])
        affine[:3, 3] = rng.uniform(-50, 50, 3)
        for c, img in enumerate(chans):
            nib.save(nib.Nifti1Image(img.astype(np.float32 if kind.startswith("mri") else np.int16), affine),
                     out / "imagesTr" / f"case{i:03d}_{c:04d}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), out / "labelsTr" / f"case{i:03d}.nii.gz")
    meta = {"channel_names": {str(i): c for i, c in enumerate(channels)},
            "labels": {n: i for i, n in enumerate(labels)}, "numTraining": cases, "file_ending": ".nii.gz"}
    (out / "dataset.json").write_text(json.dumps(meta, indent=1))
    return out
