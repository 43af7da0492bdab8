"""End to end on phantoms: train a tiny model with a held-out test split, evaluate it, write the report."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from segvol import api
from segvol.cli import main
from segvol.config import load_config
from tests.conftest import REPO


def test_train_evaluate_test_split_and_report(tmp_path, capsys):
    data = tmp_path / "imagecas"
    api.synth(dataset="imagecas", out=data, cases=5, size="small", seed=3, progress=False)
    cfg = load_config(str(REPO / "configs" / "tiny.yaml"),
                      ["train.epochs=1", "train.steps_per_epoch=2", "data.test_fraction=0.2",
                       "data.val_fraction=0.2"], data={"root": str(data)})
    api.train(cfg=cfg, models_dir=tmp_path / "models", name="run", device="cpu", progress=False)
    run = tmp_path / "models" / "run"
    split = json.loads((run / "split.json").read_text())
    assert len(split["test"]) == 1 and not set(split["test"]) & set(split["train"])

    assert main(["-q", "evaluate", "--run", str(run), "--split", "test", "--device", "cpu"]) == 0
    out = run / "eval"
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["case"] for r in rows] == split["test"] and rows[0]["class"] == "artery"
    assert rows[0]["cldice"] != "nan"  # ImageCAS: vessel metrics on
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"] == "test" and summary["cases"] == 1 and summary["worst"][0]["readings"]["artery"]
    case = split["test"][0]
    pred = np.asarray(nib.load(str(out / "predictions" / f"{case}_seg.nii.gz")).dataobj)
    assert pred.any() and not pred.all()  # the metrics describe a real mask, not an empty one
    ref = np.asarray(nib.load(str(data / f"{case}.label.nii.gz")).dataobj) > 0
    dice = 2 * ((pred > 0) & ref).sum() / ((pred > 0).sum() + ref.sum())
    assert dice > 0 and float(rows[0]["dice"]) == pytest.approx(dice, rel=1e-4)  # computed by hand here
    for name in ("scores.png", "training_curves.png", f"{case}_artery.png", f"{case}.gif"):
        assert (out / "figures" / name).stat().st_size > 2000, name

    assert main(["report", "--run", str(run)]) == 0
    assert "report.html" in capsys.readouterr().out
    md = (run / "report.md").read_text()
    assert "Evaluation (test, 1 case(s), binary labels)" in md and f"eval/figures/{case}.gif" in md
    assert (run / "report.html").stat().st_size > 2000
