"""What every importer shares: the report of what was written and skipped, and the writer of one case folder."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segvol.errors import SegvolError
from segvol.utils import atomic_dir, atomic_path

__all__ = ["ImportReport", "CaseWriter", "MANIFEST"]

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
