"""The cascade's geometry: the box the coarse stage found, the crop the fine stage segments, and the paste back.

A cascade model (``locate.enabled``; docs/cascade.md) runs twice on one scan: its coarse stage (``locate``: a small
network at 2-3 mm) predicts where the target is on the scan's own grid; :func:`located_box` turns that into a box of
input voxels grown by ``locate.margin_mm``; the fine stage segments :func:`crop_scan` of the scan (nibabel's slicer
keeps the crop's affine exact, so the fine stage sees the crop at its true place and spacing); :func:`paste` puts its
mask back into a mask of the whole scan. The crop is what pays for the fine spacing: the fine stage never sees the
rest of the scan. :func:`segvol.inference.predictor.predict_scan` drives the two stages.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from segvol.utils import union_box

__all__ = ["located_box", "crop_scan", "paste", "scan_in_memory", "box_text"]

log = logging.getLogger(__name__)


def scan_in_memory(image_input: Any) -> Any:
    """The scan as nibabel image(s) with their data in memory, read once for both stages: a NIfTI path (or the
    sequence paths of one scan), a DICOM series (folder or chosen series), or an in-memory image (returned as is)."""
    from segvol.io.dicom import read_series
    from segvol.io.dicom_series import DicomSeries
    from segvol.io.nifti import as_image, image_from_bytes, is_in_memory

    if is_in_memory(image_input):
        return image_input
    if isinstance(image_input, DicomSeries):  # the chosen series of a folder (segvol.io.dicom_series)
        array, grid = read_series(image_input)
        return as_image(array, grid.affine)
    items = list(image_input) if isinstance(image_input, (list, tuple)) else [image_input]
    if len(items) == 1 and Path(items[0]).is_dir():
        array, grid = read_series(items[0])
        return as_image(array, grid.affine)
    images = [image_from_bytes(Path(p).read_bytes(), str(p)) for p in items]
    return images[0] if len(images) == 1 else images


def located_box(found: np.ndarray, affine: np.ndarray, margin_mm: float) -> tuple[slice, ...] | None:
    """The box of input voxels around the non-zero voxels of ``found`` (the coarse stage's mask on the input grid,
    its ``locate.keep_largest`` largest finds already kept on its own grid by its post-processing), grown by
    ``margin_mm`` on every side and clipped to the scan; None when the coarse stage found nothing."""
    mask = np.asarray(found) > 0
    box = union_box(mask, mask, margin=0)
    if box is None:
        return None
    spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    grow = [int(math.ceil(margin_mm / float(s))) for s in spacing]
    return tuple(slice(max(b.start - g, 0), min(b.stop + g, n)) for b, g, n in zip(box, grow, mask.shape))


def crop_scan(scan: Any, box: tuple[slice, ...]) -> Any:
    """``scan`` (a nibabel image, or a list of them: the sequences of one scan) cut to ``box``; each crop's affine
    places it where it lies in the scan (nibabel's slicer)."""
    if isinstance(scan, (list, tuple)):
        return [img.slicer[box] for img in scan]
    return scan.slicer[box]


def paste(part: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...], channels_first: bool = False
          ) -> np.ndarray:
    """A zero array of the scan's ``shape`` holding ``part`` (the fine stage's output on the crop) at ``box``;
    ``channels_first``: ``part`` is ``(C, h, w, d)`` (probabilities) and so is the result."""
    if channels_first:
        out = np.zeros((part.shape[0], *shape), dtype=part.dtype)
        out[(slice(None),) + tuple(box)] = part
        return out
    out = np.zeros(shape, dtype=part.dtype)
    out[box] = part
    return out


def box_text(box: tuple[slice, ...], shape: tuple[int, ...]) -> str:
    """``x 120:310, y 90:260, z 30:200 (11% of the scan's voxels)`` for the log."""
    share = np.prod([b.stop - b.start for b in box]) / max(np.prod(shape), 1)
    where = ", ".join(f"{axis} {b.start}:{b.stop}" for axis, b in zip("xyz", box))
    return f"{where} ({100 * share:.0f}% of the scan's voxels)"
