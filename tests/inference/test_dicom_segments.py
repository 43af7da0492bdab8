"""Segments that viewers and archives can use: coded, coloured, overlapping for BraTS regions; and the same
segments as an RTSTRUCT. Written by the writers from a known label map; checked with dcmqi, dicom3tools and
rt-utils' reader."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from segvol.inference.dicom_seg import write_dicom_seg
from segvol.inference.outputs import OutputContext
from segvol.io.dicom_series import open_series
from segvol.io.grid import Grid
from segvol.labels import TaskSpec
from tests.inference.dicom_tools import (AFFINE, dciodvfy_errors, dcentvfy_lines, dcmqi_segments, decoded_equals,
                                         series)

SHAPE = (48, 40, 16)


def _three_organs():
    labels = np.zeros(SHAPE, np.uint8)
    labels[5:20, 5:20, 3:8] = 1
    labels[25:40, 10:30, 5:12] = 2
    labels[10:15, 25:35, 1:14] = 3
    return labels


def test_three_classes_are_coded_and_coloured(tmp_path):
    folder = series(tmp_path / "ct")
    labels = _three_organs()
    task = TaskSpec(in_channels=1, out_channels=4, activation="softmax", class_names=("liver", "spleen", "kidney"),
                    modalities=("ct",))
    seg = write_dicom_seg(tmp_path / "seg.dcm", OutputContext(labels, Grid(SHAPE, AFFINE), open_series(folder),
                                                               task=task))
    assert dciodvfy_errors(seg) == [] and dcentvfy_lines(seg, sorted(folder.iterdir())) == []
    ds = pydicom.dcmread(str(seg))
    # SNOMED-CT: liver 10200004, spleen 78961009, kidney 64033007 (anatomical structure 91723000)
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in ds.SegmentSequence] == \
        ["10200004", "78961009", "64033007"]
    assert {s.SegmentedPropertyCategoryCodeSequence[0].CodeValue for s in ds.SegmentSequence} == {"91723000"}
    assert len({tuple(s.RecommendedDisplayCIELabValue) for s in ds.SegmentSequence}) == 3
    assert str(ds.ContentCreatorName)
    decoded = dcmqi_segments(seg, tmp_path / "dcmqi")
    assert len(decoded) == 3
    assert all(decoded_equals(img, labels == v, AFFINE) for v, img in enumerate(decoded, start=1))


def test_brats_regions_are_overlapping_segments(tmp_path):
    from segvol.data.brats import REGIONS, region_paint

    folder = series(tmp_path / "mr")
    labels = np.zeros(SHAPE, np.uint8)  # BraTS labels: 2 oedema around 1 necrotic core around 4 enhancing
    labels[5:40, 5:35, 2:14] = 2
    labels[10:30, 10:30, 4:12] = 1
    labels[15:25, 15:25, 6:10] = 4
    task = TaskSpec(in_channels=4, out_channels=3, activation="sigmoid", class_names=REGIONS,
                    modalities=("flair", "t1", "t1ce", "t2"), paint=region_paint(4))
    seg = write_dicom_seg(tmp_path / "seg.dcm", OutputContext(labels, Grid(SHAPE, AFFINE), open_series(folder),
                                                               task=task))
    assert dciodvfy_errors(seg) == []
    ds = pydicom.dcmread(str(seg))
    assert [s.SegmentLabel for s in ds.SegmentSequence] == list(REGIONS)  # tc, wt, et
    truth = {"tc": np.isin(labels, (1, 4)), "wt": labels > 0, "et": labels == 4}  # the BraTS definitions
    decoded = dcmqi_segments(seg, tmp_path / "dcmqi")
    assert all(decoded_equals(img, truth[name], AFFINE) for name, img in zip(REGIONS, decoded))


def test_rtstruct_holds_the_same_segments(tmp_path):
    rt_utils = pytest.importorskip("rt_utils", reason="rt-utils is not installed (pip install 'segvol[rtstruct]')")
    from segvol.inference.rtstruct import write_rtstruct

    folder = series(tmp_path / "ct")
    labels = _three_organs()
    task = TaskSpec(in_channels=1, out_channels=4, activation="softmax", class_names=("liver", "spleen", "kidney"),
                    modalities=("ct",))
    rt = write_rtstruct(tmp_path / "rt.dcm", OutputContext(labels, Grid(SHAPE, AFFINE), open_series(folder),
                                                            task=task))
    assert dciodvfy_errors(rt) == []
    assert dcentvfy_lines(rt, sorted(folder.iterdir()), errors_only=True) == []
    back = rt_utils.RTStructBuilder.create_from(dicom_series_path=str(folder), rt_struct_path=str(rt))
    assert back.get_roi_names() == ["liver", "spleen", "kidney"]
    for value, name in enumerate(back.get_roi_names(), start=1):  # slices in position order, as the phantom's
        mask = back.get_roi_mask_by_name(name)
        truth = labels == value
        assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.9  # contours, rasterised back
