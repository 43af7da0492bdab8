"""Folder-mode evaluation end to end on hand-made masks: files, values, figures, overlay colours, the report and
TensorBoard previews."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from segvol.cli import main
from segvol.data.registry import file_markers, get_adapter
from segvol.io.masks import case_id, index_folder
from segvol.evaluation.metrics import binary_metrics
from segvol.viz.overlays import frame_count, overlay_rgb, save_overlay
from tests.conftest import write_nifti

AFFINE = np.diag([0.7, 0.7, 1.2, 1.0])
SHAPE = (40, 36, 24)


def _case(n: int):
    rng = np.random.default_rng(n)
    ref = np.zeros(SHAPE, np.uint8)
    ref[10:30, 12 + n:24 + n, 6:18] = 1
    pred = np.roll(ref, n, axis=0)
    if n == 2:
        pred[:] = 0  # one case with an empty prediction
    image = rng.normal(0, 20, SHAPE).astype(np.float32) + 300.0 * ref
    return ref, pred, image


@pytest.fixture()
def folders(tmp_path):
    refs, preds = tmp_path / "imagecas", tmp_path / "preds"
    refs.mkdir(), preds.mkdir()
    for n in (1, 2, 3):
        ref, pred, image = _case(n)
        write_nifti(refs / f"{n}.label.nii.gz", ref, AFFINE)
        write_nifti(refs / f"{n}.img.nii.gz", image, AFFINE)
        write_nifti(preds / f"{n}.img_seg.nii.gz", pred, AFFINE)
    return refs, preds


def test_case_ids_and_matching(folders):
    refs, preds = folders
    markers = file_markers()
    every = markers.masks + markers.images
    assert case_id("12.img_seg.nii.gz", every) == case_id("12.label.nii.gz", every) == case_id("12.img.nii", every) \
        == "12"
    assert case_id("BraTS20_Training_001_seg.nii.gz", every) == "BraTS20_Training_001"
    assert case_id("BraTS-GLI-00000-000-seg.nii.gz", every) == "BraTS-GLI-00000-000"
    assert index_folder(refs, markers=markers)["1"].name == "1.label.nii.gz"
    assert index_folder(refs, masks=False, markers=markers)["1"].name == "1.img.nii.gz"
    # each adapter names its own cases; segvol's _seg is stripped for every dataset
    imagecas, brats = get_adapter("imagecas"), get_adapter("brats")
    assert imagecas.case_id("12.img_seg.nii.gz") == imagecas.case_id("12.label.nii.gz") == "12"
    assert brats.case_id("BraTS20_Training_001_seg.nii.gz") == "BraTS20_Training_001"
    assert case_id("12.label.nii.gz") == "12.label"  # no dataset's markers: only what segvol writes


def test_folder_evaluation_files_and_values(folders, tmp_path, capsys):
    refs, preds = folders
    out = tmp_path / "eval"
    assert main(["evaluate", "--pred", str(preds), "--ref", str(refs), "--images", str(refs), "--out", str(out),
                 "--worst", "2"]) == 0
    printed = capsys.readouterr().out
    assert "3 case(s), binary labels" in printed and "worst 2" in printed
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["case"] for r in rows] == ["1", "2", "3"] and {r["class"] for r in rows} == {"foreground"}
    ref, pred, _ = _case(3)
    expected = binary_metrics(pred, ref, (0.7, 0.7, 1.2), vessel=True)
    for key in ("dice", "iou", "hd95_mm", "asd_mm", "cldice", "vol_diff_ml"):
        assert float(rows[2][key]) == pytest.approx(expected[key], rel=1e-4)
    assert rows[1]["hd95_mm"] == "inf" and rows[1]["precision"] == "nan" and float(rows[1]["dice"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    dice = summary["metrics"]["foreground"]["dice"]
    values = [float(r["dice"]) for r in rows]
    assert dice["mean"] == pytest.approx(np.mean(values)) and dice["median"] == pytest.approx(np.median(values))
    assert dice["iqr"] == pytest.approx(np.subtract(*np.percentile(values, [75, 25])))
    hd = summary["metrics"]["foreground"]["hd95_mm"]
    assert hd["n"] == 3 and hd["n_finite"] == 2
    assert summary["worst"][0]["case"] == "2"
    assert "misses the foreground entirely" in summary["worst"][0]["readings"]["foreground"]
    failures = json.loads((out / "failures.json").read_text())
    assert len(failures["worst"]) == 2 and failures["best"]["case"] == "1"
    figures = out / "figures"
    for name in ("scores.png", "2_foreground.png", "3_foreground.png", "1_foreground.png", "2.gif"):
        assert (figures / name).stat().st_size > 2000, name
    assert frame_count(figures / "2.gif") > 5


def test_overlay_colours_where_the_masks_are(tmp_path):
    image = np.full((20, 20), 100.0)
    ref = np.zeros((20, 20), bool)
    pred = np.zeros((20, 20), bool)
    ref[2:10, 2:10] = True
    pred[6:14, 6:14] = True
    rgb = overlay_rgb(image, ref, pred, window=(0, 200)).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    only_ref, only_pred, both = ref & ~pred, pred & ~ref, ref & pred
    assert (g[only_ref] > r[only_ref] + 100).all() and (g[only_ref] > b[only_ref] + 100).all()  # green
    assert (r[only_pred] > g[only_pred] + 100).all() and (r[only_pred] > b[only_pred] + 100).all()  # red
    assert (r[both] > b[both] + 100).all() and (g[both] > b[both] + 100).all()  # yellow
    plain = ~(ref | pred)
    assert (r[plain] == g[plain]).all() and (g[plain] == b[plain]).all()  # grey elsewhere

    # the saved three-view figure shows all three colours, in proportion to the masks' areas
    import matplotlib.image as mpimg

    vol_ref = np.repeat(ref[:, :, None], 6, axis=2)
    vol_pred = np.repeat(pred[:, :, None], 6, axis=2)
    png = save_overlay(tmp_path / "o.png", np.full(vol_ref.shape, 100.0), vol_ref, vol_pred, np.eye(4))
    pix = (mpimg.imread(png)[..., :3] * 255).astype(int)
    pr, pg, pb = pix[..., 0], pix[..., 1], pix[..., 2]
    green = (pg > pr + 100) & (pg > pb + 100)
    red = (pr > pg + 100) & (pr > pb + 100)
    yellow = (pr > pb + 100) & (pg > pb + 100) & (abs(pr - pg) < 30)
    assert green.sum() > 500 and red.sum() > 500 and yellow.sum() > 200


def test_report_and_training_curves(folders, tmp_path):
    refs, preds = folders
    run = tmp_path / "models" / "run"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,loss,val_dice,dice_artery,lr,time_s\n1,0.9,,,0.001,1.0\n"
                                     "2,0.7,0.41,0.41,0.001,1.0\n3,0.6,0.55,0.55,0.0005,1.0\n")
    assert main(["evaluate", "--pred", str(preds), "--ref", str(refs), "--out", str(run / "eval"), "--no-gif"]) == 0
    assert main(["report", "--run", str(run)]) == 0
    md, page = (run / "report.md").read_text(), (run / "report.html").read_text()
    assert "best validation Dice 0.5500 at epoch 3" in md and "<table>" in page
    links = [line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert "figures/training_curves.png" in links and "eval/figures/scores.png" in links
    for link in links:
        assert (run / link).is_file() and (run / link).stat().st_size > 2000, link
    import base64
    import re

    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)  # one file to share: images inside
    assert len(embedded) == len(links) and 'src="figures/' not in page
    assert base64.b64decode(embedded[0]) == (run / links[0]).read_bytes()


def test_a_damaged_evaluation_is_a_one_line_report_error(folders, tmp_path, capsys):
    refs, preds = folders
    run = tmp_path / "run"
    assert main(["-q", "evaluate", "--pred", str(preds), "--ref", str(refs), "--out", str(run / "eval"),
                 "--no-gif"]) == 0
    (run / "eval" / "failures.json").write_text("{ truncated")
    capsys.readouterr()
    assert main(["report", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "failures.json: unreadable" in err


def test_usage_errors_are_one_line(folders, tmp_path, capsys):
    refs, preds = folders
    assert main(["evaluate", "--pred", str(preds)]) == 2
    assert "--pred and --ref" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    write_nifti(other / "1_seg.nii.gz", np.zeros((5, 5, 5), np.uint8), AFFINE)
    assert main(["evaluate", "--pred", str(other), "--ref", str(refs)]) == 2
    err = capsys.readouterr().err
    assert "1_seg.nii.gz: shape (5, 5, 5) differs from the reference" in err
    assert err[-1] == "\n" and err.count("\n") == 1


def test_tensorboard_preview(tmp_path):
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from segvol.training.tensorboard import TrainLogger, preview_image

    ref, pred, image = _case(1)
    logger = TrainLogger(tmp_path)
    logger.log_epoch(1, {"epoch": 1, "loss": 0.5, "val_dice": 0.4, "dice_artery": 0.4, "lr": 1e-3, "time_s": 2.0})
    logger.log_preview(1, torch.from_numpy(image)[None, None], torch.from_numpy(ref)[None], pred)
    logger.close()
    rgb = preview_image(image, ref, pred)
    assert rgb.shape == (3, SHAPE[1], SHAPE[0]) and rgb.dtype == np.uint8
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert "val/preview" in events.Tags()["images"] and "train/loss" in events.Tags()["scalars"]
    assert math.isclose(events.Scalars("val/val_dice")[0].value, 0.4, rel_tol=1e-6)
