"""Medical Segmentation Decathlon Task01_BrainTumour (the nnU-Net raw layout: ``imagesTr/``, ``labelsTr/``,
``dataset.json``, 4D images with the sequences as the last axis) into the BraTS 2020 layout.

The channel of each sequence is read from ``dataset.json``'s ``modality`` (or ``channel_names``) entry; without
it, MSD's order FLAIR, T1w, T1gd, T2w is assumed. MSD labels 1 edema, 2 non-enhancing tumour, 3 enhancing tumour
become BraTS 2, 1 and 4. Images without a label, with a channel count other than four, with a label on another grid
or with unknown label values are skipped with the reason; macOS ``._*`` companions are ignored.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import cast

import numpy as np

from segvol.data.importers.writer import CaseWriter, ImportReport
from segvol.errors import SegvolError, first_line

__all__ = ["import_msd", "MSD_TO_BRATS", "DEFAULT_ORDER"]

log = logging.getLogger(__name__)

MSD_TO_BRATS = {0: 0, 1: 2, 2: 1, 3: 4}
DEFAULT_ORDER = ("flair", "t1", "t1ce", "t2")
_NAMES = {"flair": "flair", "t2-flair": "flair", "t1w": "t1", "t1": "t1", "t1gd": "t1ce", "t1ce": "t1ce",
          "t1c": "t1ce", "t2w": "t2", "t2": "t2"}


def _channel_order(src: Path) -> tuple[str, ...]:
    path = src / "dataset.json"
    if not path.is_file():
        log.warning("%s: no dataset.json; assuming channels %s", src, ", ".join(DEFAULT_ORDER))
        return DEFAULT_ORDER
    try:
        meta = json.loads(path.read_text())
    except ValueError as exc:
        raise SegvolError(f"{path}: not valid JSON ({exc})") from exc
    names = meta.get("modality") or meta.get("channel_names") or {}
    order = tuple(_NAMES.get(str(names.get(str(i), "")).lower(), "?") for i in range(len(names)))
    if sorted(order) != sorted(DEFAULT_ORDER):
        raise SegvolError(f"{path}: modality entry {names} does not name FLAIR, T1w, T1gd and T2w once each")
    return order


def _convert(image_path: Path, label_path: Path, order: tuple[str, ...]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The case's volumes and affine; raises ValueError with the reason when it cannot be used."""
    import nibabel as nib
    from nibabel.spatialimages import SpatialImage

    try:
        img, lab = cast(SpatialImage, nib.load(str(image_path))), cast(SpatialImage, nib.load(str(label_path)))
        if img.ndim != 4 or img.shape[3] != 4:
            raise ValueError(f"image shape {img.shape}, expected (H, W, D, 4)")
        if tuple(lab.shape[:3]) != tuple(img.shape[:3]):
            raise ValueError(f"label shape {lab.shape} differs from image {img.shape[:3]}")
        data, labels = np.asanyarray(img.dataobj), np.rint(np.asanyarray(lab.dataobj)).astype(np.int64)
    except (OSError, EOFError, nib.filebasedimages.ImageFileError) as exc:
        raise ValueError(f"unreadable ({type(exc).__name__}: {first_line(exc, 80)})") from exc
    unknown = sorted(set(np.unique(labels).tolist()) - set(MSD_TO_BRATS))
    if unknown:
        raise ValueError(f"label values {unknown} outside 0-3")
    lookup = np.array([MSD_TO_BRATS[i] for i in range(4)], np.uint8)
    volumes = {name: data[..., order.index(name)] for name in DEFAULT_ORDER}
    volumes["seg"] = lookup[labels.reshape(labels.shape[:3])]
    return volumes, img.affine


def import_msd(*, src: Path, out: Path, overwrite: bool = False) -> ImportReport:
    """Write ``imagesTr/X.nii.gz`` + ``labelsTr/X.nii.gz`` as ``out/X/X_{flair,t1,t1ce,t2,seg}.nii.gz``."""
    src = Path(src)
    images = sorted(p for p in (src / "imagesTr").glob("*.nii*") if not p.name.startswith("."))
    if not images:
        raise SegvolError(f"{src}: no imagesTr/*.nii.gz files (expected the MSD Task01_BrainTumour layout)")
    order = _channel_order(src)
    report, writer = ImportReport(Path(out)), CaseWriter(out, overwrite)
    for image_path in images:
        case = image_path.name.split(".nii")[0]
        case = case[:-5] if case.endswith("_0000") else case  # nnU-Net v2 names the first channel file X_0000
        label_path = next((p for p in (src / "labelsTr").glob(f"{case}.nii*")), None)
        if label_path is None:
            report.skip(case, f"no labelsTr/{case}.nii.gz")
            continue
        writer.check(case)
        try:
            volumes, affine = _convert(image_path, label_path, order)
        except ValueError as exc:
            report.skip(case, str(exc))
            continue
        writer.write(case, volumes, affine)
        report.written.append(case)
    writer.manifest({"format": "msd", "source": str(src), "image_channels": list(order),
                     "labels": "MSD 1 edema -> 2, 2 non-enhancing -> 1, 3 enhancing -> 4",
                     "volumes": report.written})
    return report
