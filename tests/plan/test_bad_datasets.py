"""A bad dataset gets one warning line per problem, and a plan where one can be made."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segvol.errors import SegvolError
from tests.plan.phantoms import write_dataset


def test_mismatched_label_and_absent_class_are_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from segvol.plan import run_plan

    root = write_dataset(tmp_path, "Dataset901_CTiso")
    bad = root / "labelsTr" / "case002.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), bad)
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"]["ghost"] = 3
    (root / "dataset.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        plan = run_plan("nnunet", root, device="cpu", memory_gb=4.0, cache=False)
    assert plan.fingerprint["cases"] == 5
    lines = [w for w in plan.warnings]
    assert any("case002" in w and "label grid does not match" in w for w in lines)
    assert any("class 3 (ghost) is absent from every case" in w for w in lines)
    assert all("\n" not in w for w in lines) and len(caplog.records) >= 2


def test_single_case_is_warned_and_none_usable_is_an_error(tmp_path: Path) -> None:
    from segvol.plan import run_plan

    root = write_dataset(tmp_path, "Dataset903_MR4ch")
    for p in sorted((root / "labelsTr").iterdir())[1:]:
        nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4)), p)
    plan = run_plan("nnunet", root, device="cpu", memory_gb=4.0, cache=False)
    assert any("a single usable case" in w for w in plan.warnings)
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4)), root / "labelsTr" / "case000.nii.gz")
    with pytest.raises(SegvolError, match="no usable case"):
        run_plan("nnunet", root, device="cpu", memory_gb=4.0, cache=False)
