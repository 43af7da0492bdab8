"""Phantoms in the real datasets' layouts, for tests, demos and benchmarks (no download needed)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from segvol.errors import SegvolError
from segvol.utils import atomic_path

__all__ = ["PHANTOMS", "write_phantoms", "save_nifti"]

log = logging.getLogger(__name__)


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write one volume atomically with its affine as both qform and sform (code 1, scanner)."""
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def _write_imagecas_case(out: Path, index: int, size: str, seed: int) -> list[Path]:
    from segvol.data.phantoms.imagecas import make_imagecas_phantom, sample_geometry

    case_seed = seed * 100_003 + index
    geom = sample_geometry(size, np.random.default_rng(case_seed))
    image, label, affine = make_imagecas_phantom(geom, case_seed)
    paths = [out / f"{index}.img.nii.gz", out / f"{index}.label.nii.gz"]
    save_nifti(image, affine, paths[0])
    save_nifti(label, affine, paths[1])
    return paths


def _write_brats_case(out: Path, index: int, size: str, seed: int) -> list[Path]:
    from segvol.data.phantoms.brats import write_brats_case

    return write_brats_case(out, index, size, seed)


PHANTOMS = {"imagecas": _write_imagecas_case, "brats": _write_brats_case}


def write_phantoms(dataset: str, out: str | Path, cases: int, size: str = "small", seed: int = 0,
                   overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Write ``cases`` phantoms of ``dataset`` into ``out`` in the dataset's real layout."""
    from tqdm.auto import tqdm

    if dataset not in PHANTOMS:
        raise SegvolError(f"no phantoms for dataset {dataset!r}; known: {', '.join(sorted(PHANTOMS))}")
    if size not in ("small", "full"):
        raise SegvolError(f"--size {size!r}: expected small or full")
    if cases < 1:
        raise SegvolError(f"--cases {cases}: need at least 1")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SegvolError(f"{out}: folder is not empty (use --overwrite to write phantoms into it anyway)")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for index in tqdm(range(1, cases + 1), desc=f"synth {dataset}", unit="case", disable=not progress):
        written += PHANTOMS[dataset](out, index, size, seed)
    log.info("wrote %d %s phantom case(s) (%s) to %s", cases, dataset, size, out)
    return written
