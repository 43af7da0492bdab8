"""BraTS2020 HDF5 slices (``volume_V_slice_S.h5``, keys ``image`` (240, 240, 4) float and ``mask`` (240, 240, 3))
back into 3D volumes in the BraTS 2020 layout.

Slices ``S = 0, 1, ...`` of each volume ``V`` are stacked in numeric order along the third voxel axis, which assumes
the export cut the original arrays as ``data[:, :, S]``; volumes are given the real data's 1 mm LPS affine. A volume
with a missing, unreadable or oddly shaped slice is skipped with the reason.

Which image channel is which sequence is not stored in the files. The default, ``t1, t1ce, t2, flair``, is the order
most public notebooks for this export assume; pass ``channels`` (``--channels``) to change it. The three mask channels
are read as necrotic/non-enhancing core, edema and enhancing tumour and painted as BraTS labels 1, 2 and 4 (edema
first, so that overlapping region masks still give core and enhancing their own labels). Both choices are written to
``segvol_import.json``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segvol.data.brats import MODALITIES, resolve_modalities
from segvol.data.importers.writer import CaseWriter, ImportReport
from segvol.data.phantoms.brats import brats_affine
from segvol.errors import SegvolError, first_line

__all__ = ["import_brats_h5", "DEFAULT_CHANNELS", "MASK_LABELS"]

log = logging.getLogger(__name__)

DEFAULT_CHANNELS = ("t1", "t1ce", "t2", "flair")
MASK_LABELS = (1, 2, 4)  # mask channel -> BraTS label
_NAME = re.compile(r"^volume_(\d+)_slice_(\d+)\.h5$", re.IGNORECASE)


def _channels(channels: Sequence[str]) -> tuple[str, ...]:
    names = tuple(str(c).lower() for c in channels)
    canonical = tuple(resolve_modalities([n])[0] for n in names)
    if len(canonical) != 4 or sorted(canonical) != sorted(MODALITIES):
        raise SegvolError(f"--channels {','.join(names)}: name each of {', '.join(MODALITIES)} once, in the files' "
                          f"channel order")
    return canonical


def _read_volume(slices: dict[int, Path]) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, S, 4) image and (H, W, S, 3) mask; raises ValueError with the reason when incomplete."""
    import h5py

    missing = sorted(set(range(max(slices) + 1)) - set(slices))
    if missing:
        raise ValueError(f"slice(s) {', '.join(map(str, missing[:5]))} missing")
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for index in sorted(slices):
        path = slices[index]
        try:
            with h5py.File(path, "r") as fh:
                image, mask = np.asarray(fh["image"]), np.asarray(fh["mask"])
        except (OSError, KeyError) as exc:
            raise ValueError(f"{path.name} unreadable ({type(exc).__name__}: {first_line(exc, 80)})") from exc
        if image.ndim != 3 or image.shape[2] != 4 or mask.shape != image.shape[:2] + (3,):
            raise ValueError(f"{path.name} has image {image.shape} / mask {mask.shape}, expected (H, W, 4) / (H, W, 3)")
        if images and image.shape != images[0].shape:
            raise ValueError(f"{path.name} is {image.shape[:2]}, other slices {images[0].shape[:2]}")
        images.append(image.astype(np.float32))
        masks.append(mask)
    return np.stack(images, axis=2), np.stack(masks, axis=2)


def _label_map(mask: np.ndarray) -> np.ndarray:
    seg = np.zeros(mask.shape[:3], np.uint8)
    for channel in sorted(range(3), key=lambda c: (MASK_LABELS[c] != 2, c)):  # edema first, then core, enhancing
        seg[mask[..., channel] > 0.5] = MASK_LABELS[channel]
    return seg


def import_brats_h5(*, src: Path, out: Path, overwrite: bool = False,
                    channels: Sequence[str] = DEFAULT_CHANNELS) -> ImportReport:
    """Stack every ``volume_V_slice_S.h5`` under ``src`` into ``out/volume_VVV/volume_VVV_<seq>.nii.gz`` + seg."""
    order = _channels(channels)
    groups: dict[int, dict[int, Path]] = {}
    for path in sorted(Path(src).rglob("*.h5")):
        if m := _NAME.match(path.name):
            groups.setdefault(int(m.group(1)), {})[int(m.group(2))] = path
    if not groups:
        raise SegvolError(f"{src}: no volume_V_slice_S.h5 files found")
    report, writer = ImportReport(Path(out)), CaseWriter(out, overwrite)
    for volume in sorted(groups):
        case = f"volume_{volume:03d}"
        writer.check(case)
        try:
            image, mask = _read_volume(groups[volume])
        except ValueError as exc:
            report.skip(case, str(exc))
            continue
        volumes = {name: image[..., order.index(name)] for name in MODALITIES}
        volumes["seg"] = _label_map(mask)
        writer.write(case, volumes, brats_affine(image.shape[:3]))
        report.written.append(case)
        log.debug("%s: %d slices", case, image.shape[2])
    writer.manifest({"format": "brats-h5", "source": str(src), "image_channels": list(order),
                     "mask_channels": {"0": "necrotic/non-enhancing core -> 1", "1": "edema -> 2",
                                       "2": "enhancing tumour -> 4"},
                     "slice_axis": "third voxel axis, slice S at index S", "spacing_mm": [1.0, 1.0, 1.0],
                     "affine": "BraTS LPS: diag(-1, -1, 1), origin (0, H-1, 0)", "volumes": report.written})
    return report
