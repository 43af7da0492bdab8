"""DICOM as hospitals hold it: each untidy shape of series either gives a DICOM-SEG that independent validators
accept (dciodvfy, dcentvfy, dcmqi's decode equal to the NIfTI mask in scanner mm) or is refused in one line before
inference, with nothing written."""

from __future__ import annotations

import logging
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest

from segvol.cli import main
from segvol.inference import predictor
from segvol.io.dicom_series import find_series
from tests.inference.dicom_tools import (AFFINE, dciodvfy_errors, dcentvfy_lines, dcmqi_segments, decoded_equals,
                                         edit, series)
from tests.inference.test_infer_geometry import untrained_ckpt  # noqa: F401


def _infer(args, ckpt):
    return main(["infer", *map(str, args), "--model", str(ckpt), "--device", "cpu"])


def _check_seg(seg, mask_path, sources, tmp_path):
    """The SEG passes dciodvfy and dcentvfy with its sources, and dcmqi decodes it onto the NIfTI mask."""
    assert dciodvfy_errors(seg) == []
    assert dcentvfy_lines(seg, sources) == []
    mask_img = nib.load(str(mask_path))
    mask = np.asarray(mask_img.dataobj)
    assert mask.any()
    (decoded,) = dcmqi_segments(seg, tmp_path / "dcmqi")
    assert decoded_equals(decoded, mask == 1, mask_img.affine)


def _blank_sop(ds, n):
    ds.SOPInstanceUID, ds.SOPClassUID = "", ""  # anonymised: only the file meta keeps them


def _tilt(ds, n):  # slices shifted along y as they go up in z: a 10 degree gantry tilt
    position = [float(v) for v in ds.ImagePositionPatient]
    position[1] += n * 2.0 * np.tan(np.radians(10))
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]


@pytest.mark.parametrize("shape", ["tidy", "SOP UIDs blanked"])
def test_untidy_series_give_a_valid_seg(tmp_path, untrained_ckpt, bright_model, caplog, shape):  # noqa: F811
    folder = series(tmp_path / "ct")
    if shape == "SOP UIDs blanked":
        edit(folder, _blank_sop)
    caplog.set_level(logging.INFO, logger="segvol")
    assert _infer([folder, "--output", "seg,dicom-seg"], untrained_ckpt) == 0
    sources = sorted(folder.iterdir())
    if shape == "SOP UIDs blanked":  # dcentvfy cannot read the blanked sources: compare with them as they were
        restored = shutil.copytree(folder, tmp_path / "restored")
        edit(restored, lambda ds, n: (setattr(ds, "SOPInstanceUID", ds.file_meta.MediaStorageSOPInstanceUID),
                                      setattr(ds, "SOPClassUID", ds.file_meta.MediaStorageSOPClassUID)))
        sources = sorted(restored.iterdir())
    _check_seg(tmp_path / "ct_seg.dcm", tmp_path / "ct_seg.nii.gz", sources, tmp_path)
    if shape == "SOP UIDs blanked":
        assert "taken from the files' meta headers" in caplog.text
        seg = pydicom.dcmread(str(tmp_path / "ct_seg.dcm"))
        refs = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
        metas = {pydicom.dcmread(str(p)).file_meta.MediaStorageSOPInstanceUID for p in folder.iterdir()}
        assert refs == metas


def _blank_study(ds, n):
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID = "", "", "", ""


def _no_frame(ds, n):
    del ds.FrameOfReferenceUID


@pytest.mark.parametrize("shape, says", [("Study UIDs blanked", "StudyInstanceUID is empty"),
                                         ("no Frame of Reference", "FrameOfReferenceUID is empty or absent"),
                                         ("missing slice", "not evenly spaced"),
                                         ("gantry tilt", "gantry tilt of 10.0 degrees")])
def test_untidy_series_refused_before_work(tmp_path, untrained_ckpt, capsys, monkeypatch, shape, says):  # noqa: F811
    folder = series(tmp_path / "ct")
    if shape == "Study UIDs blanked":
        edit(folder, _blank_study)
    if shape == "no Frame of Reference":
        edit(folder, _no_frame)
    if shape == "missing slice":
        sorted(folder.iterdir())[7].unlink()
    if shape == "gantry tilt":  # dciodvfy and dcentvfy accept a SEG over tilted slices, but dcmqi decodes nothing
        edit(folder, _tilt)
    before = sorted(tmp_path.rglob("*"))

    def no_inference(*args, **kwargs):
        raise AssertionError("inference ran before the refusal")

    monkeypatch.setattr(predictor, "predict_volume", no_inference)
    capsys.readouterr()
    assert main(["infer", str(folder), "--model", str(untrained_ckpt), "--device", "cpu", "--output",
                 "seg,dicom-seg"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(folder) in err and says in err, err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("change", [_blank_study, _tilt])
def test_nifti_masks_need_no_uids_and_follow_a_tilt(tmp_path, untrained_ckpt, bright_model, change):  # noqa: F811
    """The UIDs and a tilt matter only to outputs that reference the series: the NIfTI mask lies on the series'
    own (sheared) grid, the box where the series has it in scanner mm."""
    from segvol.io.dicom import read_series

    folder = series(tmp_path / "ct")
    edit(folder, change)
    assert _infer([folder], untrained_ckpt) == 0
    out = nib.load(str(tmp_path / "ct_seg.nii.gz"))
    volume, grid = read_series(folder)
    assert out.shape == (48, 40, 16) and np.allclose(out.affine, grid.affine, atol=1e-4)
    mask, truth = np.asarray(out.dataobj) > 0, volume > 0
    assert (mask & truth).sum() / truth.sum() > 0.95  # the box, where the sheared grid puts it
    assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.85  # resampled through the shear: blurred


def _study_export(root):
    """One folder: a 16-slice CT, a 6-slice CT of another series, a localiser image inside the first series (its
    own orientation) and a secondary capture."""
    big, small = series(root / "a", seed=1, description="CT big"), series(root / "b", (32, 24, 6), seed=2,
                                                                        description="CT small")
    edit(small, lambda ds, n: setattr(ds, "SeriesNumber", 2))
    study = root / "study"
    study.mkdir()
    for folder in (big, small):
        for path in folder.iterdir():
            shutil.move(str(path), study / f"{folder.name}{path.name}")
    scout = pydicom.dcmread(str(study / "a0001.dcm"))
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
    scout.SOPInstanceUID = scout.file_meta.MediaStorageSOPInstanceUID = scout.SOPInstanceUID + ".99"
    scout.InstanceNumber = 99
    scout.save_as(str(study / "scout.dcm"))
    capture = pydicom.dcmread(str(study / "b0001.dcm"))
    capture.SOPClassUID = capture.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    capture.SeriesInstanceUID, capture.SeriesNumber, capture.SeriesDescription = capture.SeriesInstanceUID + ".7", 7, \
        "screenshot"
    capture.save_as(str(study / "capture.dcm"))
    return study, big, small


def test_a_study_folder_of_several_series(tmp_path, untrained_ckpt, bright_model, capsys, caplog):  # noqa: F811
    study, _, _ = _study_export(tmp_path)
    found = find_series(study)
    assert [(s.description, len(s.files), s.kind) for s in found] == [
        ("CT big", 16, "volume"), ("CT small", 6, "volume"), ("screenshot", 1, "secondary capture")]
    assert [p.name for p, _ in found[0].skipped] == ["scout.dcm"]

    capsys.readouterr()
    assert main(["infer", str(study), "--list-series"]) == 0
    listing = capsys.readouterr().out
    assert all(s.uid in listing for s in found) and "secondary capture" in listing and "CT small" in listing

    caplog.set_level(logging.INFO, logger="segvol")
    assert _infer([study, "--output", "seg,dicom-seg"], untrained_ckpt) == 0  # the largest axial CT volume
    assert "CT big" in caplog.text and "localiser" in caplog.text
    mask = nib.load(str(tmp_path / "study_seg.nii.gz"))
    assert mask.shape == (48, 40, 16)  # one series, never two stacked
    sources = sorted(found[0].files)
    _check_seg(tmp_path / "study_seg.dcm", tmp_path / "study_seg.nii.gz", sources, tmp_path)

    assert _infer([study, "--series", "2", "--out-dir", tmp_path / "b", "--output", "seg,dicom-seg"],
                  untrained_ckpt) == 0
    assert nib.load(str(tmp_path / "b" / "study_seg.nii.gz")).shape == (32, 24, 6)
    seg = pydicom.dcmread(str(tmp_path / "b" / "study_seg.dcm"))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == found[1].uid

    capsys.readouterr()
    assert _infer([study, "--series", "screenshot", "--out-dir", tmp_path / "c"], untrained_ckpt) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "secondary capture" in err and not (tmp_path / "c").exists()


def test_a_truncated_nifti_is_one_line(tmp_path, untrained_ckpt):  # noqa: F811
    """Library chatter (MONAI's reader failures) stays off the error path: segvol's own line only."""
    import subprocess
    import sys

    from tests.conftest import write_nifti

    scan = write_nifti(tmp_path / "scan.nii.gz", np.zeros((40, 40, 20), np.int16), AFFINE)
    data = scan.read_bytes()
    scan.write_bytes(data[: len(data) // 2])
    run = subprocess.run([sys.executable, "-m", "segvol", "infer", str(scan), "--model", str(untrained_ckpt),
                          "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    # segvol's own two progress lines (device, model) and its error; MONAI's "FastNiftiReader: unable to load"
    # lines no more
    assert len(lines) == 3 and lines[0].startswith("device: ") and lines[1].startswith("model: "), run.stderr
    assert lines[2].startswith("segvol infer: error: ") and str(scan) in lines[2], run.stderr


def test_a_series_that_passed_is_not_read_again_until_a_file_changes(tmp_path, monkeypatch):
    """Batch inference checks every series up front and reads it later: the second check costs no file read, a
    check that adds the reference UIDs runs, and a changed file is checked again (and refused when broken)."""
    import os

    from segvol.errors import SegvolError
    from segvol.io import dicom_series

    folder = series(tmp_path / "s")
    (chosen,) = find_series(folder)
    reads = []
    real = dicom_series.check_files
    monkeypatch.setattr(dicom_series, "check_files", lambda *a: reads.append(1) or real(*a))
    dicom_series.validate_series(chosen)
    dicom_series.validate_series(chosen)
    assert len(reads) == 1
    dicom_series.validate_series(chosen, references=True)  # more is asked: checked again
    dicom_series.validate_series(chosen)  # what passed with references passes without
    assert len(reads) == 2
    victim = chosen.files[3]
    victim.write_bytes(victim.read_bytes()[:-200])  # truncated pixel data
    os.utime(victim, ns=(1, 1))
    with pytest.raises(SegvolError, match="truncated pixel data"):
        dicom_series.validate_series(chosen)
    assert len(reads) == 3
