"""The plan's YAML trains as a config, its JSON has the issue's keys, and the cache is reused."""

from __future__ import annotations

import json
from pathlib import Path

from segvol.config import load_config
from tests.plan.phantoms import write_dataset


def test_yaml_json_and_cache(tmp_path: Path) -> None:
    from segvol.plan import plan_table, plan_to_config, run_plan

    root = write_dataset(tmp_path, "Dataset904_CTmixed")
    plan = run_plan("nnunet", root, device="cpu", memory_gb=4.0, out_yaml=tmp_path / "plan.yaml",
                    out_json=tmp_path / "plan.json")
    assert list((root / ".cache" / "plan").glob("fingerprint-*.json"))
    again = run_plan("nnunet", root, device="cpu", memory_gb=4.0)
    assert again.fingerprint == plan.fingerprint
    cfg = load_config(str(tmp_path / "plan.yaml"), ["train.epochs=3"])
    assert cfg == plan_to_config(plan, ["train.epochs=3"])
    assert list(cfg.preprocess.spacing) == list(plan.spacing) and list(cfg.preprocess.roi_size) == list(plan.patch)
    assert cfg.preprocess.intensity_norm == "channels" and cfg.train.loss == "dicece" and cfg.train.epochs == 3
    d = json.loads((tmp_path / "plan.json").read_text())
    assert len(d["spacing_mm"]) == 3 and len(d["patch_size"]) == 3 and d["batch_size"] >= 2
    assert {"name", "scheme", "clip", "mean", "std"} <= set(d["channels"][0]) and d["channels"][0]["scheme"] == "ct"
    assert {"name", "kernels", "strides"} <= set(d["network"]) and d["fingerprint"]["cases"] == 8
    text = plan_table(plan)
    assert "spacing (mm)" in text and "* preset: 1 x 1 x 1" in text and "departs from nnU-Net" in text
