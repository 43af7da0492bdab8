"""Importers: turn the slice and nnU-Net formats users arrive with into BraTS-layout case folders.

Every importer writes one folder per volume, ``<out>/<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz`` (the 2020
layout, read by :class:`segvol.data.brats.BraTS`), plus ``<out>/segvol_import.json`` recording the source format,
which source channel became which sequence, the label mapping and any assumed geometry. A case folder appears
complete or not at all: it is written under a hidden temporary name and renamed into place. Incomplete volumes are
skipped with a reason, and an existing case is never replaced without ``overwrite``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from segvol.data.importers.writer import MANIFEST, CaseWriter, ImportReport
from segvol.errors import SegvolError

__all__ = ["IMPORTERS", "ImportReport", "CaseWriter", "MANIFEST", "run_import"]

log = logging.getLogger(__name__)


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
