"""DICOM series: recognising a series folder, reading its geometry, and writing phantom volumes as a CT series.

Reading goes through MONAI's ``PydicomReader`` (``LoadImage(reader="PydicomReader")``): it sorts the slices by
position, applies RescaleSlope/Intercept and turns the DICOM LPS geometry into a RAS affine, so a series behaves
like a NIfTI scan everywhere in segvol and the mask written for it carries the series' geometry.

:func:`write_series` is the inverse, used by ``segvol synth --format dicom``: one uncompressed CT image per slice
with ImagePositionPatient, ImageOrientationPatient, PixelSpacing and SliceThickness from a NIfTI-style RAS affine.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from segvol.errors import SegvolError, first_line
from segvol.io.dicom_series import check_files, is_dicom_file
from segvol.io.grid import Grid
from segvol.utils import atomic_dir

__all__ = ["is_dicom_file", "is_series_folder", "check_files", "check_series", "read_series", "series_reader",
           "write_series"]

log = logging.getLogger(__name__)
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (its own inverse)
# MONAI announces on every read that an optional GPU JPEG decoder is absent; pydicom's own decoders are used
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)


def is_series_folder(path: str | Path) -> bool:
    """A folder whose files include DICOM files (any name, ``.dcm`` or none)."""
    path = Path(path)
    return path.is_dir() and any(p.is_file() and is_dicom_file(p) for p in path.iterdir())


def series_reader():  # noqa: ANN201  (a MONAI ImageReader)
    """MONAI's PydicomReader, or a one-line error saying how to get it."""
    try:
        import pydicom  # noqa: F401
        from monai.data import PydicomReader
    except ImportError as exc:
        raise SegvolError("reading DICOM needs pydicom: pip install pydicom") from exc
    return PydicomReader()


def check_series(series: Any) -> int:
    """Check a DICOM series before it is read (a :class:`~segvol.io.dicom_series.DicomSeries`, or a folder: its
    largest image volume): every file readable with its whole pixel data, one slice size and orientation, no
    gantry tilt, and evenly spaced slice positions (a missing slice would silently stretch the volume). Returns
    the number of slices; problems are one-line errors naming the file or folder."""
    from segvol.io.dicom_series import DicomSeries, open_series, validate_series

    series = series if isinstance(series, DicomSeries) else open_series(series)
    validate_series(series)
    return len(series.files)


def read_series(series: Any) -> tuple[np.ndarray, Grid]:
    """The volume (float32, HU after rescale) and grid of a DICOM series (a
    :class:`~segvol.io.dicom_series.DicomSeries`, or a folder: its largest image volume); errors name the folder."""
    from monai.transforms import LoadImage

    from segvol.io.dicom_series import DicomSeries, open_series, staged_folder

    series = series if isinstance(series, DicomSeries) else open_series(series)
    folder = series.folder
    check_series(series)
    try:
        with staged_folder(series) as staged:
            image = LoadImage(reader=series_reader(), image_only=True)(str(staged))
    except SegvolError:
        raise
    except Exception as exc:  # pydicom and MONAI raise many types for broken series
        cause = exc.__cause__ or exc
        raise SegvolError(f"{folder}: not a readable DICOM series ({type(cause).__name__}: "
                          f"{first_line(cause, empty='corrupt')})") from exc
    if image.ndim != 3:
        raise SegvolError(f"{folder}: expected one 3D series, got data of shape {tuple(image.shape)}")
    return np.asarray(image, dtype=np.float32), Grid(tuple(int(s) for s in image.shape),
                                                           np.asarray(image.affine, dtype=np.float64))


def _uid(root: str, *parts: int) -> Any:
    """A DICOM UID (``pydicom.uid.UID``, a ``str``) made of ``root`` and ``parts``."""
    from pydicom.uid import UID

    return UID(".".join([root, *[str(p) for p in parts]])[:64])


def write_series(volume: np.ndarray, affine: np.ndarray, folder: str | Path, *, patient: str = "PHANTOM",
                 description: str = "segvol phantom", seed: int = 0, overwrite: bool = False) -> Path:
    """Write an int16 CT volume (x, y, z voxel axes, RAS ``affine`` as in NIfTI) as one DICOM file per slice.

    Column index follows array axis 0, row index axis 1, slices axis 2; the folder is written to a temporary
    sibling and renamed, so an interrupted write leaves nothing half-made.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise SegvolError(f"{folder}: DICOM series need a 3D volume, got shape {volume.shape}")
    lps = _LPS @ np.asarray(affine, dtype=np.float64)
    steps = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / steps[0], lps[:3, 1] / steps[1]
    root = f"1.2.826.0.1.3680043.10.1452.{seed % 100000}"
    study, series, frame = _uid(root, 1), _uid(root, 2), _uid(root, 3)
    data = np.clip(np.rint(volume), -32768, 32767).astype(np.int16)
    with atomic_dir(Path(folder), overwrite=overwrite) as tmp:
        for k in range(data.shape[2]):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = _uid(root, 4, k + 1)
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = FileDataset(str(tmp / f"{k + 1:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
            ds.Modality, ds.PatientName, ds.PatientID = "CT", f"{patient}^", patient  # family^given
            ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName = "", "O", ""  # type 2: present, may be empty
            ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20000101", "000000", "1", ""
            ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = description, 1, k + 1
            ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
            position = lps @ np.array([0.0, 0.0, k, 1.0])
            ds.ImagePositionPatient = [f"{v:.6f}" for v in position[:3]]
            ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_dir, *col_dir)]
            ds.PixelSpacing = [f"{steps[1]:.6f}", f"{steps[0]:.6f}"]  # row spacing, column spacing
            ds.SliceThickness = f"{steps[2]:.6f}"
            ds.Rows, ds.Columns = data.shape[1], data.shape[0]
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
            ds.PixelData = np.ascontiguousarray(data[:, :, k].T).tobytes()  # rows x columns
            pydicom.dcmwrite(str(tmp / f"{k + 1:04d}.dcm"), ds, enforce_file_format=True)
    log.debug("wrote %d DICOM slices to %s", data.shape[2], folder)
    return Path(folder)
