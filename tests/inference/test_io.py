"""Inference input and output: scans in memory, output writers by name (DICOM-SEG included), no silent overwrite,
and case folders read in the model's sequences."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from segvol import api
from segvol.cli import main
from segvol.config import config_to_dict, load_config
from segvol.io.dicom import write_series
from segvol.errors import SegvolError
from segvol.networks import build_network, network_args
from segvol.checkpoint import save_checkpoint
from tests.conftest import write_nifti
from tests.inference.test_infer_geometry import AFFINES, untrained_ckpt  # noqa: F401  (fixture)

AFFINE = AFFINES["LPI anisotropic offset"]



def _box(shape=(30, 24, 10), lo=(5, 6, 2), hi=(18, 20, 7)):
    image = np.full(shape, -150, np.int16)
    image[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 600
    return image


# ---------------------------------------------------------------------------------------------- in memory
def test_in_memory_scans_give_the_file_result_in_their_own_kind(tmp_path, untrained_ckpt, bright_model):  # noqa: F811
    image = _box()
    scan = write_nifti(tmp_path / "scan.nii.gz", image, AFFINE)
    (from_file,) = api.infer(inputs=[scan], model=untrained_ckpt, device="cpu")
    assert from_file.mask == tmp_path / "scan_seg.nii.gz" and from_file.labels.any()
    before = sorted(tmp_path.iterdir())

    img = nib.Nifti1Image.from_bytes(nib.load(str(scan)).to_bytes())  # a Nifti1Image with no file behind it
    (from_image,) = api.infer(inputs=[img], model=untrained_ckpt, device="cpu")
    assert isinstance(from_image.mask, nib.Nifti1Image) and from_image.output is None
    assert np.array_equal(np.asarray(from_image.mask.dataobj), from_file.labels)
    assert np.allclose(from_image.mask.affine, AFFINE) and from_image.mask.get_data_dtype() == np.uint8

    (from_array,) = api.infer(inputs=[(image, AFFINE)], model=untrained_ckpt, device="cpu")
    assert isinstance(from_array.mask, np.ndarray) and np.array_equal(from_array.mask, from_file.labels)
    assert sorted(tmp_path.iterdir()) == before  # nothing written for in-memory scans

    with pytest.raises(SegvolError, match="expected a 3D volume"):
        api.infer(inputs=[(image[:, :, 0], np.eye(4))], model=untrained_ckpt, device="cpu")
    with pytest.raises(SegvolError, match="in-memory scans have no file name"):
        api.infer(inputs=[img], model=untrained_ckpt, device="cpu", out_dir=tmp_path / "o")


def test_predict_array_returns_the_kind_it_was_given(tmp_path, untrained_ckpt, bright_model):  # noqa: F811
    from segvol.inference import backends
    from segvol.inference.arrays import predict_array

    image = _box()
    scan = write_nifti(tmp_path / "scan.nii.gz", image, AFFINE)
    model = backends.load_model(untrained_ckpt, torch.device("cpu"))
    written = predict_array(model, scan)
    assert written == tmp_path / "scan_seg.nii.gz"
    labels = np.asarray(nib.load(str(written)).dataobj)
    assert labels.any()
    as_array = predict_array(model, image, AFFINE)
    assert isinstance(as_array, np.ndarray) and np.array_equal(as_array, labels)
    as_image = predict_array(model, nib.load(str(scan)))
    assert isinstance(as_image, nib.Nifti1Image) and np.array_equal(np.asarray(as_image.dataobj), labels)
    with pytest.raises(SegvolError, match="needs its affine"):
        predict_array(model, image)
    with pytest.raises(SegvolError, match="already exists"):
        predict_array(model, scan)


def test_app_segments_uploads_without_files(tmp_path, untrained_ckpt, bright_model, monkeypatch):  # noqa: F811
    import gzip
    import tempfile

    from segvol.app.logic import ModelChoice, segment_upload

    scan = write_nifti(tmp_path / "scan.nii", _box(), AFFINE)
    (ref,) = api.infer(inputs=[scan], model=untrained_ckpt, device="cpu")
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: pytest.fail("the app wrote a temp folder"))
    for name, data in (("scan.nii", scan.read_bytes()), ("scan.nii.gz", gzip.compress(scan.read_bytes()))):
        result = segment_upload([(name, data)], ModelChoice(untrained_ckpt, "test"), device="cpu")
        assert result.mask.any() and np.array_equal(result.mask, ref.labels)
        assert np.array_equal(np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(result.mask_bytes)).dataobj),
                              ref.labels)


# ---------------------------------------------------------------------------------------------- writers
def test_output_registry_names_formats_and_refuses_unknown_ones(tmp_path, untrained_ckpt, bright_model):  # noqa: F811
    from segvol.inference.outputs import WRITERS, OutputPlan, Writer, register_writer

    assert {"seg", "prob", "overlay", "gif", "stl", "ply", "dicom-seg"} <= set(WRITERS)
    scan = write_nifti(tmp_path / "scan.nii.gz", _box(), AFFINE)
    seen = []

    def probe(target, out):
        seen.append(out)
        target.write_text("x")
        return target

    register_writer(Writer("probe", "{stem}.txt", probe))
    try:
        (pred,) = api.infer(inputs=[scan], model=untrained_ckpt, device="cpu", outputs="probe,ply")
    finally:
        del WRITERS["probe"]
    assert (tmp_path / "scan_seg.txt").read_text() == "x" and (tmp_path / "scan_seg.ply").is_file()
    assert not (tmp_path / "scan_seg.nii.gz").exists()  # seg was not asked for
    assert seen[0].labels.any() and np.array_equal(seen[0].labels, pred.labels)
    assert OutputPlan.of("seg, overlay,seg").names == ("seg", "overlay")

    def folder_writer(target, out):
        from segvol.utils import atomic_dir

        with atomic_dir(target, overwrite=out.overwrite) as tmp:
            (tmp / "n.txt").write_text(str(int(out.labels.sum())))
        return target

    register_writer(Writer("probe-dir", "{base}_probe", folder_writer, folder=True))
    try:
        api.infer(inputs=[scan], model=untrained_ckpt, device="cpu", outputs="probe-dir")
        with pytest.raises(SegvolError, match="scan_probe: already exists"):
            api.infer(inputs=[scan], model=untrained_ckpt, device="cpu", outputs="probe-dir")
        api.infer(inputs=[scan], model=untrained_ckpt, device="cpu", outputs="probe-dir", overwrite=True)
    finally:
        del WRITERS["probe-dir"]
    assert (tmp_path / "scan_probe" / "n.txt").read_text() == str(int(pred.labels.sum()))
    with pytest.raises(SegvolError, match="unknown output format"):
        OutputPlan.of("seg,jpeg")
    with pytest.raises(SegvolError, match="dicom-seg: .*not one"):
        api.infer(inputs=[scan], model=untrained_ckpt, device="cpu", outputs="dicom-seg", overwrite=True)


def _check_dicom_seg(series, seg_path, mask):
    """The Segmentation references ``series`` and its frames equal the NIfTI mask on the corresponding slices."""
    import highdicom as hd
    import pydicom

    assert mask.any()
    seg = hd.seg.segread(str(seg_path))
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    sources = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(str(p), stop_before_pixels=True)
                                                for p in sorted(series.iterdir()))}
    first = next(iter(sources.values()))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID and seg.StudyInstanceUID == first.StudyInstanceUID
    uids = list(sources)
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    assert frames.shape == (len(uids), first.Rows, first.Columns) and frames.any()
    for uid, frame in zip(uids, frames):
        k = int(sources[uid].InstanceNumber) - 1  # write_series: file k+1 holds slice k, rows along array axis 1
        assert np.array_equal(frame > 0, mask[:, :, k].T > 0)


def _unsheared(affine: np.ndarray) -> np.ndarray:
    """``affine`` with its voxel axes made orthogonal (same directions as near as can be, same spacings)."""
    q, r = np.linalg.qr(affine[:3, :3])
    out = affine.copy()
    out[:3, :3] = q * np.sign(np.diag(r)) * np.linalg.norm(affine[:3, :3], axis=0)
    return out


def test_dicom_seg_reads_back_onto_the_series_frames(tmp_path, untrained_ckpt, bright_model):  # noqa: F811
    api.synth(dataset="imagecas", out=tmp_path / "ct", cases=1, size="small", dicom=True, progress=False)
    series = tmp_path / "ct" / "dicom" / "1"
    assert main(["-q", "infer", str(series), "--model", str(untrained_ckpt), "--device", "cpu",
                 "--output", "seg,dicom-seg"]) == 0
    mask = np.asarray(nib.load(str(tmp_path / "ct" / "dicom" / "1_seg.nii.gz")).dataobj)
    _check_dicom_seg(series, tmp_path / "ct" / "dicom" / "1_seg.dcm", mask)

    # rows and slices not along RAS axes, the slices square to their stack (a sheared stack is a gantry tilt, which
    # a DICOM-SEG is refused for: dcmqi would decode it off the series' grid; tests/inference/test_dicom_untidy.py)
    oblique = write_series(_box(), _unsheared(AFFINES["oblique"]), tmp_path / "oblique")
    (pred,) = api.infer(inputs=[oblique], model=untrained_ckpt, device="cpu", outputs=["dicom-seg"])
    assert pred.files == {"dicom-seg": tmp_path / "oblique_seg.dcm"} and not (tmp_path / "oblique_seg.nii.gz").exists()
    _check_dicom_seg(oblique, pred.files["dicom-seg"], pred.labels)


# ---------------------------------------------------------------------------------------------- no overwrite
def test_colliding_batches_are_refused_before_any_work(tmp_path, untrained_ckpt, capsys):  # noqa: F811
    image = _box()
    a = write_nifti((tmp_path / "a").mkdir() or tmp_path / "a" / "scan.nii.gz", image, AFFINE)
    b = write_nifti((tmp_path / "b").mkdir() or tmp_path / "b" / "scan.nii.gz", image, AFFINE)
    assert main(["infer", str(a), str(b), "--out-dir", str(tmp_path / "m"), "--model", str(untrained_ckpt),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(a) in err and str(b) in err and "would both write" in err
    assert not (tmp_path / "m").exists()

    c = tmp_path / "c"
    c.mkdir()
    write_nifti(c / "scan.nii.gz", image, AFFINE)
    nib.save(nib.Nifti1Image(image, AFFINE), str(c / "scan.nii"))
    with pytest.raises(SegvolError, match=r"scan\.nii.* and .*scan\.nii(\.gz)? would both write"):
        api.infer(inputs=[c], model=untrained_ckpt, device="cpu")
    assert not (c / "scan_seg.nii.gz").exists()

    d = tmp_path / "d"
    write_series(image, AFFINE, d / "case7")
    write_nifti(d / "case7.nii.gz", image, AFFINE)
    for inputs in ([d / "case7", d / "case7.nii.gz"], [d]):
        with pytest.raises(SegvolError, match="case7.* and .*case7.* would both write"):
            api.infer(inputs=inputs, model=untrained_ckpt, device="cpu")
    assert not (d / "case7_seg.nii.gz").exists()


def test_an_output_never_replaces_an_input(tmp_path, untrained_ckpt, capsys):  # noqa: F811
    scan = write_nifti(tmp_path / "scan.nii.gz", _box(), AFFINE)
    original = scan.read_bytes()
    assert main(["infer", str(scan), "-o", str(scan), "--overwrite", "--model", str(untrained_ckpt),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "an output never replaces an input" in err
    assert scan.read_bytes() == original

    other = write_nifti(tmp_path / "scan_seg.nii.gz", _box(), AFFINE)  # an explicit input named like an output
    kept = other.read_bytes()
    with pytest.raises(SegvolError, match="an output never replaces an input"):
        api.infer(inputs=[scan, other], model=untrained_ckpt, device="cpu", overwrite=True)
    assert other.read_bytes() == kept and scan.read_bytes() == original

    folder = tmp_path / "existing"
    folder.mkdir()
    assert main(["infer", str(scan), "-o", str(folder), "--overwrite", "--model", str(untrained_ckpt),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"-o {folder}: is a folder" in err and not any(folder.iterdir())


# ---------------------------------------------------------------------------------------------- case folders
def test_a_flair_only_model_reads_a_brats_case_folder_as_one_case(tmp_path, monkeypatch, bright_model):
    from segvol.inference import predictor

    cfg = load_config("tiny-brats", ["data.modalities=[flair]", "data.labels=binary"])
    from segvol.data.brats import BraTS

    spec = BraTS().task_spec(cfg)
    assert spec.in_channels == 1 and spec.modalities == ("flair",)
    args = network_args(cfg, spec.in_channels, spec.out_channels)
    ckpt = tmp_path / "flair.pt"
    save_checkpoint(ckpt, {"config": config_to_dict(cfg), "network": args, "task": spec.as_dict(),
                           "state_dict": build_network(args).state_dict()})
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    boxes = {"flair": ((4, 4, 3), (14, 12, 9)), "t1": ((16, 14, 10), (22, 19, 14)), "t1ce": ((2, 14, 2), (8, 19, 6)),
             "t2": ((16, 2, 2), (22, 8, 6))}  # each sequence bright in its own place
    root = tmp_path / "brats"
    for case in (root / "BraTS20_Training_001", root / "BraTS20_Training_002"):
        case.mkdir(parents=True)
        for name, (lo, hi) in boxes.items():
            volume = np.zeros((24, 20, 16), np.float32)
            volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 100.0
            write_nifti(case / f"{case.name}_{name}.nii.gz", volume + 10.0 * (volume == 0), affine)
        write_nifti(case / f"{case.name}_seg.nii.gz", np.zeros((24, 20, 16), np.uint8), affine)

    read = []
    real = predictor.predict_volume
    monkeypatch.setattr(predictor, "predict_volume", lambda model, image, *a, **k: read.append(image) or
                        real(model, image, *a, **k))
    case = root / "BraTS20_Training_001"
    results = api.infer(inputs=[case], model=ckpt, device="cpu")
    assert len(results) == 1 and read == [str(case / f"{case.name}_flair.nii.gz")]
    assert results[0].output == root / f"{case.name}_seg.nii.gz"
    assert sorted(p.name for p in root.glob("*_seg.nii.gz")) == [f"{case.name}_seg.nii.gz"]
    out = nib.load(str(results[0].output))
    assert out.shape == (24, 20, 16) and np.allclose(out.affine, affine)
    mask = np.asarray(out.dataobj).astype(bool)
    (lo, hi) = boxes["flair"]
    flair_box = np.zeros(mask.shape, bool)
    flair_box[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    assert mask.any() and np.array_equal(mask, flair_box)  # the mask follows the FLAIR, not another sequence

    read.clear()  # a folder of such cases: one mask per case, each from its FLAIR
    results = api.infer(inputs=[root], model=ckpt, device="cpu", out_dir=tmp_path / "masks")
    assert [r.output.name for r in results] == ["BraTS20_Training_001_seg.nii.gz", "BraTS20_Training_002_seg.nii.gz"]
    assert [Path(r).name for r in read] == ["BraTS20_Training_001_flair.nii.gz", "BraTS20_Training_002_flair.nii.gz"]
