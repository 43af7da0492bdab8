"""The BraTS adapter on every release layout, label conversions, phantoms, real headers, and case-folder inference."""

from __future__ import annotations

import logging
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from segvol import api
from segvol.config import config_to_dict, load_config
from segvol.data.brats import (LGG, MODALITIES, BraTS, binary_label_transforms, region_label_transforms,
                               region_paint, resolve_input)
from segvol.data.synth import write_phantoms
from segvol.data.phantoms.brats import brats_affine, make_brats_phantom, sample_shape
from segvol.errors import SegvolError
from segvol.inference.predictor import regions_to_labels
from segvol.networks import build_network, network_args
from segvol.checkpoint import save_checkpoint
from tests.conftest import REPO

LAYOUTS = {  # release -> (case name, separator, {canonical: file token})
    "2020": ("BraTS20_Training_001", "_", {"flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2"}),
    "2021": ("BraTS2021_00000", "_", {"flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2"}),
    "2023": ("BraTS-GLI-00000-000", "-", {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}),
}


def _case(root, case, sep, tokens, seg=True, suffix=".nii.gz"):
    folder = root / case
    folder.mkdir(parents=True)
    for token in list(tokens) + (["seg"] if seg else []):
        (folder / f"{case}{sep}{token}{suffix}").write_bytes(b"")
    return folder


@pytest.mark.parametrize("release", sorted(LAYOUTS))
def test_every_release_layout(tmp_path, release):
    case, sep, tokens = LAYOUTS[release]
    _case(tmp_path, case, sep, reversed(list(tokens.values())))
    (records,) = BraTS().find_records(tmp_path)
    assert records["id"] == case and records["label"].endswith(f"{case}{sep}seg.nii.gz")
    assert [p.rsplit(sep, 1)[1] for p in records["image"]] == [f"{tokens[m]}.nii.gz" for m in MODALITIES]
    spec = BraTS().task_spec(load_config("brats", data={"root": str(tmp_path)}))
    assert spec.paint == ((1, 2), (0, 1), (2, 3 if release == "2023" else 4))
    assert spec.as_dict()["paint"][-1] == [2, 3 if release == "2023" else 4]


def test_irregular_names_nesting_and_unmatched_report(tmp_path, caplog):
    nested = tmp_path / "MICCAI_BraTS2020_TrainingData"
    folder = nested / "BraTS20_Training_355"
    folder.mkdir(parents=True)
    for name in ["BraTS20_Training_355_FLAIR.NII.GZ", "BraTS20_Training_355_t1.nii", "BraTS20_Training_355_T1ce.nii",
                 "BraTS20_Training_355_t2.nii.gz", "W39_1998.09.19_Segm.nii", "BraTS20_Training_355_t1_old.nii.gz",
                 "notes.txt", "._BraTS20_Training_355_t2.nii.gz"]:
        (folder / name).write_bytes(b"")
    _case(nested, "BraTS20_Training_001", "_", MODALITIES)
    _case(tmp_path / ".cache", "BraTS20_Training_999", "_", MODALITIES)  # the disk cache is not a case
    (nested / "name_mapping.csv").write_text("x\n")
    with caplog.at_level(logging.WARNING, logger="segvol"):
        records = BraTS().find_records(tmp_path)
    assert [r["id"] for r in records] == ["BraTS20_Training_001", "BraTS20_Training_355"]
    odd = records[1]
    assert [p.rsplit("/", 1)[1] for p in odd["image"]] == [
        "BraTS20_Training_355_FLAIR.NII.GZ", "BraTS20_Training_355_t1.nii", "BraTS20_Training_355_T1ce.nii",
        "BraTS20_Training_355_t2.nii.gz"]
    assert odd["label"].endswith("W39_1998.09.19_Segm.nii")
    assert "1 file(s) not matched" in caplog.text and "t1_old.nii.gz" in caplog.text


def test_missing_modality_is_one_clear_line(tmp_path):
    _case(tmp_path, "BraTS20_Training_001", "_", MODALITIES)
    _case(tmp_path, "BraTS20_Training_002", "_", ["flair", "t1", "t2"])
    with pytest.raises(SegvolError, match=r"BraTS20_Training_002 has no t1ce file \(found: flair, seg, t1, t2\)"):
        BraTS().find_records(tmp_path)
    records = BraTS().find_records(tmp_path, modalities=["t2", "FLAIR"])  # a subset, put in the fixed order
    assert [p.rsplit("_", 1)[1] for p in records[1]["image"]] == ["flair.nii.gz", "t2.nii.gz"]
    with pytest.raises(SegvolError, match="unknown sequence 'dwi'"):
        BraTS().find_records(tmp_path, modalities=["dwi"])


def test_validation_release_without_seg(tmp_path):
    _case(tmp_path, "BraTS20_Validation_001", "_", MODALITIES, seg=False)
    with pytest.raises(SegvolError, match="BraTS20_Validation_001 has no seg file; training"):
        BraTS().find_records(tmp_path)
    (record,) = BraTS().find_records(tmp_path, require_labels=False)
    assert record["label"] is None and len(record["image"]) == 4


def test_folder_errors_and_duplicates(tmp_path):
    with pytest.raises(SegvolError, match="no such folder.*segvol synth brats"):
        BraTS().find_records(tmp_path / "missing")
    with pytest.raises(SegvolError, match="holds no BraTS case folders"):
        BraTS().find_records(tmp_path)
    folder = _case(tmp_path, "BraTS20_Training_001", "_", MODALITIES)
    (folder / "BraTS20_Training_001_flair.nii").write_bytes(b"")
    with pytest.raises(SegvolError, match="a second flair file in BraTS20_Training_001"):
        BraTS().find_records(tmp_path)


def test_task_specs_and_lgg(tmp_path):
    cfg = load_config("brats", ["data.labels=binary", "data.modalities=[flair]"])
    spec = BraTS().task_spec(cfg)
    assert (spec.in_channels, spec.out_channels, spec.activation, spec.class_names) == (1, 2, "softmax", ("wt",))
    assert "paint" not in spec.as_dict()
    regions = BraTS().task_spec(load_config("brats", data={"root": str(tmp_path)}))
    assert (regions.in_channels, regions.out_channels, regions.activation) == (4, 3, "sigmoid")
    assert regions.class_names == ("tc", "wt", "et")
    with pytest.raises(SegvolError, match="binary or regions"):
        BraTS().task_spec(load_config("brats", ["data.labels=multiclass"]))
    with pytest.raises(SegvolError, match="lgg offers binary"):
        LGG().task_spec(load_config("brats", data={"dataset": "lgg"}))
    _case(tmp_path, "TCGA_CS_4941_19960909", "_", ["flair", "t1", "t1ce"])
    (record,) = LGG().find_records(tmp_path)
    assert len(record["image"]) == 3


def _labels_2020() -> np.ndarray:
    seg = np.zeros((12, 10, 8), np.uint8)
    seg[2:10, 2:8, 1:7] = 2
    seg[4:8, 3:7, 2:6] = 4
    seg[5:7, 4:6, 3:5] = 1
    seg[0, 0, 0] = 1  # an isolated core voxel outside the enhancing rim
    return seg


@pytest.mark.parametrize("et_label", [4, 3])
def test_label_round_trip(et_label):
    from monai.data import MetaTensor
    from monai.transforms import Compose

    seg = _labels_2020()
    seg[seg == 4] = et_label
    data = {"label": MetaTensor(torch.from_numpy(seg.astype(np.float32))[None], affine=torch.eye(4))}
    regions = Compose(list(region_label_transforms()))(dict(data))["label"]
    assert regions.shape == (3, *seg.shape) and isinstance(regions, MetaTensor)
    tc, wt, et = (regions[c].numpy() > 0 for c in range(3))
    assert np.array_equal(tc, np.isin(seg, [1, et_label])) and np.array_equal(wt, seg > 0)
    assert np.array_equal(et, seg == et_label)
    back = regions_to_labels(regions.to(torch.uint8), region_paint(et_label))
    assert np.array_equal(back[0].numpy(), seg)
    binary = Compose(list(binary_label_transforms()))(dict(data))["label"]
    assert np.array_equal(binary[0].numpy(), (seg > 0).astype(np.float32))


def test_float_seg_values_are_rounded():
    from monai.data import MetaTensor
    from monai.transforms import Compose

    seg = _labels_2020().astype(np.float32) * np.float32(0.99999)  # a float seg file with rounding noise
    regions = Compose(list(region_label_transforms()))({"label": MetaTensor(torch.from_numpy(seg)[None])})["label"]
    assert int(regions[2].sum()) == int((_labels_2020() == 4).sum()) > 0


@pytest.fixture(scope="module")
def phantom():
    return make_brats_phantom((80, 84, 56), seed=3)


def test_phantom_is_deterministic_and_typed(phantom):
    images, seg, affine = phantom
    again, seg2, _ = make_brats_phantom((80, 84, 56), seed=3)
    assert all(np.array_equal(images[m], again[m]) for m in MODALITIES) and np.array_equal(seg, seg2)
    assert not np.array_equal(seg, make_brats_phantom((80, 84, 56), seed=4)[1])
    assert set(np.unique(seg)) == {0, 1, 2, 4} and seg.dtype == np.uint8
    assert all(images[m].dtype == np.int16 and images[m].shape == seg.shape for m in MODALITIES)
    brain = images["t1"] > 0
    assert 0.05 < brain.mean() < 0.5 and not brain[0].any() and not brain[:, :, -1].any()  # zero background
    assert all(np.array_equal(images[m] > 0, brain) for m in MODALITIES)  # skull-stripped: one brain mask
    assert not (seg[~brain]).any()
    assert nib.aff2axcodes(affine) == ("L", "P", "S") and np.allclose(affine[:3, 3], [0, 83, 0])


def test_phantom_contrast_differs_per_sequence(phantom):
    images, seg, _ = phantom
    healthy = (images["t1"] > 0) & (seg == 0)
    med = {m: {k: np.median(images[m][sel]) for k, sel in
               {"brain": healthy, "core": seg == 1, "edema": seg == 2, "rim": seg == 4}.items()} for m in MODALITIES}
    assert med["flair"]["edema"] > 1.3 * med["flair"]["brain"]  # edema bright on FLAIR and T2
    assert med["t2"]["edema"] > 1.3 * med["t2"]["brain"]
    assert med["t1ce"]["rim"] > 1.5 * med["t1ce"]["brain"]  # enhancing rim bright on T1ce
    assert med["t1ce"]["core"] < 0.85 * med["t1ce"]["brain"]  # necrotic core dark on T1ce (blurred by the rim)
    assert med["t1ce"]["core"] < 0.5 * med["t1ce"]["rim"]
    assert med["t1"]["rim"] < 1.1 * med["t1"]["brain"]  # no enhancement without contrast
    # not a one-channel threshold: healthy voxels as bright as the rim exist on T1ce (vessels, plexus)
    assert (images["t1ce"][healthy] > np.percentile(images["t1ce"][seg == 4], 25)).sum() > 20


def test_full_size_grid_matches_the_real_data(real_dir):
    rng = np.random.default_rng(0)
    assert sample_shape("full", rng) == (240, 240, 155)
    real = nib.load(str(real_dir / "BraTS2021_00006" / "BraTS2021_00006_t1.nii.gz"))
    assert real.shape == (240, 240, 155)
    assert np.allclose(brats_affine((240, 240, 155)), real.affine)


def test_real_case_loads_through_the_pipeline(real_dir):
    from monai.transforms import Compose

    from segvol.transforms import deterministic_prefix

    (record,) = BraTS().find_records(real_dir)
    assert record["id"] == "BraTS2021_00006"
    cfg = load_config("brats")
    spec = BraTS().task_spec(cfg)
    data = Compose(deterministic_prefix(cfg, label_transforms=spec.label_transforms))(record)
    assert data["image"].shape == (4, 240, 240, 155) and data["label"].shape == (3, 240, 240, 155)
    seg = np.asanyarray(nib.load(record["label"]).dataobj)
    assert int(data["label"][2].sum()) == int((seg == 4).sum()) > 0  # RAS reorientation keeps every voxel
    assert int(data["label"][1].sum()) == int((seg > 0).sum())
    brain = data["image"][0] != 0
    assert abs(float(data["image"][0][brain].mean())) < 1e-3  # nonzero, channel-wise normalisation


def test_pos_neg_crops_find_a_three_channel_label(tmp_path):
    write_phantoms("brats", tmp_path, cases=1, size="small", seed=0, progress=False)
    cfg = load_config("tiny-brats", data={"root": str(tmp_path)})
    spec = BraTS().task_spec(cfg)
    from segvol.transforms import build_transforms

    chain = build_transforms(cfg, train=True, label_transforms=spec.label_transforms)
    chain.set_random_state(0)
    (record,) = BraTS().find_records(tmp_path)
    patches = [p for _ in range(4) for p in chain(record)]
    with_tumour = sum(int(p["label"][1].sum() > 0) for p in patches)
    assert patches[0]["label"].shape == (3, 32, 32, 32) and patches[0]["image"].shape == (4, 32, 32, 32)
    assert with_tumour >= len(patches) // 2  # pos=1, neg=1: at least the positive half holds tumour


@pytest.fixture(scope="module")
def brats_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("brats")
    write_phantoms("brats", root, cases=1, size="small", seed=5, progress=False)
    return root / "BraTS20_Training_001"


def _checkpoint(path, cfg, labels):
    spec = BraTS().task_spec(cfg.replace(data={"labels": labels}))
    args = network_args(cfg, spec.in_channels, spec.out_channels)
    torch.manual_seed(0)
    save_checkpoint(path, {"config": config_to_dict(cfg), "network": args, "task": spec.as_dict(),
                           "state_dict": build_network(args).state_dict()})
    return path


@pytest.mark.parametrize("logits, painted", [((-5, 5, -5), 2), ((5, 5, -5), 1), ((5, 5, 5), 4)])
def test_infer_case_folder_paints_regions_on_the_case_grid(tmp_path, brats_case, monkeypatch, logits, painted):
    from segvol.inference import backends

    ckpt = _checkpoint(tmp_path / "model.pt", load_config("tiny-brats"), "regions")
    real_load = backends.load_model

    def constant_model(path, device):
        loaded = real_load(path, device)
        loaded.predict = lambda x: torch.tensor(logits, dtype=x.dtype).view(1, 3, 1, 1, 1).expand(
            x.shape[0], 3, *x.shape[2:]).clone()
        return loaded

    monkeypatch.setattr(backends, "load_model", constant_model)
    case = shutil.copytree(brats_case, tmp_path / brats_case.name)
    (pred,) = api.infer(inputs=[case], model=ckpt, device="cpu")
    assert pred.output == tmp_path / f"{case.name}_seg.nii.gz"
    reference = nib.load(str(case / f"{case.name}_flair.nii.gz"))
    out = nib.load(str(pred.output))
    assert out.shape == reference.shape and np.allclose(out.affine, reference.affine)
    assert set(np.unique(np.asarray(out.dataobj))) == {painted}


def test_infer_case_folder_and_named_files_agree(tmp_path, brats_case):
    from segvol.cli import main

    ckpt = _checkpoint(tmp_path / "model.pt", load_config("tiny-brats"), "binary")
    (pred,) = api.infer(inputs=[brats_case], model=ckpt, device="cpu", out_dir=tmp_path)
    files = [str(brats_case / f"{brats_case.name}_{m}.nii.gz") for m in ("t2", "t1ce", "flair", "t1")]
    assert resolve_input(files, MODALITIES) == sorted(files, key=lambda f: MODALITIES.index(f.rsplit("_", 1)[1][:-7]))
    out = tmp_path / "seg.nii.gz"
    assert main(["-q", "infer", "--image", *files, "--model", str(ckpt), "-o", str(out), "--device", "cpu"]) == 0
    written = np.asarray(nib.load(str(out)).dataobj)
    assert written.shape == nib.load(files[0]).shape and set(np.unique(written)) <= {0, 1}
    assert np.array_equal(written, pred.labels)
    (brats_case.parent / "empty").mkdir()
    with pytest.raises(SegvolError, match="case empty has no flair or t1 or t1ce or t2 file"):
        api.infer(inputs=[brats_case.parent / "empty"], model=ckpt, device="cpu")


def test_config_presets():
    cfg = load_config(str(REPO / "configs" / "tiny-brats.yaml"))
    assert cfg.data.dataset == "brats" and cfg.preprocess.intensity_window is None
    assert cfg.preprocess.roi_size == (32, 32, 32) and cfg.data.labels == "regions"
