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
