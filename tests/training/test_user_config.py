"""A user's own YAML, outside the shipped presets, builds on one by name and trains."""

from __future__ import annotations

from segvol import api
from segvol.cli import main


def test_user_yaml_with_base_preset_trains_one_step(tmp_path, monkeypatch):
    data = tmp_path / "brats"
    api.synth(dataset="brats", out=data, cases=2, size="small", seed=0, progress=False)
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)  # no ./configs: the preset must come from the package
    (work / "my-brats.yaml").write_text(
        "base: tiny-brats\n"
        "data:\n  labels: binary\n  val_fraction: 0.5\n  cache: none\n"
        "train:\n  epochs: 1\n  steps_per_epoch: 1\n  val_every: 1\n"
        "augment:\n  num_samples: 1\n")
    code = main(["-q", "train", "--config", "my-brats.yaml", "--data", str(data), "--models", "runs",
                 "--name", "mine", "--device", "cpu"])
    assert code == 0
    rows = (work / "runs" / "mine" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,loss,val_dice") and rows[1].startswith("1,")
    assert (work / "runs" / "mine" / "best.pt").is_file()
