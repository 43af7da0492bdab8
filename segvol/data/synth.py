"""Phantoms on demand: ``segvol synth`` picks the dataset's adapter, which writes cases in its real layout, and
optionally writes each CT as a DICOM series too."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

from segvol.data.registry import dataset_names, get_adapter
from segvol.errors import SegvolError

__all__ = ["synth", "write_phantoms"]

log = logging.getLogger(__name__)


def write_phantoms(dataset: str, out: str | Path, cases: int, size: str = "small", seed: int = 0,
                   overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Write ``cases`` phantoms of ``dataset`` into ``out`` in the dataset's real layout (its adapter's
    :meth:`~segvol.data.adapter.DatasetAdapter.write_phantoms`)."""
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


def synth(dataset: str, out: str | Path, *, cases: int = 8, size: str = "small", seed: int = 0,
          overwrite: bool = False, progress: bool = True, dicom: bool = False) -> list[Path]:
    """Write phantom cases of ``dataset`` in its real layout (:func:`write_phantoms`); with ``dicom``
    (CT only) each scan also as a DICOM series folder ``<out>/dicom/<case>/``."""
    adapter = get_adapter(dataset)
    if dicom and adapter.modality != "CT":
        raise SegvolError(f"--dicom: only CT phantoms are written as DICOM series, not {dataset}")
    written = write_phantoms(dataset, out, cases, size=size, seed=seed, overwrite=overwrite, progress=progress)
    if dicom:
        import nibabel as nib
        import numpy as np
        from nibabel.spatialimages import SpatialImage
        from tqdm.auto import tqdm

        from segvol.io.dicom import write_series

        scans = adapter.phantom_scans(Path(out))
        for i, (case, scan) in enumerate(tqdm(scans, desc="dicom", unit="series", disable=not progress)):
            img = cast(SpatialImage, nib.load(str(scan)))
            written.append(write_series(np.asanyarray(img.dataobj), img.affine, Path(out) / "dicom" / case,
                                        seed=seed * 1000 + i, overwrite=overwrite))
    return written
