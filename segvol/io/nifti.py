"""NIfTI reading checks, the one grid comparison, in-memory scans, and writing on the input's own grid."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from segvol.errors import SegvolError, first_line
from segvol.utils import atomic_path

__all__ = ["read_header", "check_volume", "check_image", "save_like", "NIFTI_SUFFIXES",
           "strip_nifti_suffix", "nifti_stem", "image_from_bytes", "is_in_memory",
           "image_like", "as_image", "load_in_memory", "IN_MEMORY", "fast_nifti_reader", "c_order_float32", "gunzip",
           "gzip_bytes", "write_nifti", "save_nifti"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
IN_MEMORY = "<in-memory scan>"  # what errors and metadata call a scan given as an object
_BLOCK = 32  # voxels per block edge of the Fortran-to-C copy: keeps both sides of the copy in the CPU cache


def gunzip(raw: bytes) -> bytes:
    """Decompress a whole gzip stream: ISA-L (``isal``, about 2x zlib) when installed, else zlib. Corrupt data
    raises ``OSError`` either way (ISA-L's own error is not one)."""
    try:
        from isal import igzip
        from isal.igzip_lib import IsalError  # ISA-L's error (stubs type it loosely)
    except ImportError:  # optional speed-up
        return gzip.decompress(raw)
    try:
        return igzip.decompress(raw)
    except IsalError as exc:  # type: ignore[misc]
        raise OSError(f"corrupt gzip data ({exc})") from exc


def gzip_bytes(raw: bytes, level: int = 1) -> bytes:
    """Compress ``raw`` as one gzip stream (nibabel's level 1 by default): ISA-L when installed, else zlib."""
    try:
        from isal import igzip
    except ImportError:
        return gzip.compress(raw, compresslevel=level)
    return igzip.compress(raw, compresslevel=min(level, 3))


def c_order_float32(array: np.ndarray) -> np.ndarray:
    """``array`` as a C-ordered float32 copy. NIfTI data is Fortran-ordered and MONAI wants C order; numpy's
    one-call copy walks the input with a stride of a whole slab and runs 2-3x slower than this blocked copy."""
    if array.flags.c_contiguous:
        return np.asarray(array, dtype=np.float32)
    out = np.empty(array.shape, dtype=np.float32)
    if array.ndim < 2:
        out[...] = array
        return out
    for i in range(0, array.shape[0], _BLOCK):
        for j in range(0, array.shape[1], _BLOCK):
            out[i:i + _BLOCK, j:j + _BLOCK] = array[i:i + _BLOCK, j:j + _BLOCK]
    return out


def fast_nifti_reader():  # noqa: ANN201  (a monai.data.NibabelReader)
    """MONAI's ``NibabelReader`` (same metadata, same array) that gunzips the whole file at once with
    :func:`gunzip` and hands ``LoadImage`` a C-ordered float32 array, so that its own Fortran-to-C copy and
    float conversion have nothing left to do. Register it on an inference ``LoadImaged``."""
    import nibabel as nib
    from monai.data import NibabelReader
    from monai.data.utils import correct_nifti_header_if_necessary

    class FastNiftiReader(NibabelReader):
        def read(self, data, **kwargs):  # noqa: ANN001, ANN201
            names = data if isinstance(data, (list, tuple)) else [data]
            if len(names) != 1 or not str(names[0]).lower().endswith(".nii.gz") or self.kwargs or kwargs:
                return super().read(data, **kwargs)
            self.filenames = (names[0],)
            raw = Path(names[0]).read_bytes()
            return correct_nifti_header_if_necessary(nib.Nifti1Image.from_bytes(gunzip(raw)))

        def _get_array_data(self, img, filename):  # noqa: ANN001, ANN202
            return c_order_float32(np.asanyarray(img.dataobj))

    return FastNiftiReader()


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
    return check_image(read_header(path), str(path), channels=channels, load_data=load_data)


def check_image(img, name: str, channels: int | None = None, load_data: bool = True):  # noqa: ANN001, ANN201
    """:func:`check_volume` for a nibabel image already open (from a file or from memory); errors call it
    ``name``."""
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if channels is None or channels == 1:
        if len(shape) != 3:
            raise SegvolError(f"{name}: expected a 3D volume, got {len(img.shape)}D data of shape {img.shape}")
    elif len(shape) != 4 or shape[3] != channels:
        raise SegvolError(f"{name}: expected a 4D volume with {channels} channels, got shape {img.shape}")
    if min(shape[:3]) < 2:
        raise SegvolError(f"{name}: a volume needs at least 2 voxels along every axis, got shape {img.shape}")
    if load_data:
        try:
            np.asanyarray(img.dataobj)
        except (OSError, EOFError, zlib.error, ValueError) as exc:
            raise SegvolError(f"{name}: truncated or corrupt NIfTI data ({first_line(exc)})") from exc
    return img


def is_in_memory(item: object) -> bool:
    """A scan given as an object rather than a file: a nibabel image, or a list of them (the sequences of one
    multi-channel scan)."""
    import nibabel as nib

    if isinstance(item, (list, tuple)):
        return bool(item) and all(isinstance(i, nib.spatialimages.SpatialImage) for i in item)
    return isinstance(item, nib.spatialimages.SpatialImage)


def image_from_bytes(data: bytes, name: str):  # noqa: ANN201
    """A NIfTI image read from the bytes of a ``.nii`` or ``.nii.gz`` file (gzip recognised by its magic number)
    without touching the disk, its data checked complete (not decoded: that is left to whoever reads it); errors
    name ``name``."""
    import nibabel as nib

    try:
        raw = gunzip(data) if data[:2] == b"\x1f\x8b" else data
        img = nib.Nifti1Image.from_bytes(raw)
        need = int(getattr(img.dataobj, "offset", 0)) + math.prod(img.shape) * img.get_data_dtype().itemsize
        if len(raw) < need:
            raise ValueError(f"data cut short: {len(raw)} of {need} bytes")
    except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError, nib.wrapstruct.WrapStructError,
            OSError, EOFError, zlib.error, ValueError) as exc:
        raise SegvolError(f"{name}: not a readable NIfTI file ({first_line(exc)})") from exc
    return img


def image_like(array: np.ndarray, reference, dtype: type = np.uint8, name: str = "output"):  # noqa: ANN001, ANN201
    """``array`` (3D, or 4D with channels last) as a NIfTI image on ``reference``'s grid.

    ``reference`` is the input's nibabel image (shape, affine, qform/sform and the rest of its header are kept) or
    any object with ``shape`` and ``affine`` (a DICOM series: a fresh header, scanner qform/sform).
    """
    import nibabel as nib

    if tuple(array.shape[:3]) != tuple(reference.shape[:3]):
        raise SegvolError(f"{name}: output shape {array.shape} does not match the input grid {reference.shape[:3]}")
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
    return out


def save_like(array: np.ndarray, reference, path: str | Path, dtype: type = np.uint8) -> None:  # noqa: ANN001
    """Save ``array`` on ``reference``'s grid (see :func:`image_like`), written atomically."""
    out = image_like(array, reference, dtype, name=str(path))
    with atomic_path(path) as tmp:
        write_nifti(out, tmp)


def as_image(array: np.ndarray, affine: np.ndarray):  # noqa: ANN201
    """An in-memory scan given as an array (3D, or 4D channels last) and its voxel -> scanner (RAS mm) affine,
    as a NIfTI image (scanner qform/sform), so that it goes through the same reader as a file."""
    import nibabel as nib

    array, affine = np.asanyarray(array), np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise SegvolError(f"in-memory scan: the affine must be an invertible 4x4 matrix, got shape {affine.shape}")
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return img


def load_in_memory(image_input) -> dict:  # noqa: ANN001
    """``{"image": MetaTensor}`` for an in-memory scan (a nibabel image, or a list of them for the sequences of
    one scan), exactly as ``LoadImaged(keys="image", image_only=True)`` gives it for the same data in a file."""
    from monai.data import MetaTensor, NibabelReader
    from monai.data.utils import correct_nifti_header_if_necessary
    from monai.transforms.io.array import switch_endianness
    from monai.utils import ImageMetaKey

    images = [correct_nifti_header_if_necessary(i) for i in
              (image_input if isinstance(image_input, (list, tuple)) else [image_input])]
    reader = NibabelReader()
    reader.filenames = [IN_MEMORY] * len(images)  # what read() would have set; used only for GPU direct reads
    array, meta = reader.get_data(images if len(images) > 1 else images[0])
    meta = switch_endianness(meta, "<")
    meta[ImageMetaKey.FILENAME_OR_OBJ] = IN_MEMORY
    return {"image": MetaTensor.ensure_torch_and_prune_meta(c_order_float32(array), meta)}  # one blocked copy


def write_nifti(image, path: Path) -> None:  # noqa: ANN001  (a nibabel image)
    """``nib.save``, except that ``.nii.gz`` is compressed in one call by :func:`gzip_bytes` (ISA-L when present;
    the same single gzip stream nibabel writes)."""
    import nibabel as nib

    if str(path).lower().endswith(".gz"):
        with open(path, "wb") as fh:
            fh.write(gzip_bytes(image.to_bytes()))
    else:
        nib.save(image, str(path))


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write one volume atomically with its affine as both qform and sform (code 1, scanner)."""
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
