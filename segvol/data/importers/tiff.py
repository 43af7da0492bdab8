"""LGG TIFF slice stacks (the kaggle_3m layout: ``TCGA_*/TCGA_*_K.tif`` RGB 256x256 + ``TCGA_*_K_mask.tif``) back
into 3D volumes.

Slices are sorted by ``K`` numerically (``_2`` before ``_10``) and stacked along the third voxel axis; a patient
with a missing image or mask, a gap in ``K`` or an oddly shaped slice is skipped with the reason. The RGB channels
are the three sequences of that dataset, pre-contrast T1, FLAIR and post-contrast T1, written as ``t1``, ``flair``
and ``t1ce``; the mask (FLAIR abnormality) becomes a 0/1 ``seg``.

The TIFFs carry no geometry. segvol assumes :data:`DEFAULT_SPACING` = 1 x 1 x 3 mm (in-plane x slice; override with
``spacing``/``--spacing``) and radiological display (image rows run anterior to posterior, columns patient right to
left, ``K`` inferior to superior), i.e. an LPS affine like BraTS. The assumption is written to
``segvol_import.json``; read the output with ``--dataset lgg`` (binary labels, three channels).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segvol.data.importers.writer import CaseWriter, ImportReport
from segvol.errors import SegvolError

__all__ = ["import_lgg_tiff", "DEFAULT_SPACING", "RGB_SEQUENCES"]

log = logging.getLogger(__name__)

DEFAULT_SPACING = (1.0, 1.0, 3.0)
RGB_SEQUENCES = ("t1", "flair", "t1ce")  # R: pre-contrast, G: FLAIR, B: post-contrast
_SLICE = re.compile(r"^(?P<case>.+?)_(?P<k>\d+)(?P<mask>_mask)?\.tiff?$", re.IGNORECASE)


def _patients(src: Path) -> dict[str, dict[int, dict[str, Path]]]:
    """``{case: {K: {"image": path, "mask": path}}}`` for every TIFF under ``src``."""
    found: dict[str, dict[int, dict[str, Path]]] = {}
    for path in sorted(src.rglob("*.tif*")):
        if m := _SLICE.match(path.name):
            kind = "mask" if m.group("mask") else "image"
            found.setdefault(m.group("case"), {}).setdefault(int(m.group("k")), {})[kind] = path
    return found


def _read_patient(slices: dict[int, dict[str, Path]]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols, K, 3) image and (rows, cols, K) mask; raises ValueError with the reason when incomplete."""
    import tifffile

    ks = sorted(slices)
    gaps = sorted(set(range(ks[0], ks[-1] + 1)) - set(ks))
    if gaps:
        raise ValueError(f"slice(s) {', '.join(map(str, gaps[:5]))} missing")
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for k in ks:
        lacking = [kind for kind in ("image", "mask") if kind not in slices[k]]
        if lacking:
            raise ValueError(f"slice {k} has no {lacking[0]} file")
        try:
            image, mask = tifffile.imread(slices[k]["image"]), tifffile.imread(slices[k]["mask"])
        except Exception as exc:  # tifffile raises several types for broken files
            raise ValueError(f"slice {k} unreadable ({type(exc).__name__})") from exc
        mask = mask[..., 0] if mask.ndim == 3 else mask
        if image.ndim != 3 or image.shape[2] != 3 or mask.shape != image.shape[:2]:
            raise ValueError(f"slice {k}: image {image.shape} / mask {mask.shape}, expected (H, W, 3) / (H, W)")
        if images and image.shape != images[0].shape:
            raise ValueError(f"slice {k} is {image.shape[:2]}, other slices {images[0].shape[:2]}")
        images.append(image)
        masks.append(mask)
    return np.stack(images, axis=2), np.stack(masks, axis=2)


def lgg_affine(shape: tuple[int, int, int], spacing: Sequence[float]) -> np.ndarray:
    """LPS affine for volumes indexed (column, row, K): columns run to patient left, rows to posterior."""
    affine = np.diag([-float(spacing[0]), -float(spacing[1]), float(spacing[2]), 1.0])
    affine[:3, 3] = [0.0, (shape[1] - 1) * float(spacing[1]), 0.0]
    return affine


def import_lgg_tiff(*, src: Path, out: Path, overwrite: bool = False,
                    spacing: Sequence[float] = DEFAULT_SPACING) -> ImportReport:
    """Write each patient folder of TIFF slices as ``out/<case>/<case>_{flair,t1,t1ce,seg}.nii.gz``."""
    if len(spacing) != 3 or min(spacing) <= 0:
        raise SegvolError(f"--spacing {' '.join(map(str, spacing))}: give three positive numbers (mm)")
    patients = _patients(Path(src))
    if not patients:
        raise SegvolError(f"{src}: no TCGA_*_K.tif / TCGA_*_K_mask.tif slices found")
    report, writer = ImportReport(Path(out)), CaseWriter(out, overwrite)
    for case in sorted(patients):
        writer.check(case)
        try:
            image, mask = _read_patient(patients[case])
        except ValueError as exc:
            report.skip(case, str(exc))
            continue
        image = np.swapaxes(image, 0, 1)  # (rows, cols) -> (cols, rows): voxel i runs right -> left
        volumes = {name: image[..., c].astype(np.int16) for c, name in enumerate(RGB_SEQUENCES)}
        volumes["seg"] = (np.swapaxes(mask, 0, 1) > 127).astype(np.uint8)
        writer.write(case, volumes, lgg_affine(image.shape[:3], spacing))
        report.written.append(case)
    writer.manifest({"format": "lgg-tiff", "source": str(src), "rgb_channels": list(RGB_SEQUENCES),
                     "mask": "FLAIR abnormality, > 127 -> 1", "spacing_mm_assumed": [float(s) for s in spacing],
                     "orientation_assumed": "rows anterior->posterior, columns right->left, K inferior->superior",
                     "dataset": "lgg", "volumes": report.written})
    return report
