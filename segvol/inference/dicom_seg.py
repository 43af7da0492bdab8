"""DICOM Segmentation (DICOM-SEG) output for DICOM series inputs, written with highdicom.

The mask segvol predicts lies on the grid MONAI read from the series (a RAS affine). Each source slice is mapped
back onto that grid from its own ImagePositionPatient, ImageOrientationPatient and PixelSpacing, so frame ``i`` of
the Segmentation corresponds pixel for pixel to source image ``i`` whatever the series' orientation or slice
order; a slice that does not fall on the mask's grid is an error, not a shifted mask. The result is a BINARY
Segmentation IOD referencing the source series (study, frame of reference, SOP instances), which OHIF and 3D
Slicer display over the series. Needs the ``dicom`` extra (``pip install 'segvol[dicom]'``).

Segments say what they are (:func:`segment_codes`): SNOMED-CT codes for the coronary artery and the BraTS tumour
sub-regions, the anatomical code of pydicom's SNOMED-CT dictionary where a label name is a known structure (liver,
spleen, kidney, ...), else "tissue" under the label's name; each has its own display colour. A model that predicts
overlapping regions (BraTS TC, WT, ET) writes one segment per region, overlapping as the regions do.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segvol.errors import SegvolError, first_line
from segvol.labels import TaskSpec
from segvol.utils import atomic_path

__all__ = ["Segment", "write_dicom_seg", "segment_table", "segment_codes", "segment_colour", "frames_on_slices",
           "source_series", "segment_frames"]

log = logging.getLogger(__name__)
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS
_OFF_GRID = 0.05  # voxels: how far a source pixel may sit from the mask's grid points
# distinct display colours (RGB), one per segment in order; cycled past the tenth
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180), (70, 240, 240),
           (245, 130, 48), (240, 50, 230), (128, 128, 0), (0, 0, 128))
CREATOR = "segvol^automatic"  # ContentCreatorName (a person name: family^given)


@dataclass(frozen=True)
class Segment:
    """One segment: its label, the label values of the mask it covers, and whether it is a region of a
    region (sigmoid) model."""

    label: str
    values: tuple[int, ...]
    region: bool = False


def _highdicom() -> Any:
    try:
        import highdicom
    except ImportError as exc:
        raise SegvolError("--output dicom-seg needs highdicom: pip install 'segvol[dicom]'") from exc
    return highdicom


def source_series(out: Any) -> Any:
    """The :class:`~segvol.io.dicom_series.DicomSeries` a writer's ``out.source`` names (a folder: its volume)."""
    from segvol.io.dicom_series import DicomSeries, open_series

    return out.source if isinstance(out.source, DicomSeries) else open_series(out.source)


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


def segment_table(task: TaskSpec | None, present: list[int]) -> list[Segment]:
    """The segments of the model's output: one per class (label value ``c + 1``) for softmax models; one per region
    for region (sigmoid) models, each covering the label values painted at or after its own (the task's ``paint``
    order paints outer regions first: BraTS WT->2, TC->1, ET->4 gives WT = {2, 1, 4}, TC = {1, 4}, ET = {4}), so
    regions overlap as the mask holds them. ``present`` values no segment covers are added as ``label <v>``."""
    names = list(task.class_names) if task else []
    if task is not None and task.activation == "sigmoid":
        paint = list(task.paint) or [(c, c + 1) for c in range(len(names))]
        order = [c for c, _ in paint]
        table = [Segment(names[c] if c < len(names) else f"region {c + 1}",
                         tuple(int(v) for _, v in paint[order.index(c):]), region=True) for c in sorted(order)]
    else:
        table = [Segment(name, (v + 1,)) for v, name in enumerate(names)]
    covered = {v for s in table for v in s.values}
    return table + [Segment(f"label {v}", (v,)) for v in present if v not in covered]


_BRATS = {  # BraTS region and sub-label names -> (category, type) keywords of pydicom's SCT dictionary
    "wt": ("MorphologicallyAbnormalStructure", "Neoplasm"), "whole tumour": ("MorphologicallyAbnormalStructure",
                                                                             "Neoplasm"),
    "tc": ("MorphologicallyAbnormalStructure", "Neoplasm"), "tumour core": ("MorphologicallyAbnormalStructure",
                                                                           "Neoplasm"),
    "et": ("MorphologicallyAbnormalStructure", "Neoplasm"), "enhancing tumour": ("MorphologicallyAbnormalStructure",
                                                                                "Neoplasm"),
    "necrotic core": ("MorphologicallyAbnormalStructure", "Necrosis"),
    "edema": ("MorphologicallyAbnormalStructure", "Edema"), "oedema": ("MorphologicallyAbnormalStructure", "Edema"),
}


def segment_codes(name: str) -> tuple[Any, Any]:
    """(category, type) SNOMED-CT codes of a segment named ``name``: coronary arteries and vessels, the BraTS
    regions (WT, TC, ET: neoplasm) and sub-labels (necrosis, oedema), a structure of pydicom's anatomical
    segmentation types (CID 7151: liver, spleen, kidney, ...), a tumour or lesion, else tissue."""
    from pydicom.sr.codedict import codes

    low = re.sub(r"[^a-z ]+", " ", name.lower().replace("tumor", "tumour")).strip()
    low = re.sub(r"\s+", " ", low)
    if any(k in low for k in ("artery", "arteries", "coronary", "vessel")):
        return codes.SCT.AnatomicalStructure, codes.SCT.CoronaryArtery if "vessel" not in low or \
            "coronary" in low else codes.SCT.BloodVessel
    if low in _BRATS:
        category, kind = _BRATS[low]
        return getattr(codes.SCT, category), getattr(codes.SCT, kind)
    keyword = "".join(word.capitalize() for word in low.split())
    if keyword and keyword in dir(codes.cid7151):  # Segmentation Property Types: anatomical structures
        return codes.SCT.AnatomicalStructure, getattr(codes.cid7151, keyword)
    if any(k in low for k in ("tumour", "cancer", "lesion", "mass", "nodule", "metasta")):
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm
    return codes.SCT.Tissue, codes.SCT.Tissue


def segment_colour(number: int) -> tuple[int, int, int]:
    """The display colour (RGB) of segment ``number`` (1-based)."""
    return PALETTE[(number - 1) % len(PALETTE)]


def _descriptions(hd: Any, table: list[Segment]) -> list[Any]:
    from pydicom.sr.codedict import codes

    from segvol import __version__

    algorithm = hd.AlgorithmIdentificationSequence(name="segvol", family=codes.cid7162.ArtificialIntelligence,
                                                   version=str(__version__))
    out = []
    for number, segment in enumerate(table, start=1):
        category, kind = segment_codes(segment.label)
        out.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=segment.label[:64], segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_id=segment.label[:64], tracking_uid=hd.UID(),
            display_color=hd.color.CIELabColor.from_rgb(*segment_colour(number))))
    return out


def segment_frames(labels: np.ndarray, affine: np.ndarray, sources: list[Any], task: TaskSpec | None
                   ) -> tuple[list[Segment], np.ndarray]:
    """The segments and their pixels on the source slices: (frames, rows, columns) segment numbers when no two
    segments overlap, else (frames, rows, columns, segments) booleans."""
    frames = frames_on_slices(labels, affine, sources)
    table = segment_table(task, sorted({int(v) for v in np.unique(frames)} - {0}))
    if any(s.region for s in table):
        return table, np.stack([np.isin(frames, s.values) for s in table], axis=-1)
    segment_of = np.zeros(max((v for s in table for v in s.values), default=0) + 1, dtype=np.uint8)
    for number, segment in enumerate(table, start=1):
        segment_of[list(segment.values)] = number
    return table, segment_of[frames]  # label values -> segment numbers 1..N (label-map style)


def write_dicom_seg(target: str | Path, out: Any) -> Path:
    """Write ``out.labels`` (an :class:`segvol.inference.outputs.OutputContext` of a DICOM series input) as a
    DICOM Segmentation referencing that series; written atomically. Every highdicom and pydicom failure is a
    one-line error naming the series' folder."""
    from segvol.io.dicom_series import source_datasets

    hd = _highdicom()
    series, target = source_series(out), Path(target)
    sources = source_datasets(series)
    table, pixels = segment_frames(out.labels, out.affine, sources, out.task)
    from segvol import __version__

    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=_descriptions(hd, table), series_instance_uid=hd.UID(), series_number=900,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="segvol",
            manufacturer_model_name="segvol", software_versions=str(__version__), device_serial_number="0",
            series_description="segvol segmentation", content_label="SEGVOL", content_creator_name=CREATOR,
            content_description="automatic segmentation by segvol", omit_empty_frames=False)
    except Exception as exc:  # highdicom and pydicom raise ValueError, KeyError, TypeError, AttributeError, ...
        raise SegvolError(f"{series.folder}: cannot make a DICOM Segmentation for this series "
                          f"({type(exc).__name__}: {first_line(exc, empty='no message')})") from exc
    with atomic_path(target) as tmp:
        seg.save_as(str(tmp))
    log.debug("wrote a DICOM Segmentation of %d frames x %d segment(s) to %s", len(sources), len(table), target)
    return target
