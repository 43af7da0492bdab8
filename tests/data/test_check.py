"""segvol check-data: a corpus of broken datasets generated here, each found with the expected severity and code.

The corpus helpers (:func:`make_imagecas`, :data:`CORRUPTIONS`) are shared with ``tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segvol.data.check import check_dataset, check_records
from segvol.errors import SegvolError
from tests.conftest import write_nifti

AFFINE = np.array([[-0.8, 0, 0, 40.0], [0, -0.8, 0, 30.0], [0, 0, 1.5, -20.0], [0, 0, 0, 1]])
SHAPE = (20, 18, 12)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


def ct_case(seed: int, shape: tuple[int, ...] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A small CT in HU (air around a body) and a binary label with a box of foreground."""
    rng = np.random.default_rng(seed)
    image = np.full(shape, -1000, np.int16)
    image[3:-3, 3:-3, 2:-2] = rng.integers(-100, 400, size=(shape[0] - 6, shape[1] - 6, shape[2] - 4))
    label = np.zeros(shape, np.uint8)
    label[6:10, 6:10, 4:8] = 1
    return image, label


def make_imagecas(folder: Path, cases: int = 3) -> Path:
    """``cases`` good ImageCAS-layout cases (``N.img.nii.gz`` + ``N.label.nii.gz``) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, cases + 1):
        image, label = ct_case(i)
        write_nifti(folder / f"{i}.img.nii.gz", image, AFFINE)
        write_nifti(folder / f"{i}.label.nii.gz", label, AFFINE)
    return folder


def _replace(folder: Path, name: str, array: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    (folder / name).unlink(missing_ok=True)
    write_nifti(folder / name, array, affine)


def _truncate(folder: Path) -> None:
    path = folder / "1.img.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_big_endian(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Save ``array`` with a big-endian header and big-endian voxels."""
    img = nib.Nifti1Image(array, affine, header=nib.Nifti1Header(endianness=">"))
    img.set_data_dtype(array.dtype)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    loaded = nib.load(str(path))
    assert loaded.header.endianness == ">" and loaded.get_data_dtype().kind == array.dtype.kind
    return path


def _big_endian(folder: Path) -> None:
    write_big_endian(folder / "1.img.nii.gz", ct_case(1)[0], AFFINE)


def _spacing_outlier(folder: Path) -> None:
    far = AFFINE.copy()
    far[:3, :3] *= 4
    image, label = ct_case(1)
    _replace(folder, "1.img.nii.gz", image, far)
    _replace(folder, "1.label.nii.gz", label, far)


def _shifted_label(folder: Path) -> None:
    moved = AFFINE.copy()
    moved[:3, 3] += 5.0
    _replace(folder, "1.label.nii.gz", ct_case(1)[1], moved)


def _nan(folder: Path) -> None:
    image = ct_case(1)[0].astype(np.float32)
    image[5, 5, 5] = np.nan
    image[6, 6, 6] = np.inf
    _replace(folder, "1.img.nii.gz", image)


def _fractional_label(folder: Path) -> None:
    label = ct_case(1)[1].astype(np.float32)
    label[6:8, 6:8, 4] = 0.5
    _replace(folder, "1.label.nii.gz", label)


# name -> (corrupt the first case, severity, code, text in the message)
CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str, str, str]] = {
    "truncated": (_truncate, "error", "truncated", "1.img.nii.gz"),
    "random bytes": (lambda f: (f / "1.img.nii.gz").write_bytes(os.urandom(3000)), "error", "unreadable",
                     "not a readable NIfTI"),
    "png renamed": (lambda f: (f / "1.img.nii.gz").write_bytes(PNG), "error", "unreadable", "not a readable NIfTI"),
    "2D": (lambda f: _replace(f, "1.img.nii.gz", ct_case(1)[0][:, :, 0]), "error", "dims", "2D data"),
    "5D": (lambda f: _replace(f, "1.img.nii.gz", np.zeros((*SHAPE, 2, 2), np.int16)), "error", "dims", "5D data"),
    "4D image": (lambda f: _replace(f, "1.img.nii.gz", np.zeros((*SHAPE, 3), np.int16)), "error", "dims",
                 "where a 3D volume is expected"),
    "4D label": (lambda f: _replace(f, "1.label.nii.gz", np.zeros((*SHAPE, 2), np.uint8)), "error", "dims",
                 "where a 3D label map is expected"),
    "label shape": (lambda f: _replace(f, "1.label.nii.gz", np.zeros((20, 18, 11), np.uint8)), "error", "grid",
                    "label grid differs"),
    "label shifted": (_shifted_label, "error", "grid", "affine differs"),
    "NaN": (_nan, "error", "nan", "2 NaN/Inf voxel(s)"),
    "label values": (lambda f: _replace(f, "1.label.nii.gz", ct_case(1)[1] * 255), "error", "label_values",
                     "label value(s) [255]"),
    "fractional label": (_fractional_label, "error", "label_nonint", "non-integer label value"),
    "float label": (lambda f: _replace(f, "1.label.nii.gz", ct_case(1)[1].astype(np.float32)), "warning",
                    "label_float", "float labels"),
    "empty label": (lambda f: _replace(f, "1.label.nii.gz", np.zeros(SHAPE, np.uint8)), "warning", "label_empty",
                    "empty label"),
    "no air": (lambda f: _replace(f, "1.img.nii.gz", ct_case(1)[0] + 1100), "warning", "ct_no_air", "no air"),
    "out of HU range": (lambda f: _replace(f, "1.img.nii.gz", ct_case(1)[0] * 8), "warning", "ct_range",
                        "plausible HU range"),
    "duplicate": (lambda f: (f / "2.img.nii.gz").write_bytes((f / "1.img.nii.gz").read_bytes()), "warning",
                  "duplicate", "same image content as case 1"),
    "spacing outlier": (_spacing_outlier, "warning", "spacing_outlier", "far from the dataset's median"),
}


def test_good_dataset_passes(tmp_path):
    report = check_dataset("imagecas", make_imagecas(tmp_path / "ds"))
    assert not report.all_problems(), report.all_problems()
    assert [c.shape for c in report.cases] == [list(SHAPE)] * 3
    assert report.cases[0].label_values == [0.0, 1.0] and report.cases[0].intensity[0] == -1000
    assert report.stats["spacing"]["median"] == [0.8, 0.8, 1.5]


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_is_found(tmp_path, name):
    corrupt, severity, code, text = CORRUPTIONS[name]
    folder = make_imagecas(tmp_path / "ds")
    corrupt(folder)
    report = check_dataset("imagecas", folder)
    found = [p for p in report.all_problems() if p.code == code]
    assert found, f"{name}: expected {code}, got {report.all_problems()}"
    assert found[0].severity == severity and text in f"{found[0].file}: {found[0].message}"
    assert found[0].hint
    assert bool(report.errors) == (severity == "error")
    others = [p for p in report.all_problems() if p.code != code]
    assert not [p for p in others if p.severity == "error"], others


@pytest.mark.parametrize("name", ["truncated", "random bytes", "2D", "5D", "4D image", "label shape",
                                  "label shifted", "png renamed"])
def test_headers_only_finds_what_breaks_training(tmp_path, name):
    corrupt, _, code, _ = CORRUPTIONS[name]
    folder = make_imagecas(tmp_path / "ds")
    corrupt(folder)
    report = check_dataset("imagecas", folder, headers_only=True)
    assert [p.code for p in report.errors] == [code]
    assert report.cases[0].intensity is None  # no voxel data was read


def test_big_endian_and_every_orientation_pass(tmp_path):
    folder = make_imagecas(tmp_path / "ds")
    _big_endian(folder)
    assert not check_dataset("imagecas", folder).all_problems()
    records = []
    for k, (perm, signs) in enumerate(_orientations()):
        affine = np.eye(4)
        affine[:3, :3] = np.eye(3)[list(perm)] * np.asarray(signs) * 0.9
        image, label = ct_case(k)
        img = write_nifti(tmp_path / f"{k}.img.nii.gz", image, affine)
        lab = write_nifti(tmp_path / f"{k}.label.nii.gz", label, affine)
        records.append({"id": str(k), "image": str(img), "label": str(lab)})
    report = check_records(records, dataset="imagecas", channels=1)
    assert len(report.cases) == 48 and not report.all_problems()


def _orientations() -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    import itertools

    return [(p, s) for p in itertools.permutations(range(3)) for s in itertools.product((1, -1), repeat=3)]


def test_missing_files_and_empty_folders_are_one_line_errors(tmp_path):
    with pytest.raises(SegvolError, match="nowhere: no such folder"):
        check_dataset("imagecas", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegvolError, match="empty: is empty"):
        check_dataset("imagecas", tmp_path / "empty")
    folder = make_imagecas(tmp_path / "ds")
    (folder / "2.label.nii.gz").unlink()
    with pytest.raises(SegvolError, match="2.img.nii.gz: no matching label file"):
        check_dataset("imagecas", folder)
    with pytest.raises(SegvolError, match="has no cases"):
        check_records([], dataset="imagecas", root=tmp_path)
    report = check_records([{"id": "x", "image": str(tmp_path / "gone.nii.gz"), "label": None}], dataset="imagecas")
    assert [(p.code, p.message) for p in report.errors] == [("missing", "no such file")]


def make_brats(folder: Path, cases: int = 3, names: tuple[str, ...] = ("flair", "t1", "t1ce", "t2"),
               labels: tuple[int, ...] = (1, 2, 4), sep: str = "_") -> Path:
    """Tiny skull-stripped four-sequence cases in the BraTS layout."""
    for i in range(cases):
        case = folder / f"BraTS20_Training_{i:03d}"
        case.mkdir(parents=True)
        rng = np.random.default_rng(i)
        brain = np.zeros((16, 16, 10), np.float32)
        brain[3:13, 3:13, 2:8] = rng.uniform(50, 900, size=(10, 10, 6))
        for name in names:
            write_nifti(case / f"{case.name}{sep}{name}.nii.gz", brain * (1 + names.index(name)), np.eye(4))
        seg = np.zeros((16, 16, 10), np.uint8)
        for k, value in enumerate(labels):
            seg[5 + k, 5:9, 3:6] = value
        write_nifti(case / f"{case.name}{sep}seg.nii.gz", seg, np.eye(4))
    return folder


def test_brats_sequences_grids_and_label_tables(tmp_path):
    folder = make_brats(tmp_path / "b")
    report = check_dataset("brats", folder)
    assert not report.all_problems() and report.cases[0].channels == 4
    assert report.cases[0].label_values == [0.0, 1.0, 2.0, 4.0]
    case = folder / "BraTS20_Training_001"
    write_nifti(case / f"{case.name}_t2.nii.gz", np.ones((16, 16, 9), np.float32), np.eye(4))
    write_nifti(case / f"{case.name}_seg.nii.gz", np.full((16, 16, 10), 3, np.uint8), np.eye(4))
    codes = {(p.case, p.code) for p in check_dataset("brats", folder).errors}
    assert codes == {(case.name, "grid"), (case.name, "label_values")}
    (case / f"{case.name}_t1ce.nii.gz").unlink()
    with pytest.raises(SegvolError, match="has no t1ce file"):
        check_dataset("brats", folder)
    new = make_brats(tmp_path / "b23", names=("t2f", "t1n", "t1c", "t2w"), labels=(1, 2, 3), sep="-")
    assert not check_dataset("brats", new).errors  # 2023 releases label enhancing tumour 3


def test_mri_intensity_warnings(tmp_path):
    folder = make_brats(tmp_path / "b")
    case = folder / "BraTS20_Training_000"
    write_nifti(case / f"{case.name}_flair.nii.gz", np.random.default_rng(0).normal(size=(16, 16, 10)), np.eye(4))
    codes = {p.code for p in check_dataset("brats", folder).warnings}
    assert codes == {"mri_negative", "mri_background"}


def test_msd_channels_and_the_reverse(tmp_path):
    root = tmp_path / "Task01"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(json.dumps({
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}}))
    for i in range(3):
        image = np.zeros((16, 16, 10, 4), np.float32)
        image[3:13, 3:13, 2:8] = np.random.default_rng(i).uniform(10, 500, size=(10, 10, 6, 4))
        write_nifti(root / "imagesTr" / f"BRATS_{i:03d}.nii.gz", image, np.eye(4))
        seg = np.zeros((16, 16, 10), np.uint8)
        seg[5:8, 5:8, 3:6] = 3
        write_nifti(root / "labelsTr" / f"BRATS_{i:03d}.nii.gz", seg, np.eye(4))
    report = check_dataset("msd", root)
    assert not report.all_problems() and report.cases[0].channels == 4
    write_nifti(root / "imagesTr" / "BRATS_001.nii.gz", np.ones((16, 16, 10), np.float32), np.eye(4))
    write_nifti(root / "imagesTr" / "BRATS_002.nii.gz", np.ones((16, 16, 10, 2), np.float32), np.eye(4))
    errors = check_dataset("msd", root, headers_only=True).errors
    assert [(p.case, p.code) for p in errors] == [("BRATS_001", "dims"), ("BRATS_002", "channels")]
    assert "3D volume of shape (16, 16, 10) where 4 channels (4D) are expected" in errors[0].message


def test_full_mode_runs_the_training_preprocessing(tmp_path):
    report = check_dataset("imagecas", make_imagecas(tmp_path / "ds"), full=True)
    assert not report.all_problems()
    assert report.cases[0].preprocessed_shape[0] == 1 and min(report.cases[0].preprocessed_shape[1:]) >= 32


def test_report_json_is_complete(tmp_path):
    folder = make_imagecas(tmp_path / "ds")
    _nan(folder)
    data = json.loads(check_dataset("imagecas", folder).to_json())
    assert data["summary"] == {"cases": 3, "ok": 2, "errors": 1, "warnings": 0, "trainable": False}
    case = data["cases"][0]
    assert case["status"] == "error" and case["problems"][0]["code"] == "nan"
    assert case["problems"][0]["hint"].startswith("replace NaN")


def test_require_trainable_passes_good_brats_and_names_the_first_problem(tmp_path):
    from segvol.data.check import require_trainable
    from segvol.data.registry import get_adapter

    folder = make_brats(tmp_path / "b")
    records = get_adapter("brats").find_records(folder)
    assert len(require_trainable(records, dataset="brats", root=folder, channels=4).cases) == 3
    case = folder / "BraTS20_Training_002"
    write_nifti(case / f"{case.name}_seg.nii.gz", np.zeros((16, 16, 10, 2), np.uint8), np.eye(4))
    with pytest.raises(SegvolError, match=r"BraTS20_Training_002_seg.nii.gz: 4D data .* \(1 problem\(s\) in 1 "
                                          r"case\(s\); 'segvol check-data --dataset brats"):
        require_trainable(records, dataset="brats", root=folder, channels=4)
