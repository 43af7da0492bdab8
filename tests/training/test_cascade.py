"""The cascade (docs/cascade.md): one ``segvol train`` trains the coarse and the fine stage, one checkpoint carries
both, and inference locates, crops, segments and pastes back onto the scan's grid without losing artery."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest

from segvol import api
from segvol.checkpoint import load_checkpoint
from segvol.config import load_config
from tests.conftest import REPO

OVERRIDES = ["preprocess.spacing=[0.8,0.8,0.8]", "preprocess.roi_size=[32,32,32]", "locate.roi_size=[32,32,32]",
             "locate.epochs=4", "locate.steps_per_epoch=8", "locate.margin_mm=8.0", "train.epochs=6",
             "train.steps_per_epoch=10", "train.val_every=3", "train.max_val_cases=1"]


@pytest.fixture(scope="module")
def cascade_run(imagecas_small, tmp_path_factory):
    """tiny-fine, shortened, on the small phantoms (the stages' grids scaled to the phantoms' 0.8 mm)."""
    cfg = load_config(str(REPO / "configs" / "tiny-fine.yaml"), OVERRIDES, data={"root": str(imagecas_small)})
    models = tmp_path_factory.mktemp("cascade")
    api.train(cfg=cfg, models_dir=models, name="c", device="cpu", progress=False)
    return models / "c"


def test_one_run_trains_both_stages_into_one_checkpoint(cascade_run):
    assert (cascade_run / "locate" / "best.pt").is_file() and (cascade_run / "locate" / "metrics.csv").is_file()
    ckpt = load_checkpoint(cascade_run / "best.pt")
    coarse = ckpt["locator"]
    assert coarse["config"]["preprocess"]["spacing"] == [3.0, 3.0, 3.0] and coarse["task"]["out_channels"] == 2
    assert ckpt["config"]["preprocess"]["spacing"] == [0.8, 0.8, 0.8] and ckpt["config"]["locate"]["enabled"]
    for stage in (ckpt["config"], coarse["config"]):  # both stages normalise by the training scans' constants
        (channel,) = stage["preprocess"]["channels"]
        assert stage["preprocess"]["intensity_norm"] == "channels" and channel["scheme"] == "ct"
        assert channel["clip"] == [-200.0, 800.0] and channel["std"] > 1.0


def test_a_crop_is_normalised_as_it_is_inside_its_scan(tmp_path):
    """The presets' CT normalisation takes a z-score over the voxels it is given, so a crop would shift; the
    cascade's constants (the whole clipped training scans' mean and std) make the crop's values the scan's."""
    import torch

    from segvol.training.cascade import STATS_STRIDE, crop_invariant
    from segvol.transforms import intensity_steps

    rng = np.random.default_rng(0)
    hu = rng.normal(0.0, 300.0, (40, 36, 30)).astype(np.float32)
    hu[10:30, 10:26, 8:22] += 400.0  # a bright heart in the middle: its crop is brighter than the scan
    path = tmp_path / "1.img.nii.gz"
    nib.save(nib.Nifti1Image(hu, np.diag([0.5, 0.5, 0.6, 1.0])), str(path))
    cfg = load_config(str(REPO / "configs" / "tiny-fine.yaml"))
    fixed = crop_invariant(cfg, [{"id": "1", "image": str(path), "label": str(path)}])
    (channel,) = fixed.preprocess.channels
    clipped = np.clip(hu[::STATS_STRIDE, ::STATS_STRIDE, ::STATS_STRIDE].astype(np.float64), -200.0, 800.0)
    assert channel["mean"] == pytest.approx(clipped.mean(), abs=1e-3)
    assert channel["std"] == pytest.approx(clipped.std(), abs=1e-3)

    def normalised(config, array):
        data = {"image": torch.as_tensor(array[None])}
        for step in intensity_steps(config):
            data = step(data)
        return np.asarray(data["image"][0])

    box = (slice(8, 32), slice(8, 28), slice(6, 24))
    assert np.allclose(normalised(fixed, hu[box]), normalised(fixed, hu)[box], atol=1e-5)
    assert not np.allclose(normalised(cfg, hu[box]), normalised(cfg, hu)[box], atol=1e-2)  # the preset's would shift
    mri = load_config(str(REPO / "configs" / "tiny-brats.yaml"))
    assert crop_invariant(mri, [{"id": "1", "image": str(path), "label": str(path)}]) is mri  # only the CT window


def test_cascade_locates_then_segments_onto_the_input_grid(cascade_run, tmp_path, caplog):
    api.synth(dataset="imagecas", out=tmp_path / "unseen", cases=1, size="small", seed=7, progress=False)
    scan, label_file = tmp_path / "unseen" / "1.img.nii.gz", tmp_path / "unseen" / "1.label.nii.gz"
    label = np.asanyarray(nib.load(str(label_file)).dataobj) > 0
    model = cascade_run / "best.pt"
    with caplog.at_level(logging.INFO, logger="segvol"):
        (located,) = api.infer(inputs=[scan], model=model, out=tmp_path / "cascade_seg.nii.gz", device="cpu")
    assert "locate: x " in caplog.text and located.located is not None  # both stages ran; the crop is logged
    box = located.located
    assert np.prod([b.stop - b.start for b in box]) < label.size  # a crop, not the whole scan
    inside = np.zeros(label.shape, bool)
    inside[box] = True
    assert label.any() and not (label & ~inside).any()  # the box holds every labelled voxel: no artery is cut off
    seg, image = nib.load(str(tmp_path / "cascade_seg.nii.gz")), nib.load(str(scan))
    assert seg.shape == image.shape and np.allclose(seg.affine, image.affine, atol=1e-4)

    (whole,) = api.infer(inputs=[scan], model=model, out=tmp_path / "whole_seg.nii.gz", device="cpu", locate=False)
    assert whole.located is None
    found_whole = int((whole.labels.astype(bool) & label).sum())
    found_crop = int((located.labels.astype(bool) & label).sum())
    assert found_whole > 0 and found_crop > 0, (found_whole, found_crop)  # both masks hold artery
    assert found_crop >= found_whole, (found_crop, found_whole)


def test_bench_counts_the_fine_boxes_windows_against_the_whole_scans(cascade_run, imagecas_small):
    """``segvol bench --only cascade-windows``: per scan, the whole scan's windows at 1 mm, the found and the perfect
    box's at each fine spacing, and how much of the label the found box holds."""
    from segvol.bench import format_table
    from segvol.bench_cascade import cascade_windows

    records = [{"id": p.name.split(".")[0], "image": str(p), "label": str(p).replace(".img.", ".label.")}
               for p in sorted(imagecas_small.glob("*.img.nii.gz"))[:2]]
    results = cascade_windows(records, cascade_run / "best.pt")
    rows, totals = results["cascade_windows"], results["cascade_windows_total"]
    assert [r["case"] for r in rows] == [r["id"] for r in records]
    for row in rows:
        assert row["whole_1mm"] == 1  # a small phantom (about 80 mm) fits one 96 mm window at 1 mm
        assert all(row[f"{box}_{mm}mm"] >= 1 for box in ("found", "perfect") for mm in ("0.5", "0.7"))
        assert row["perfect_0.5mm"] >= row["perfect_0.7mm"]  # finer spacing, more voxels in the same box
        assert 0.0 <= row["label_in_found_box"] <= 1.0
    assert totals["whole_1mm"] == 2 and totals["found_0.5mm"] == sum(r["found_0.5mm"] for r in rows)
    assert "label in box" in format_table(results)
