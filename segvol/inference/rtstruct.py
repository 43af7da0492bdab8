"""RT Structure Set (RTSTRUCT) output for DICOM series inputs, for radiotherapy planning systems, written with
rt-utils (``pip install 'segvol[rtstruct]'``).

One ROI per segment of :func:`segvol.inference.dicom_seg.segment_table` (the same names and colours as the DICOM
Segmentation), its contours drawn by rt-utils on every source slice. The mask is sampled on the source slices
exactly as for the Segmentation (:func:`~segvol.inference.dicom_seg.frames_on_slices`), in rt-utils' slice order,
and the source headers are the repaired ones (:func:`~segvol.io.dicom_series.source_datasets`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from segvol.errors import SegvolError, first_line
from segvol.utils import atomic_path

__all__ = ["write_rtstruct"]

log = logging.getLogger(__name__)


def _rt_utils() -> Any:
    try:
        import rt_utils
        from rt_utils import ds_helper, image_helper
    except ImportError as exc:
        raise SegvolError("--output rtstruct needs rt-utils: pip install 'segvol[rtstruct]'") from exc
    return rt_utils, ds_helper, image_helper


def _complete(ds: Any, source: Any) -> None:
    """What rt-utils leaves out or writes too long for a valid RTSTRUCT (dciodvfy): the study's type 2 attributes
    and Frame of Reference from the source, Operators' Name, and contour coordinates as DS of at most 16
    characters."""
    from pydicom.valuerep import format_number_as_ds

    for keyword in ("AccessionNumber", "ReferringPhysicianName", "StudyID", "StudyDate", "StudyTime"):
        setattr(ds, keyword, source.get(keyword, "") or "")
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = source.FrameOfReferenceUID
    ds.PositionReferenceIndicator = source.get("PositionReferenceIndicator", "") or ""
    ds.StructureSetLabel, ds.Manufacturer = "segvol", "segvol"
    for roi in ds.ROIContourSequence:
        for contour in roi.get("ContourSequence", []):
            contour.ContourData = [format_number_as_ds(float(v)) for v in contour.ContourData]


def write_rtstruct(target: str | Path, out: Any) -> Path | None:
    """Write ``out.labels`` (an :class:`segvol.inference.outputs.OutputContext` of a DICOM series input) as an
    RTSTRUCT referencing that series; written atomically. Segments with no voxel on the slices get no ROI; an
    empty mask writes nothing (said in a warning)."""
    from segvol.inference.dicom_seg import frames_on_slices, segment_colour, segment_table, source_series
    from segvol.io.dicom_series import source_datasets

    rt_utils, ds_helper, image_helper = _rt_utils()
    series, target = source_series(out), Path(target)
    sources = source_datasets(series)
    try:
        sources.sort(key=image_helper.get_slice_position)  # rt-utils' slice order: mask[:, :, i] on sources[i]
        frames = frames_on_slices(out.labels, out.affine, sources)
        table = segment_table(out.task, sorted({int(v) for v in np.unique(frames)} - {0}))
        rtstruct = rt_utils.RTStruct(sources, ds_helper.create_rtstruct_dataset(sources))
        written = 0
        for number, segment in enumerate(table, start=1):
            mask = np.isin(frames, segment.values).transpose(2, 1, 0)  # rt-utils: (columns, rows, slices)
            if not mask.any():
                continue
            rtstruct.add_roi(mask=mask, color=list(segment_colour(number)), name=segment.label[:64],
                             description=f"segvol: label value(s) {', '.join(str(v) for v in segment.values)}")
            written += 1
        _complete(rtstruct.ds, sources[0])
    except SegvolError:
        raise
    except Exception as exc:  # rt-utils, OpenCV and pydicom raise many types
        raise SegvolError(f"{series.folder}: cannot make an RTSTRUCT for this series "
                          f"({type(exc).__name__}: {first_line(exc, empty='no message')})") from exc
    if not written:
        log.warning("%s: the mask is empty; no RTSTRUCT written", target)
        return None
    with atomic_path(target) as tmp:
        rtstruct.ds.save_as(str(tmp), enforce_file_format=True)
    log.debug("wrote an RTSTRUCT of %d ROI(s) to %s", written, target)
    return target
