"""Inspection of one NIfTI file for :mod:`segvol.data.check`: header, size, voxel values, label values.

Every finding is a :class:`Problem` with a severity (``error``: training would fail or learn from broken data;
``warning``: worth a look), a short code, a one-line message and the hint for that code in :data:`HINTS`.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segvol.errors import SegvolError, first_line

__all__ = ["Problem", "FileInfo", "HINTS", "CT_PLAUSIBLE", "inspect_file", "same_grid", "gzip_size_problem"]

CT_PLAUSIBLE = (-3072.0, 4095.0)  # HU: air is -1024; scanners pad outside the field of view down to -3072
CT_AIR_BELOW = -500.0  # a CT whose lowest value is above this holds no air: not in Hounsfield units
MR_MIN_ZERO_FRACTION = 0.01  # skull-stripped MRI has a zero background
GRID_ATOL = 1e-3  # direction/spacing part of the affine
ORIGIN_ATOL = 1e-2  # mm, translation part of the affine

HINTS: dict[str, str] = {
    "missing": "the file is gone; copy the case again",
    "unreadable": "not a NIfTI volume: re-download or re-export it as .nii.gz",
    "truncated": "the file is cut short (interrupted download or copy): re-download it",
    "dims": "segvol reads 3D volumes (H, W, D), or 4D with the channels last; re-export the scan",
    "channels": "give the model as many channels (sequences) as the dataset defines",
    "small": "a volume needs at least 2 voxels along every axis; this is a single slice",
    "spacing": "the header's voxel sizes are zero, negative or not finite: fix pixdim",
    "orientation": "no qform/sform in the header, so the orientation is guessed; set them when converting",
    "grid": "resample the label onto the image grid (nearest neighbour) or re-export both from the same series",
    "nan": "replace NaN/Inf voxels (e.g. with the background value) before training",
    "label_values": "map the labels to the dataset's values (e.g. 255 -> 1) or check that this is the label file",
    "label_float": "save label maps as integers (uint8); whole-number floats work but waste space",
    "label_nonint": "fractional labels come from interpolation: resample label maps nearest-neighbour",
    "label_empty": "no foreground: the case teaches background only; check that the right label is paired",
    "ct_range": "CT is expected in Hounsfield units (about -1024 to 3071): check rescale slope/intercept",
    "ct_no_air": "no air (about -1000 HU) in a CT: the values are probably not Hounsfield units",
    "mri_negative": "MRI intensities are non-negative; negative values suggest an already normalised export",
    "mri_background": "skull-stripped MRI has a zero background; strip the skull or check the modality",
    "constant": "every voxel has the same value: the image is blank",
    "spacing_outlier": "check the header's voxel size; a wrong pixdim resamples the case to the wrong size",
    "shape_outlier": "an unusually small or large scan: a crop, a localiser or another protocol?",
    "duplicate": "the same image twice: duplicates leak between training and validation; drop one",
    "preprocess": "the training preprocessing failed on this case; run with --debug for the traceback",
}


@dataclass
class Problem:
    """One finding: ``severity`` is ``error`` or ``warning``; ``file`` is empty for case-level findings."""

    severity: str
    code: str
    case: str
    file: str
    message: str
    hint: str


@dataclass
class FileInfo:
    """What one file holds, as far as it could be read."""

    path: str
    header_ok: bool = False
    shape: list[int] = field(default_factory=list)
    spacing: list[float] = field(default_factory=list)
    channels: int = 1
    affine: Any = None
    intensity: list[float] | None = None
    label_values: list[float] | None = None
    digest: str | None = None
    problems: list[Problem] = field(default_factory=list)

    def add(self, severity: str, code: str, case: str, message: str) -> None:
        self.problems.append(Problem(severity, code, case, self.path, message, HINTS[code]))


def _strip_path(message: str, path: str) -> str:
    return message[len(path) + 2:] if message.startswith(f"{path}: ") else message


def _check_dims(info: FileInfo, case: str, shape: tuple[int, ...], role: str, channels: int | None) -> bool:
    """Dimensionality and channels of ``shape``; False when the file cannot be used at all."""
    ndim = 3 if len(shape) == 4 and shape[3] == 1 else len(shape)
    if ndim < 3 or ndim > 4:
        info.add("error", "dims", case, f"{len(shape)}D data of shape {tuple(shape)}, expected a 3D volume")
        return False
    if ndim == 4 and (role == "label" or channels == 1):
        what = "a 3D label map" if role == "label" else "a 3D volume"
        info.add("error", "dims", case, f"4D data of shape {tuple(shape)} where {what} is expected")
        return False
    if ndim == 3 and role == "image" and channels is not None and channels > 1:
        info.add("error", "dims", case, f"3D volume of shape {tuple(shape)} where {channels} channels (4D) "
                                        f"are expected")
        return False
    if ndim == 4 and channels is not None and shape[3] != channels:
        info.add("error", "channels", case, f"{shape[3]} channels, expected {channels}")
    if min(shape[:3]) < 2:
        info.add("error", "small", case, f"shape {tuple(shape)} has fewer than 2 voxels along an axis")
        return False
    info.channels = shape[3] if ndim == 4 else 1
    return True


def _check_geometry(info: FileInfo, case: str, img: Any) -> None:
    zooms = np.asarray(img.header.get_zooms()[:3], float)
    info.spacing = [round(float(z), 6) for z in zooms]
    info.affine = np.asarray(img.affine, float)
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0) or abs(np.linalg.det(info.affine[:3, :3])) < 1e-12:
        info.add("error", "spacing", case, f"invalid voxel spacing {info.spacing} or singular affine")
    if int(img.header["sform_code"]) == 0 and int(img.header.get("qform_code", 0)) == 0:
        info.add("warning", "orientation", case, "no qform or sform: orientation unknown")


def gzip_size_problem(path: str | Path, img: Any) -> str | None:
    """Detect a truncated file from sizes alone: an ``.nii`` shorter than its header says, or an ``.nii.gz``
    whose gzip size field disagrees (then confirmed by decompressing); None when the sizes agree."""
    path = Path(path)
    header = img.header
    needed = int(header["vox_offset"]) + int(np.prod(img.shape)) * header.get_data_dtype().itemsize
    if not path.name.lower().endswith(".gz"):
        have = path.stat().st_size
        return None if have >= needed else f"file holds {have} bytes, the header needs {needed}"
    with open(path, "rb") as fh:
        fh.seek(-4, 2)
        isize = int.from_bytes(fh.read(4), "little")
    if isize == needed % 2**32:
        return None
    total = 0
    try:  # the size field disagrees: count the real bytes (multi-member gzip files are legal)
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        return f"compressed data ends early ({first_line(exc, 80)})"
    return None if total >= needed else f"holds {total} bytes of data, the header needs {needed}"


def _value_stats(info: FileInfo, case: str, data: np.ndarray) -> np.ndarray | None:
    """Flag NaN/Inf; return the finite values (None when there are none)."""
    if data.dtype.kind != "f":
        return data
    finite = np.isfinite(data)
    bad = int(finite.size - np.count_nonzero(finite))
    if bad:
        info.add("error", "nan", case, f"{bad} NaN/Inf voxel(s)")
        return data[finite] if bad < data.size else None
    return data


def _check_intensity(info: FileInfo, case: str, data: np.ndarray, modality: str) -> None:
    lo, hi = float(data.min()), float(data.max())
    info.intensity = [lo, hi]
    if lo == hi:
        info.add("warning", "constant", case, f"every voxel is {lo:g}")
        return
    if modality.upper() == "CT":
        if lo < CT_PLAUSIBLE[0] or hi > CT_PLAUSIBLE[1]:
            info.add("warning", "ct_range", case, f"values {lo:g} to {hi:g} lie outside the plausible HU range "
                                                  f"{CT_PLAUSIBLE[0]:g} to {CT_PLAUSIBLE[1]:g}")
        if lo > CT_AIR_BELOW:
            info.add("warning", "ct_no_air", case, f"lowest value {lo:g}: no air in this CT")
        return
    if lo < 0:
        info.add("warning", "mri_negative", case, f"negative values (down to {lo:g}) in an MRI")
    zero = float(np.count_nonzero(data == 0)) / data.size
    if zero < MR_MIN_ZERO_FRACTION:
        info.add("warning", "mri_background", case, f"only {100 * zero:.1f}% of voxels are zero: no zero background")


def _check_labels(info: FileInfo, case: str, data: np.ndarray, allowed: frozenset[int]) -> None:
    if data.dtype.kind == "f":
        whole = np.round(data)
        if not np.array_equal(whole, data):
            frac = data[whole != data]
            info.add("error", "label_nonint", case, f"{frac.size} non-integer label value(s), e.g. {frac.flat[0]:g}")
            info.label_values = [float(v) for v in np.unique(whole)[:20]]
            return
        info.add("warning", "label_float", case, f"float labels ({data.dtype}) holding whole numbers")
        data = whole.astype(np.int64)
    if data.dtype.kind in "iu" and data.size and data.min() >= 0 and data.max() < 65536:
        values = np.flatnonzero(np.bincount(data.ravel().astype(np.int64)))
    else:
        values = np.unique(data)
    info.label_values = [float(v) for v in values[:20]]
    unknown = sorted(int(v) for v in values if int(v) not in allowed)
    if unknown:
        info.add("error", "label_values", case, f"label value(s) {unknown[:8]} not among the dataset's "
                                                f"{sorted(allowed)}")
    elif not np.any(values != 0):
        info.add("warning", "label_empty", case, "empty label (no foreground voxel)")


def inspect_file(path: str | Path, role: str, case: str, *, channels: int | None = None, modality: str = "MR",
                 allowed: frozenset[int] = frozenset({0, 1}), headers_only: bool = False) -> FileInfo:
    """Inspect one image or label file (``role``); never raises for problems in the file itself."""
    from segvol.io.nifti import read_header

    info = FileInfo(path=str(path))
    try:
        img = read_header(path)
    except SegvolError as exc:
        code = "missing" if not Path(path).exists() else "unreadable"
        info.add("error", code, case, _strip_path(str(exc), str(path)))
        return info
    if not _check_dims(info, case, tuple(int(s) for s in img.shape), role, channels):
        return info
    _check_geometry(info, case, img)
    info.header_ok, info.shape = True, [int(s) for s in img.shape[:3]]
    if headers_only:
        reason = gzip_size_problem(path, img)
        if reason:
            info.add("error", "truncated", case, f"truncated: {reason}")
        return info
    try:
        data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        info.add("error", "truncated", case, f"truncated or corrupt data ({first_line(exc, 80)})")
        return info
    finite = _value_stats(info, case, data)
    if finite is None:
        return info
    if role == "label":
        _check_labels(info, case, finite, allowed)
    else:
        _check_intensity(info, case, finite, modality)
        digest = hashlib.blake2b(np.ascontiguousarray(data).tobytes(), digest_size=16)
        digest.update(f"{data.shape}{data.dtype.str}".encode())
        info.digest = digest.hexdigest()
    return info


def same_grid(a: FileInfo, b: FileInfo) -> str | None:
    """Why ``b``'s grid differs from ``a``'s (shape, spacing, affine), or None when they agree (origins within
    :data:`ORIGIN_ATOL` mm)."""
    from segvol.io.grid import grid_mismatch

    return grid_mismatch(a, b, atol=GRID_ATOL, origin_atol=ORIGIN_ATOL)
