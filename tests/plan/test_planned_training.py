"""An anisotropic plan works: a planned model trains and infers onto each input's grid, and the training's peak
resident memory on the CPU stays within the budget it was planned for (issue 19)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.plan.phantoms import write_dataset


def test_planned_anisotropic_mri_trains_within_budget(tmp_path: Path) -> None:
    from segvol.plan import run_plan, write_plan_json

    root = write_dataset(tmp_path, "Dataset902_MRaniso")
    roomy = run_plan("nnunet", root, device="cpu", memory_gb=8.0)
    budget = round(roomy.memory["model_gb_batch_min"] * 0.92, 3)  # too little for the median-shaped patch
    plan = run_plan("nnunet", root, device="cpu", memory_gb=budget)
    assert plan.memory["model_gb"] <= budget
    assert all(p <= q for p, q in zip(plan.patch, roomy.patch)) and plan.patch != roomy.patch  # the budget bound
    coarse = max(range(3), key=lambda a: plan.spacing[a])
    assert plan.spacing[coarse] > 3 * max(plan.spacing[a] for a in range(3) if a != coarse)
    assert plan.network["name"] == "dynunet" and plan.network["strides"][1][coarse] == 1
    write_plan_json(plan, tmp_path / "plan.json")
    script = Path(__file__).with_name("train_planned.py")
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "plan.json"), str(tmp_path / "models")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.split("@@JSON@@")[1])
    assert out["roi"] == list(plan.patch)
    assert out["peak_rss_gb"] <= budget, (out["peak_rss_gb"], budget)
    assert len(out["grids"]) == 8 and all(g["same_shape"] and g["same_affine"] for g in out["grids"])
