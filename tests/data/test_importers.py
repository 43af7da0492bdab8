"""Importers rebuild volumes from slice exports and the MSD layout; fixtures in each format are built here."""

from __future__ import annotations

import json

import h5py
import nibabel as nib
import numpy as np
import pytest
import tifffile

from segvol import api
from segvol.cli import main
from segvol.data.brats import LGG, BraTS
from segvol.errors import SegvolError
from tests.conftest import write_nifti


def _volume(shape=(24, 20, 9), seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(*shape, 4)).astype(np.float32)
    seg = np.zeros(shape, np.uint8)
    seg[4:16, 4:14, 2:7] = 2
    seg[7:13, 6:12, 3:6] = 4
    seg[9:11, 8:10, 4] = 1
    return images, seg


def _write_h5(folder, volume, images, seg, skip=(), bad=()):
    onehot = np.stack([seg == 1, seg == 2, seg == 4], axis=-1).astype(np.uint8)
    for s in range(images.shape[2]):
        if s in skip:
            continue
        with h5py.File(folder / f"volume_{volume}_slice_{s}.h5", "w") as fh:
            fh["image"] = images[:, :, s]
            fh["mask"] = onehot[:, :, s, :2] if s in bad else onehot[:, :, s]


def test_h5_slices_become_volumes(tmp_path):
    src, out = tmp_path / "content" / "data", tmp_path / "out"
    src.mkdir(parents=True)
    images, seg = _volume()
    _write_h5(src, 1, images, seg)
    _write_h5(src, 2, images, seg, skip=(3,))
    _write_h5(src, 10, images, seg, bad=(5,))
    report = api.import_data(fmt="brats-h5", src=tmp_path, out=out)
    assert report.written == ["volume_001"]
    assert dict(report.skipped) == {"volume_002": "slice(s) 3 missing",
                                    "volume_010": "volume_10_slice_5.h5 has image (24, 20, 4) / mask (24, 20, 2), "
                                                  "expected (H, W, 4) / (H, W, 3)"}
    case = out / "volume_001"
    written = nib.load(str(case / "volume_001_seg.nii.gz"))
    assert np.array_equal(np.asarray(written.dataobj), seg) and written.get_data_dtype() == np.uint8
    flair = nib.load(str(case / "volume_001_flair.nii.gz"))  # default order t1, t1ce, t2, flair: channel 3
    assert np.allclose(np.asarray(flair.dataobj), images[..., 3]) and nib.aff2axcodes(flair.affine) == ("L", "P", "S")
    manifest = json.loads((out / "segvol_import.json").read_text())
    assert manifest["image_channels"] == ["t1", "t1ce", "t2", "flair"] and manifest["volumes"] == ["volume_001"]
    (record,) = BraTS().find_records(out)
    assert record["id"] == "volume_001" and record["label"].endswith("volume_001_seg.nii.gz")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folders left behind

    with pytest.raises(SegvolError, match="folder is not empty"):
        api.import_data(fmt="brats-h5", src=tmp_path, out=out)
    api.import_data(fmt="brats-h5", src=tmp_path, out=out, overwrite=True, channels=["flair", "t1", "t1ce", "t2"])
    assert np.allclose(np.asarray(nib.load(str(case / "volume_001_flair.nii.gz")).dataobj), images[..., 0])
    with pytest.raises(SegvolError, match="name each of flair, t1, t1ce, t2 once"):
        api.import_data(fmt="brats-h5", src=tmp_path, out=tmp_path / "o2", channels=["flair", "flair", "t1", "t2"])


def _write_tiff_patient(folder, n, skip_mask=()):
    folder.mkdir(parents=True)
    for k in range(1, n + 1):
        rgb = np.zeros((16, 12, 3), np.uint8)
        rgb[..., 0], rgb[..., 1], rgb[..., 2] = k, 100 + k, 200  # R pre-contrast, G FLAIR, B post-contrast
        rgb[2, 9] = 250  # row 2, column 9: a marker for the orientation
        mask = np.zeros((16, 12), np.uint8)
        mask[4:8, 3:6] = 255 if k % 2 else 0
        tifffile.imwrite(folder / f"{folder.name}_{k}.tif", rgb)
        if k not in skip_mask:
            tifffile.imwrite(folder / f"{folder.name}_{k}_mask.tif", mask)


def test_lgg_tiff_stacks_sorted_numerically(tmp_path):
    src, out = tmp_path / "kaggle_3m", tmp_path / "lgg"
    _write_tiff_patient(src / "TCGA_CS_4941_19960909", 12)
    _write_tiff_patient(src / "TCGA_CS_4942_19970222", 5, skip_mask=(2,))
    report = api.import_data(fmt="lgg-tiff", src=src, out=out, spacing=(0.9, 0.9, 4.0))
    assert report.written == ["TCGA_CS_4941_19960909"]
    assert report.skipped == [("TCGA_CS_4942_19970222", "slice 2 has no mask file")]
    case = out / "TCGA_CS_4941_19960909"
    t1 = nib.load(str(case / "TCGA_CS_4941_19960909_t1.nii.gz"))
    data = np.asarray(t1.dataobj)
    assert data.shape == (12, 16, 12)  # (columns, rows, K)
    assert [int(data[0, 0, i]) for i in range(12)] == list(range(1, 13))  # _10 after _9, not after _1
    assert int(np.asarray(nib.load(str(case / "TCGA_CS_4941_19960909_flair.nii.gz")).dataobj)[0, 0, 0]) == 101
    assert int(data[9, 2, 0]) == 250  # pixel (row 2, column 9) -> voxel (9, 2)
    assert np.allclose(t1.header.get_zooms(), (0.9, 0.9, 4.0)) and nib.aff2axcodes(t1.affine) == ("L", "P", "S")
    seg = np.asarray(nib.load(str(case / "TCGA_CS_4941_19960909_seg.nii.gz")).dataobj)
    assert set(np.unique(seg)) == {0, 1} and seg[3:6, 4:8, 0].all() and not seg[:, :, 1].any()
    assert json.loads((out / "segvol_import.json").read_text())["spacing_mm_assumed"] == [0.9, 0.9, 4.0]
    (record,) = LGG().find_records(out)
    assert len(record["image"]) == 3


def _msd_tree(root):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    meta = {"name": "BRATS", "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
            "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}}
    (root / "dataset.json").write_text(json.dumps(meta))
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    image = np.stack([np.full((10, 8, 6), c + 1, np.float32) for c in range(4)], axis=-1)
    label = np.zeros((10, 8, 6), np.uint8)
    label[2:8, 2:6, 1:5] = 1
    label[3:7, 3:5, 2:4] = 3
    label[4, 3, 2] = 2
    write_nifti(root / "imagesTr" / "BRATS_001.nii.gz", image, affine)
    write_nifti(root / "labelsTr" / "BRATS_001.nii.gz", label, affine)
    write_nifti(root / "imagesTr" / "BRATS_002.nii.gz", image, affine)  # no label
    write_nifti(root / "imagesTr" / "BRATS_003.nii.gz", image[..., :3], affine)
    write_nifti(root / "labelsTr" / "BRATS_003.nii.gz", label, affine)
    (root / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"\x00resource fork")
    return label


def test_msd_task01_to_brats_layout(tmp_path, capsys):
    src, out = tmp_path / "Task01_BrainTumour", tmp_path / "brats_msd"
    label = _msd_tree(src)
    assert main(["-q", "import", "msd", "--src", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 1 volume(s)" in printed and "BRATS_002 (no labelsTr/BRATS_002.nii.gz)" in printed
    assert "BRATS_003 (image shape (10, 8, 6, 3), expected (H, W, D, 4))" in printed
    seg = np.asarray(nib.load(str(out / "BRATS_001" / "BRATS_001_seg.nii.gz")).dataobj)
    expected = np.select([label == 1, label == 2, label == 3], [2, 1, 4], 0)
    assert np.array_equal(seg, expected)
    (record,) = BraTS().find_records(out)
    values = [float(np.asarray(nib.load(p).dataobj).mean()) for p in record["image"]]
    assert values == [1.0, 2.0, 3.0, 4.0]  # flair, t1, t1ce, t2 from MSD channels 0-3
    assert main(["-q", "import", "msd", "--src", str(src), "--out", str(out)]) == 2  # never overwrites silently


def test_import_errors(tmp_path):
    with pytest.raises(SegvolError, match="no such folder"):
        api.import_data(fmt="msd", src=tmp_path / "missing", out=tmp_path / "o")
    with pytest.raises(SegvolError, match="no volume_V_slice_S.h5 files"):
        api.import_data(fmt="brats-h5", src=tmp_path, out=tmp_path / "o")
    with pytest.raises(SegvolError, match="unknown import format"):
        api.import_data(fmt="dicom", src=tmp_path, out=tmp_path / "o")
