"""Importers: turn the slice and nnU-Net formats users arrive with into BraTS-layout case folders.

Every importer writes one folder per volume, ``<out>/<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz`` (the 2020
layout, read by :class:`segvol.data.brats.BraTS`), plus ``<out>/segvol_import.json`` recording the source format,
which source channel became which sequence, the label mapping and any assumed geometry. A case folder appears
complete or not at all: it is written under a hidden temporary name and renamed into place. Incomplete volumes are
skipped with a reason, and an existing case is never replaced without ``overwrite``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segvol.errors import SegvolError
from segvol.utils import atomic_dir, atomic_path

__all__ = ["IMPORTERS", "ImportReport", "CaseWriter", "run_import"]

log = logging.getLogger(__name__)
MANIFEST = "segvol_import.json"


@dataclass
class ImportReport:
    """What an importer did: the case folders written and the volumes skipped, each with its reason."""

    out: Path
    written: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, name: str, reason: str) -> None:
        log.warning("skipped %s: %s", name, reason)
        self.skipped.append((name, reason))

    def summary(self) -> str:
        text = f"wrote {len(self.written)} volume(s) to {self.out}"
        if self.skipped:
            text += f"; skipped {len(self.skipped)}: " + "; ".join(f"{n} ({r})" for n, r in self.skipped[:10])
        return text


class CaseWriter:
    """Writes whole case folders atomically into ``out``; refuses to replace existing cases unless ``overwrite``."""

    def __init__(self, out: str | Path, overwrite: bool = False) -> None:
        self.out, self.overwrite = Path(out), overwrite
        self.out.mkdir(parents=True, exist_ok=True)

    def check(self, case: str) -> None:
        if (self.out / case).exists() and not self.overwrite:
            raise SegvolError(f"{self.out / case}: already exists (use --overwrite to replace it)")

    def write(self, case: str, volumes: dict[str, np.ndarray], affine: np.ndarray) -> Path:
        """Save ``{name: array}`` as ``<case>/<case>_<name>.nii.gz`` (``seg`` as uint8) and move it into place."""
        from segvol.io.nifti import save_nifti

        self.check(case)
        target = self.out / case
        with atomic_dir(target, overwrite=True) as tmp:
            for name, array in volumes.items():
                save_nifti(np.asarray(array, np.uint8 if name == "seg" else array.dtype), affine,
                           tmp / f"{case}_{name}.nii.gz")
        return target

    def manifest(self, info: dict[str, Any]) -> None:
        with atomic_path(self.out / MANIFEST) as path:
            path.write_text(json.dumps(info, indent=1) + "\n")


def _h5(**kw: Any) -> ImportReport:
    from segvol.data.importers.h5 import import_brats_h5

    return import_brats_h5(**kw)


def _tiff(**kw: Any) -> ImportReport:
    from segvol.data.importers.tiff import import_lgg_tiff

    return import_lgg_tiff(**kw)


def _msd(**kw: Any) -> ImportReport:
    from segvol.data.importers.msd import import_msd

    return import_msd(**kw)


IMPORTERS = {"brats-h5": _h5, "lgg-tiff": _tiff, "msd": _msd}


def run_import(fmt: str, src: str | Path, out: str | Path, overwrite: bool = False, **options: Any) -> ImportReport:
    """Check ``src`` and ``out``, then run the importer registered under ``fmt``."""
    if fmt not in IMPORTERS:
        raise SegvolError(f"unknown import format {fmt!r}; known: {', '.join(sorted(IMPORTERS))}")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise SegvolError(f"{src}: no such folder")
    if out.exists() and not out.is_dir():
        raise SegvolError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SegvolError(f"{out}: folder is not empty (use --overwrite to import into it anyway)")
    report = IMPORTERS[fmt](src=src, out=out, overwrite=overwrite, **options)
    log.info("%s", report.summary())
    return report
