"""Helpers for the DICOM tests: untidy phantom series, and the independent validators (dicom3tools' dciodvfy and
dcentvfy, dcmqi's segimage2itkimage), each skipping with a reason where the tool is absent."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from segvol.io.dicom import write_series

AFFINE = np.diag([0.8, 0.8, 2.0, 1.0])
AFFINE[:3, 3] = (-20.0, 10.0, 30.0)


def box_volume(shape=(48, 40, 16)) -> np.ndarray:
    """-150 HU with a bright box (600 HU) that the stand-in model segments."""
    image = np.full(shape, -150, np.int16)
    image[8:30, 10:28, 3:12] = 600
    return image


def series(folder: Path, shape=(48, 40, 16), affine=AFFINE, seed=0, description="segvol phantom") -> Path:
    return write_series(box_volume(shape), affine, folder, seed=seed, description=description)


def edit(folder: Path, change) -> None:
    """Apply ``change(ds, index)`` to every file of ``folder`` (in file order) and write it back."""
    for n, path in enumerate(sorted(folder.iterdir())):
        ds = pydicom.dcmread(str(path))
        change(ds, n)
        ds.save_as(str(path))


def tool(name: str) -> str:
    """The path of a validator: on PATH, or beside this Python (dcmqi's wheel installs into the venv)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        where = "apt-get install dicom3tools" if name.startswith("dc") and name != "segimage2itkimage" else \
            "pip install dcmqi"
        pytest.skip(f"{name} is not installed ({where}); CI installs it (.ci/run)")
    return found


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's Error lines for one object (dicom3tools)."""
    run = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def dcentvfy_lines(obj: Path, sources: list[Path], errors_only: bool = False) -> list[str]:
    """What dcentvfy says about ``obj`` together with its source files (patient/study/series consistency)."""
    run = subprocess.run([tool("dcentvfy"), str(obj), *map(str, sources)], capture_output=True, text=True,
                         timeout=120)
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    return [line for line in lines if line.startswith("Error")] if errors_only else lines


def dcmqi_segments(seg: Path, out: Path) -> list[nib.Nifti1Image]:
    """dcmqi's decode of a DICOM-SEG: one NIfTI image per segment, in segment order."""
    out.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([tool("segimage2itkimage"), "--inputDICOM", str(seg), "--outputDirectory", str(out),
                          "-t", "nifti"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    files = sorted(out.glob("*.nii.gz"), key=lambda p: int(p.name.split(".")[0]))
    return [nib.load(str(p)) for p in files]


def on_grid(decoded: nib.Nifti1Image, shape, affine) -> tuple[np.ndarray, np.ndarray]:
    """``(decoded values, their voxel indices on the (shape, affine) grid)``: every decoded voxel centre mapped
    into the grid in scanner mm; fails when a centre is not on a grid point or falls outside it."""
    data = np.asarray(decoded.dataobj)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in data.shape[:3]], indexing="ij"), -1).reshape(-1, 3)
    world = idx @ decoded.affine[:3, :3].T + decoded.affine[:3, 3]
    target = (world - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    nearest = np.rint(target)
    assert np.abs(target - nearest).max() < 0.05, "decoded voxels do not lie on the mask's grid"
    assert nearest.min() >= 0 and np.all(nearest.max(0) < np.array(shape)), "decoded voxels outside the mask"
    return data.reshape(-1), nearest.astype(int)


def decoded_equals(decoded: nib.Nifti1Image, truth: np.ndarray, affine) -> bool:
    """Whether a decoded segment equals the boolean ``truth`` on its grid in physical space (every truth voxel
    decoded, nothing else)."""
    values, index = on_grid(decoded, truth.shape, affine)
    on_truth = truth[index[:, 0], index[:, 1], index[:, 2]]
    return bool(np.array_equal(values > 0, on_truth)) and int((values > 0).sum()) == int(truth.sum())
