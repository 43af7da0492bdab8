"""The MSD / nnU-Net adapter: both layouts, dataset.json's labels and channels, CT vs MR, clear errors; the MSD
phantom trains, infers and evaluates with per-class Dice."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from segvol import api
from segvol.config import load_config
from segvol.data.check import check_dataset
from segvol.data.msd import CT_PREPROCESS
from segvol.data.registry import get_adapter
from segvol.errors import SegvolError
from tests.conftest import REPO, write_nifti


@pytest.fixture(scope="module")
def msd_phantoms(tmp_path_factory):
    out = tmp_path_factory.mktemp("msd")
    api.synth(dataset="msd", out=out, cases=6, size="small", seed=3, progress=False)
    return out


def _v2_folder(root, channels=("CT", "CT"), labels=None, cases=3):
    """A tiny nnU-Net v2 raw folder: X_0000/X_0001 channel files, v2 labels."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    labels = labels or {"background": 0, "liver": 1, "tumour": 2}
    (root / "dataset.json").write_text(json.dumps({"channel_names": {str(i): c for i, c in enumerate(channels)},
                                                   "labels": labels, "numTraining": cases,
                                                   "file_ending": ".nii.gz"}))
    rng = np.random.default_rng(0)
    for i in range(cases):
        for c in range(len(channels)):
            write_nifti(root / "imagesTr" / f"liver_{i:03d}_{c:04d}.nii.gz",
                        rng.uniform(-1000, 400, (12, 12, 8)).astype(np.int16), np.eye(4))
        seg = np.zeros((12, 12, 8), np.uint8)
        seg[3:8, 3:8, 2:6], seg[4:6, 4:6, 3:5] = 1, 2
        write_nifti(root / "labelsTr" / f"liver_{i:03d}.nii.gz", seg, np.eye(4))
    return root


def test_msd_phantom_layout_task_and_check_data(msd_phantoms):
    adapter = get_adapter("nnunet")  # the alias
    assert adapter.name == "msd"
    records = adapter.find_records(msd_phantoms)
    assert [r["id"] for r in records] == [f"brain_{i:03d}" for i in range(1, 7)]
    img = nib.load(records[0]["image"])
    assert img.ndim == 4 and img.shape[3] == 2  # channels last, as MSD ships them
    assert set(np.unique(np.asanyarray(nib.load(records[0]["label"]).dataobj))) == {0, 1, 2}
    cfg = load_config("tiny-msd", data={"root": str(msd_phantoms)})
    spec = adapter.task_spec(cfg)
    assert (spec.in_channels, spec.out_channels, spec.activation) == (2, 3, "softmax")
    assert spec.class_names == ("edema", "tumour_core") and spec.modalities == ("flair", "t1gd")
    assert adapter.configure(cfg).preprocess.intensity_window is None  # MR: nonzero, channel-wise z-score
    report = check_dataset("msd", msd_phantoms)
    assert not report.all_problems() and {c.channels for c in report.cases} == {2}
    binary = adapter.task_spec(cfg.replace(data={"labels": "binary"}))
    assert binary.out_channels == 2 and binary.class_names == ("foreground",)


def test_nnunet_v2_layout_channel_files_labels_and_ct(tmp_path):
    root = _v2_folder(tmp_path / "Dataset001_Liver")
    adapter = get_adapter("msd")
    records = adapter.find_records(root)
    assert records[0]["image"] == [str(root / "imagesTr" / f"liver_000_{c:04d}.nii.gz") for c in range(2)]
    cfg = load_config("msd", data={"root": str(root)})
    spec = adapter.task_spec(cfg)
    assert spec.in_channels == 2 and spec.class_names == ("liver", "tumour") and spec.out_channels == 3
    configured = adapter.configure(cfg)
    assert configured.preprocess.intensity_window == tuple(CT_PREPROCESS["intensity_window"])
    report = check_dataset("nnunet", root)
    assert report.cases[0].channels == 2 and not report.errors
    assert {p.code for p in report.warnings} <= {"ct_range", "duplicate"}
    (root / "imagesTr" / "liver_001_0001.nii.gz").unlink()
    with pytest.raises(SegvolError, match="case liver_001 has no liver_001_0001 file"):
        adapter.find_records(root)


@pytest.mark.parametrize("meta, message", [
    (None, "no dataset.json"),
    ({"channel_names": {"0": "CT"}, "labels": {"background": 0, "whole": [1, 2]}}, "region-based labels"),
    ({"modality": {"0": "MRI"}, "labels": {"0": "background", "2": "tumour"}}, "not consecutive from 0"),
    ({"labels": {"0": "background", "1": "x"}}, "no \"channel_names\""),
])
def test_bad_dataset_json_is_one_clear_error(tmp_path, meta, message):
    (tmp_path / "imagesTr").mkdir()
    if meta is not None:
        (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(SegvolError, match=message):
        get_adapter("msd").find_records(tmp_path)


def test_label_values_outside_dataset_json_are_check_errors(tmp_path):
    root = _v2_folder(tmp_path / "d", channels=("T2",), labels={"background": 0, "lesion": 1})
    errors = check_dataset("msd", root).errors
    assert {p.code for p in errors} == {"label_values"} and "[2]" in errors[0].message


def test_msd_model_infers_a_4d_scan_onto_its_grid(tmp_path, msd_phantoms):
    """Two training steps, then a 4D multi-channel scan in, a 3D label map on the scan's grid out."""
    cfg = load_config(str(REPO / "configs" / "tiny-msd.yaml"),
                      ["train.epochs=1", "train.steps_per_epoch=2", "train.max_val_cases=1"],
                      data={"root": str(msd_phantoms)})
    result = api.train(cfg=cfg, models_dir=tmp_path / "models", name="m", device="cpu", progress=False)
    assert {"dice_edema", "dice_tumour_core"} <= set(result.history[-1])
    scan = msd_phantoms / "imagesTr" / "brain_001.nii.gz"
    api.infer(inputs=[scan], model=tmp_path / "models" / "m" / "best.pt", out=tmp_path / "seg.nii.gz", device="cpu")
    seg, image = nib.load(str(tmp_path / "seg.nii.gz")), nib.load(str(scan))
    assert seg.shape == image.shape[:3] and np.allclose(seg.affine, image.affine, atol=1e-4)
    assert set(np.unique(np.asanyarray(seg.dataobj))) <= {0, 1, 2}


@pytest.mark.slow
def test_msd_phantom_learns_and_evaluates_per_class(tmp_path, msd_phantoms):
    """Three epochs of 20 tiny steps: the validation Dice of both classes must beat the untrained network's.

    Measured (2 shared CPU cores): edema 0.031 -> 0.737, tumour core 0.015 -> 0.738.
    """
    from segvol.evaluation.run import evaluate_run
    from segvol.networks import build_network, network_args
    from segvol.training.data import cached_volumes
    from segvol.training.trainer import validate

    cfg = load_config(str(REPO / "configs" / "tiny-msd.yaml"), ["train.epochs=3", "train.val_every=3"],
                      data={"root": str(msd_phantoms)})
    _, spec, groups, _ = api.resolve_records(cfg)
    torch.manual_seed(cfg.train.seed)
    untrained = build_network(network_args(cfg, spec.in_channels, spec.out_channels))
    before = validate(untrained, cached_volumes(groups["val"], cfg, spec), cfg, spec, torch.device("cpu"))

    result = api.train(cfg=cfg, models_dir=tmp_path / "models", name="msd", device="cpu", progress=False)

    after = result.history[-1]
    print(f"untrained {before} -> trained {after}")
    for name in ("edema", "tumour_core"):
        assert after[f"dice_{name}"] > before[f"dice_{name}"] + 0.2, name
    assert result.best_metric > 0.4
    run = tmp_path / "models" / "msd"
    evaluated = evaluate_run(run, split="val", device="cpu", gif=False, worst=1, progress=False)
    with open(evaluated.out_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["class"] for r in rows} == {"edema", "tumour_core"}
    pred = nib.load(str(evaluated.out_dir / "predictions" / f"{rows[0]['case']}_seg.nii.gz"))
    image = nib.load(str(msd_phantoms / "imagesTr" / f"{rows[0]['case']}.nii.gz"))
    assert pred.shape == image.shape[:3] and np.allclose(pred.affine, image.affine, atol=1e-4)
    assert set(np.unique(np.asanyarray(pred.dataobj))) == {0, 1, 2}
    assert all(float(r["dice"]) > 0.3 for r in rows)


def test_nnunet_case_folder_is_one_multichannel_scan(tmp_path):
    """The adapter, not BraTS naming, says what a case folder is: one case's X_0000/X_0001 files, in channel order."""
    root = _v2_folder(tmp_path / "raw")
    case = tmp_path / "case"
    case.mkdir()
    for c in (1, 0):  # written out of order on purpose
        (case / f"liver_001_{c:04d}.nii.gz").write_bytes((root / "imagesTr" / f"liver_001_{c:04d}.nii.gz").read_bytes())
    adapter, mods = get_adapter("nnunet"), ("CT", "CT")
    assert adapter.is_case_folder(case, mods)
    assert not adapter.is_case_folder(case, ("CT",))  # a one-channel model reads each file as a scan
    assert not adapter.is_case_folder(root / "imagesTr", mods)  # three cases: a folder of scans
    files = adapter.case_input(case, mods)
    assert [f.rsplit("_", 1)[-1] for f in files] == ["0000.nii.gz", "0001.nii.gz"]
    assert adapter.case_input([files[1], files[0]], mods) == files  # named channel files go in channel order
    (case / "liver_001_0001.nii.gz").unlink()
    with pytest.raises(SegvolError, match="no liver_001_0001 file"):
        adapter.case_input(case, mods)


def test_nnunet_model_segments_a_case_folder(tmp_path):
    """A 2-channel nnU-Net model: a case folder and its two files in any order give one mask on the scan's grid."""
    root = _v2_folder(tmp_path / "raw")
    cfg = load_config(str(REPO / "configs" / "tiny-msd.yaml"),
                      ["train.epochs=1", "train.steps_per_epoch=2", "train.max_val_cases=1"],
                      data={"root": str(root)})
    api.train(cfg=cfg, models_dir=tmp_path / "models", name="m", device="cpu", progress=False)
    model = tmp_path / "models" / "m" / "best.pt"
    case = tmp_path / "case"
    case.mkdir()
    for c in (0, 1):
        (case / f"liver_002_{c:04d}.nii.gz").write_bytes((root / "imagesTr" / f"liver_002_{c:04d}.nii.gz").read_bytes())
    [folder_pred] = api.infer(inputs=[case], model=model, out_dir=tmp_path / "out", device="cpu")
    assert folder_pred.output == tmp_path / "out" / "case_seg.nii.gz"
    files = sorted(case.iterdir(), reverse=True)  # 0001 first: put back in channel order by the adapter
    [files_pred] = api.infer(inputs=[files], model=model, out=tmp_path / "files_seg.nii.gz", device="cpu")
    image = nib.load(str(files[0]))
    seg = nib.load(str(folder_pred.output))
    assert seg.shape == image.shape and np.allclose(seg.affine, image.affine, atol=1e-4)
    assert np.array_equal(folder_pred.labels, files_pred.labels)
