"""Batch inputs (folders, globs), flip test-time augmentation, and the timing table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segvol import api
from segvol.errors import SegvolError
from tests.conftest import write_nifti
from tests.inference.test_infer_geometry import AFFINES, untrained_ckpt  # noqa: F401  (fixture)


def _scans(folder, n=3):
    rng = np.random.default_rng(1)
    for i in range(n):
        image = rng.integers(-500, 500, size=(24, 20, 10)).astype(np.int16)
        write_nifti(folder / f"case{i}.nii.gz", image, AFFINES["LPI anisotropic offset"])
    write_nifti(folder / "old_seg.nii.gz", np.zeros((24, 20, 10), np.uint8), np.eye(4))  # an earlier output


def test_folder_and_glob(tmp_path, untrained_ckpt):  # noqa: F811
    _scans(tmp_path)
    preds = api.infer(inputs=[tmp_path], model=untrained_ckpt, device="cpu", out_dir=tmp_path / "out")
    assert sorted(p.output.name for p in preds) == ["case0_seg.nii.gz", "case1_seg.nii.gz", "case2_seg.nii.gz"]
    preds = api.infer(inputs=[str(tmp_path / "case[01].nii.gz")], model=untrained_ckpt, device="cpu",
                      out_dir=tmp_path / "glob")
    assert len(preds) == 2
    with pytest.raises(SegvolError, match="no files match"):
        api.infer(inputs=[str(tmp_path / "nothing*.nii.gz")], model=untrained_ckpt, device="cpu")
    with pytest.raises(SegvolError, match="-o/--out names one file"):
        api.infer(inputs=[tmp_path], model=untrained_ckpt, device="cpu", out=tmp_path / "x.nii.gz")


def test_tta_runs_four_passes_and_keeps_an_equivariant_answer(tmp_path, untrained_ckpt, monkeypatch):  # noqa: F811
    from segvol.inference import backends

    real_load, calls = backends.load_model, []

    def bright_model(path, device):
        loaded = real_load(path, device)

        def predict(x):
            calls.append(1)
            return torch.cat([-x, x], dim=1)

        loaded.predict = predict
        return loaded

    monkeypatch.setattr(backends, "load_model", bright_model)
    image = np.full((40, 36, 30), -300, np.int16)
    image[8:20, 10:30, 5:25] = 500
    scan = write_nifti(tmp_path / "s.nii.gz", image, np.diag([0.9, 0.9, 1.2, 1.0]))
    (plain,) = api.infer(inputs=[scan], model=untrained_ckpt, device="cpu", out=tmp_path / "a.nii.gz")
    n_plain = len(calls)
    (tta,) = api.infer(inputs=[scan], model=untrained_ckpt, device="cpu", out=tmp_path / "b.nii.gz", tta=True)
    assert len(calls) - n_plain == 4 * n_plain
    assert np.array_equal(plain.labels, tta.labels) and plain.labels.any()


def test_timing_table_lists_every_scan(tmp_path, untrained_ckpt):  # noqa: F811
    from segvol.cli.infer import _timing_table

    _scans(tmp_path, n=2)
    preds = api.infer(inputs=[tmp_path], model=untrained_ckpt, device="cpu")
    table = _timing_table(preds).splitlines()
    assert table[0].split()[:3] == ["output", "voxels", "load"] and "total" in table[0]
    assert len(table) == 4 and table[-1].startswith("2 scans in")
