"""NIfTI reading checks and writing on the input's own grid."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from segvol.errors import SegvolError, first_line
from segvol.utils import atomic_path

__all__ = ["read_header", "check_volume", "save_like", "same_grid", "NIFTI_SUFFIXES", "strip_nifti_suffix",
           "nifti_stem"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def nifti_stem(name: str) -> str | None:
    """``name`` without ``.nii.gz`` / ``.nii`` (any case), or None when it is not a NIfTI file name."""
    low = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return None


def strip_nifti_suffix(name: str) -> str:
    """``name`` without ``.nii.gz`` / ``.nii`` (unchanged when it has neither)."""
    stem = nifti_stem(name)
    return name if stem is None else stem


def read_header(path: str | Path):  # noqa: ANN201  (nibabel image, data not loaded)
    """Open a NIfTI lazily, turning every way it can fail into one line naming the file."""
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise SegvolError(f"{path}: no such file")
    if path.is_dir():
        raise SegvolError(f"{path}: is a folder, expected a .nii or .nii.gz file")
    try:
        img = nib.load(str(path))
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise SegvolError(f"{path}: not a readable NIfTI file ({first_line(exc)})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise SegvolError(f"{path}: not a NIfTI file ({type(img).__name__})")
    return img


def check_volume(path: str | Path, channels: int | None = None, load_data: bool = True):  # noqa: ANN201
    """Check that ``path`` is a readable 3D NIfTI (or 4D with ``channels`` volumes); reads the data once
    when ``load_data`` so that a truncated file is caught here and not half-way through a pipeline."""
    img = read_header(path)
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if channels is None or channels == 1:
        if len(shape) != 3:
            raise SegvolError(f"{path}: expected a 3D volume, got {len(img.shape)}D data of shape {img.shape}")
    elif len(shape) != 4 or shape[3] != channels:
        raise SegvolError(f"{path}: expected a 4D volume with {channels} channels, got shape {img.shape}")
    if min(shape[:3]) < 2:
        raise SegvolError(f"{path}: a volume needs at least 2 voxels along every axis, got shape {img.shape}")
    if load_data:
        try:
            np.asanyarray(img.dataobj)
        except (OSError, EOFError, zlib.error, ValueError) as exc:
            raise SegvolError(f"{path}: truncated or corrupt NIfTI data ({first_line(exc)})") from exc
    return img


def same_grid(a, b, atol: float = 1e-3) -> bool:  # noqa: ANN001
    return tuple(a.shape[:3]) == tuple(b.shape[:3]) and np.allclose(a.affine, b.affine, atol=atol)


def save_like(array: np.ndarray, reference, path: str | Path, dtype: type = np.uint8) -> None:  # noqa: ANN001
    """Save ``array`` (3D, or 4D with channels last) on ``reference``'s grid, written atomically.

    ``reference`` is the input's nibabel image (shape, affine, qform/sform and the rest of its header are kept) or
    any object with ``shape`` and ``affine`` (a DICOM series: a fresh header, scanner qform/sform).
    """
    import nibabel as nib

    if tuple(array.shape[:3]) != tuple(reference.shape[:3]):
        raise SegvolError(f"{path}: output shape {array.shape} does not match the input grid {reference.shape[:3]}")
    affine = np.asarray(reference.affine, dtype=np.float64)
    if hasattr(reference, "header"):
        header = reference.header.copy()
        header.set_data_dtype(dtype)
        out = nib.Nifti1Image(np.asarray(array, dtype=dtype), affine, header=header)
        out.set_qform(reference.get_qform(), code=int(reference.header["qform_code"]) or 1)
        out.set_sform(reference.get_sform(), code=int(reference.header["sform_code"]) or 1)
    else:
        out = nib.Nifti1Image(np.asarray(array, dtype=dtype), affine)
        out.set_qform(affine, code=1)
        out.set_sform(affine, code=1)
        out.header.set_xyzt_units("mm")
    out.header.set_slope_inter(1.0, 0.0)
    with atomic_path(path) as tmp:
        nib.save(out, str(tmp))
