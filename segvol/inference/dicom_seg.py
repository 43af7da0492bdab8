"""DICOM Segmentation (DICOM-SEG) output for DICOM series inputs, written with highdicom.

The mask segvol predicts lies on the grid MONAI read from the series (a RAS affine). Each source slice is mapped
back onto that grid from its own ImagePositionPatient, ImageOrientationPatient and PixelSpacing, so frame ``i`` of
the Segmentation corresponds pixel for pixel to source image ``i`` whatever the series' orientation or slice
order; a slice that does not fall on the mask's grid is an error, not a shifted mask. The result is a BINARY
Segmentation IOD with one segment per label value, referencing the source series (study, frame of reference,
SOP instances), which OHIF and 3D Slicer display over the series. Needs the ``dicom`` extra
(``pip install 'segvol[dicom]'``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from segvol.labels import TaskSpec
from segvol.errors import SegvolError, first_line
from segvol.utils import atomic_path

__all__ = ["write_dicom_seg", "segment_table", "frames_on_slices"]

log = logging.getLogger(__name__)
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS
_OFF_GRID = 0.05  # voxels: how far a source pixel may sit from the mask's grid points


def _highdicom() -> Any:
    try:
        import highdicom
    except ImportError as exc:
        raise SegvolError("--output dicom-seg needs highdicom: pip install 'segvol[dicom]'") from exc
    return highdicom


# Type 2 attributes of the Patient and General Study modules: present in a valid image, possibly empty; anonymised
# series often drop them, and the Segmentation copies them from its source
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _source_datasets(folder: Path) -> list[Any]:
    """The series' image headers (no pixel data), in file-name order; absent type 2 patient and study attributes
    are filled in empty on these in-memory copies (the files are not touched)."""
    import pydicom

    from segvol.io.dicom import is_dicom_file

    files = sorted(p for p in folder.iterdir() if p.is_file() and is_dicom_file(p))
    sources = [pydicom.dcmread(str(p), stop_before_pixels=True) for p in files]
    for ds in sources:
        for keyword in _TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
    return sources


def frames_on_slices(labels: np.ndarray, affine: np.ndarray, sources: list[Any]) -> np.ndarray:
    """The label map sampled on every source slice: (n_slices, Rows, Columns), frame ``i`` on ``sources[i]``.

    Args:
        labels: (X, Y, Z) label map whose voxel -> RAS mm affine is ``affine``.
        sources: the series' datasets (ImagePositionPatient, ImageOrientationPatient, PixelSpacing, Rows, Columns).
    """
    to_voxel = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ _LPS  # LPS mm -> voxel index
    frames = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns)), dtype=labels.dtype)
    for n, ds in enumerate(sources):
        origin = np.array([float(v) for v in ds.ImagePositionPatient])
        cosines = np.array([float(v) for v in ds.ImageOrientationPatient])
        row_step, col_step = (float(v) for v in ds.PixelSpacing)  # between rows, between columns
        start = to_voxel[:3, :3] @ origin + to_voxel[:3, 3]  # voxel position of pixel (0, 0)
        along_col = to_voxel[:3, :3] @ (cosines[:3] * col_step)  # one column to the right
        along_row = to_voxel[:3, :3] @ (cosines[3:] * row_step)  # one row down
        rows, cols = np.arange(int(ds.Rows))[:, None], np.arange(int(ds.Columns))[None, :]
        index = []
        for axis in range(3):  # the mapping is affine in (row, column): one broadcast sum per voxel axis
            exact = start[axis] + rows * along_row[axis] + cols * along_col[axis]
            nearest = np.rint(exact)
            if np.abs(exact - nearest).max() > _OFF_GRID or nearest.min() < 0 or nearest.max() >= labels.shape[axis]:
                raise SegvolError(f"{getattr(ds, 'filename', 'a source slice')}: slice does not lie on the mask's "
                                  f"grid; cannot reference it in a DICOM Segmentation")
            index.append(nearest.astype(np.intp))
        frames[n] = labels[index[0], index[1], index[2]]
    return frames


def segment_table(task: TaskSpec | None, present: list[int]) -> list[tuple[int, str]]:
    """``(label value, segment label)`` for each label value the model writes (``present`` values not named by the
    task are added as ``label <v>``)."""
    names = list(task.class_names) if task else []
    paint = task.paint if task else ()
    activation = task.activation if task else "softmax"
    if activation == "sigmoid":
        table = [(int(v), f"{names[c] if c < len(names) else 'region'} (label {v})")
                 for c, v in (paint or [(c, c + 1) for c in range(len(names))])]
    else:
        table = [(v + 1, name) for v, name in enumerate(names)]
    known = {v for v, _ in table}
    table += [(v, f"label {v}") for v in present if v not in known]
    return sorted(table)


def _property_type(name: str) -> tuple[Any, Any]:
    """(category, type) codes for a segment, by its name."""
    from pydicom.sr.codedict import codes

    low = name.lower()
    if any(k in low for k in ("artery", "arteries", "vessel", "coronary")):
        return codes.SCT.AnatomicalStructure, codes.SCT.CoronaryArtery
    if any(k in low for k in ("tumour", "tumor", "wt", "tc", "et", "edema", "necro", "enhanc")):
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm
    return codes.SCT.Tissue, codes.SCT.Tissue


def _descriptions(hd: Any, table: list[tuple[int, str]]) -> list[Any]:
    from pydicom.sr.codedict import codes

    from segvol import __version__

    algorithm = hd.AlgorithmIdentificationSequence(name="segvol", family=codes.cid7162.ArtificialIntelligence,
                                                   version=str(__version__))
    out = []
    for number, (_, name) in enumerate(table, start=1):
        category, kind = _property_type(name)
        out.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name[:64], segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm))
    return out


def write_dicom_seg(target: str | Path, out: Any) -> Path:
    """Write ``out.labels`` (an :class:`segvol.inference.outputs.OutputContext` of a DICOM series input) as a
    DICOM Segmentation referencing that series; written atomically."""
    hd = _highdicom()
    folder, target = Path(out.source), Path(target)
    sources = _source_datasets(folder)
    frames = frames_on_slices(out.labels, out.affine, sources)
    present = sorted({int(v) for v in np.unique(frames)} - {0})
    table = segment_table(out.task, present)
    segment_of = np.zeros(max(v for v, _ in table) + 1 if table else 1, dtype=np.uint8)
    for number, (value, _) in enumerate(table, start=1):
        segment_of[value] = number
    pixels = segment_of[frames]  # label values -> segment numbers 1..N (label-map style)
    from segvol import __version__

    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=_descriptions(hd, table), series_instance_uid=hd.UID(), series_number=900,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="segvol",
            manufacturer_model_name="segvol", software_versions=str(__version__), device_serial_number="0",
            series_description="segvol segmentation", content_label="SEGVOL", omit_empty_frames=False)
    except (ValueError, TypeError, AttributeError) as exc:
        raise SegvolError(f"{folder}: cannot make a DICOM Segmentation for this series ({first_line(exc)})") from exc
    with atomic_path(target) as tmp:
        seg.save_as(str(tmp))
    log.debug("wrote a DICOM Segmentation of %d frames x %d segment(s) to %s", len(sources), len(table), target)
    return target
