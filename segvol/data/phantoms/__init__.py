"""Phantoms in the real datasets' layouts, for tests, demos and benchmarks (no download needed)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from segvol.errors import SegvolError
from segvol.utils import atomic_path

__all__ = ["write_phantoms", "save_nifti"]

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


def write_phantoms(dataset: str, out: str | Path, cases: int, size: str = "small", seed: int = 0,
                   overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Write ``cases`` phantoms of ``dataset`` into ``out`` in the dataset's real layout (its adapter's
    :meth:`~segvol.data.adapter.DatasetAdapter.write_phantoms`)."""
    from segvol.data.registry import dataset_names, get_adapter

    adapter = get_adapter(dataset)
    if not adapter.has_phantoms:
        makers = [n for n in dataset_names() if get_adapter(n).has_phantoms]
        raise SegvolError(f"no phantoms for dataset {dataset!r}; known: {', '.join(makers)}")
    if size not in ("small", "full"):
        raise SegvolError(f"--size {size!r}: expected small or full")
    if cases < 1:
        raise SegvolError(f"--cases {cases}: need at least 1")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SegvolError(f"{out}: folder is not empty (use --overwrite to write phantoms into it anyway)")
    out.mkdir(parents=True, exist_ok=True)
    written = adapter.write_phantoms(out, cases, size, seed, progress=progress)
    log.info("wrote %d %s phantom case(s) (%s) to %s", cases, adapter.name, size, out)
    return written
