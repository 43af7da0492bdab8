"""The fast inference path against MONAI as the oracle: the per-axis gather inverse against ``Invertd``, the
``auto`` window placement against MONAI's own patch positions, and the ISA-L NIfTI reader/writer against
MONAI's and nibabel's."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.data.utils import dense_patch_slices
from monai.inferers.utils import _get_scan_interval
from monai.transforms import Compose, EnsureChannelFirstd, LoadImage, Spacingd

from segvol.config import load_config
from segvol.errors import SegvolError
from segvol.inference.core import axis_gather_plan, gather_labels, resolve_overlap, window_count
from segvol.io.nifti import c_order_float32, fast_nifti_reader, write_nifti
from segvol.transforms import deterministic_prefix, inverse_transform
from tests.conftest import write_nifti as write_test_nifti

# (name, affine, shape): RAS and LPS, anisotropic, axes permuted, up- and downsampling, an oblique scanner frame
GRIDS = [
    ("ras-ct", np.diag([0.3486, 0.3486, 0.4419, 1.0]), (150, 140, 70)),
    ("lps-aniso", np.array([[-0.4123, 0, 0, 50.3], [0, -0.3971, 0, 20.1], [0, 0, 2.731, -7.7], [0, 0, 0, 1]]),
     (120, 110, 20)),
    ("permuted", np.array([[0, 0, 1.713, 10], [0.617, 0, 0, -5], [0, -0.833, 0, 3], [0, 0, 0, 1]]), (50, 30, 20)),
    ("upsampled", np.diag([1.61, 2.23, 1.37, 1.0]), (21, 15, 30)),
    ("oblique", np.array([[0.93, 0.11, 0, 4], [-0.11, 0.93, 0, 0], [0, 0, 1.17, 0], [0, 0, 0, 1]]), (40, 40, 30)),
]


def _processed(path, cfg):
    """The inference prefix applied to ``path``, with the grids the fast inverse needs."""
    prefix = Compose(deterministic_prefix(cfg, keys=("image",)))
    data, grids = prefix.transforms[0]({"image": str(path)}), {}
    for t in prefix.transforms[1:]:
        data = t(data)
        if isinstance(t, (EnsureChannelFirstd, Spacingd)):
            grids[type(t).__name__] = (data["image"].affine.clone(), tuple(data["image"].shape[1:]))
    return prefix, data, grids


@pytest.mark.parametrize("name,affine,shape", GRIDS, ids=[g[0] for g in GRIDS])
def test_gather_inverse_equals_invertd(tmp_path, name, affine, shape):
    cfg = load_config("tiny")
    rng = np.random.default_rng(len(name))
    path = write_test_nifti(tmp_path / f"{name}.nii.gz", rng.integers(0, 1000, shape).astype(np.int16), affine)
    prefix, data, grids = _processed(path, cfg)
    image = data["image"]
    labels = torch.as_tensor(rng.integers(0, 3, size=image.shape), dtype=torch.uint8)
    data["pred"] = MetaTensor(labels.float(), meta=dict(image.meta))
    oracle = inverse_transform(prefix)(data)["pred"]
    expected = oracle.numpy().round().astype(np.uint8)

    plan = axis_gather_plan(image.affine, *grids["Spacingd"], *grids["EnsureChannelFirstd"])
    assert plan is not None
    for use_numpy in (True, False):  # the CPU gather and the accelerator one (index_select), both on the CPU here
        fast = gather_labels(labels, plan, use_numpy=use_numpy).numpy()
        assert fast.shape == expected.shape == (1, *shape)
        assert (expected > 0).any() and (fast > 0).any() and (expected == 0).any()
        assert np.array_equal(fast, expected), f"{(fast != expected).sum()} voxels differ"
    assert np.allclose(oracle.affine.numpy(), grids["EnsureChannelFirstd"][0].numpy())


def test_gather_inverse_differs_from_invertd_only_at_exact_ties(tmp_path):
    """With round spacings a voxel centre can fall exactly half-way between two grid voxels; Invertd's float32
    arithmetic then picks either one. Everywhere else the two agree."""
    cfg = load_config("tiny")
    affine, shape = np.diag([0.7, 0.8, 2.5, 1.0]), (40, 37, 15)
    path = write_test_nifti(tmp_path / "round.nii.gz", np.ones(shape, np.int16), affine)
    prefix, data, grids = _processed(path, cfg)
    image = data["image"]
    labels = torch.as_tensor(np.random.default_rng(0).integers(0, 2, size=image.shape), dtype=torch.uint8)
    data["pred"] = MetaTensor(labels.float(), meta=dict(image.meta))
    expected = inverse_transform(prefix)(data)["pred"].numpy().round().astype(np.uint8)[0]
    plan = axis_gather_plan(image.affine, *grids["Spacingd"], *grids["EnsureChannelFirstd"])
    fast = gather_labels(labels, plan).numpy()[0]
    src = np.asarray(grids["EnsureChannelFirstd"][0], dtype=np.float64)
    voxel_map = np.linalg.solve(np.asarray(image.affine, dtype=np.float64), src)
    tie = np.zeros(shape, dtype=bool)
    for i, j in enumerate(plan[3]):
        coords = voxel_map[i, j] * np.arange(shape[j]) + voxel_map[i, 3]
        on_tie = np.abs(coords - np.floor(coords) - 0.5) < 1e-4
        tie |= np.expand_dims(on_tie, tuple(a for a in range(3) if a != j))
    assert tie.any() and (~tie).any()
    assert np.array_equal(fast[~tie], expected[~tie])


@pytest.mark.parametrize("size", [96, 97, 150, 179, 182, 250, 512])
def test_auto_overlap_places_the_fewest_windows_evenly_through_monai(size):
    roi, min_overlap = 96, 0.1
    overlap = resolve_overlap("auto", (size, 96, 96), (roi, roi, roi), min_overlap)
    slices = dense_patch_slices((size, 96, 96), (roi,) * 3, _get_scan_interval((size, 96, 96), (roi,) * 3, 3,
                                                                              overlap))
    starts = sorted({s[0].start for s in slices})
    n = window_count(size, roi, min_overlap)
    assert len(starts) == n == (1 if size <= roi else math.ceil((size - roi) / (roi - 10)) + 1)
    assert starts[0] == 0 and starts[-1] + roi == max(size, roi)  # the axis is covered end to end
    gaps = np.diff(starts)
    if n > 1:
        assert roi - gaps.max() >= math.ceil(min_overlap * roi)  # every neighbour overlaps by the minimum
        assert gaps.max() - gaps.min() <= n - 1  # evenly spread (integer rounding only)
    fixed = dense_patch_slices((size, 96, 96), (roi,) * 3, _get_scan_interval((size, 96, 96), (roi,) * 3, 3,
                                                                             (0.25,) * 3))
    assert len(slices) <= len(fixed)


def test_overlap_setting_accepts_auto_or_a_fraction():
    assert load_config("tiny").infer.overlap == "auto"
    assert load_config("tiny", ["infer.overlap=0.5"]).infer.overlap == 0.5
    assert resolve_overlap(0.5, (200, 200, 200), (96, 96, 96), 0.1) == 0.5
    for bad in ("infer.overlap=1.5", "infer.overlap=most", "infer.min_overlap=1"):
        with pytest.raises(SegvolError, match="infer"):
            load_config("tiny", [bad])


def test_fast_reader_matches_monai_and_writer_matches_nibabel(tmp_path):
    rng = np.random.default_rng(1)
    affine = np.array([[-0.41, 0, 0, 50], [0, 0.39, 0, -20], [0, 0, 1.3, 7], [0, 0, 0, 1]])
    path = write_test_nifti(tmp_path / "s.nii.gz", rng.integers(-1024, 3000, (70, 50, 33)).astype(np.int16), affine)
    plain = LoadImage(image_only=True)(str(path))
    loader = LoadImage(image_only=True)
    loader.register(fast_nifti_reader())
    fast = loader(str(path))
    assert fast.dtype == plain.dtype == torch.float32 and fast.is_contiguous()
    assert torch.equal(fast.as_tensor(), plain.as_tensor()) and plain.abs().sum() > 0
    assert sorted(fast.meta) == sorted(plain.meta)
    for key, value in plain.meta.items():
        a, b = np.asarray(fast.meta[key]), np.asarray(value)
        numeric = a.dtype.kind in "fiub" and b.dtype.kind in "fiub"
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f") if numeric else str(a) == str(b), key

    f_order = np.asfortranarray(rng.integers(0, 9, (67, 45, 12)).astype(np.int16))
    assert np.array_equal(c_order_float32(f_order), f_order.astype(np.float32))
    assert c_order_float32(f_order).flags.c_contiguous

    img = nib.Nifti1Image(rng.integers(0, 3, (30, 20, 10)).astype(np.uint8), affine)
    write_nifti(img, tmp_path / "ours.nii.gz")
    nib.save(img, str(tmp_path / "theirs.nii.gz"))
    ours, theirs = nib.load(str(tmp_path / "ours.nii.gz")), nib.load(str(tmp_path / "theirs.nii.gz"))
    assert np.array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))
    assert ours.header.binaryblock == theirs.header.binaryblock


def test_cpu_runs_full_size_windows_one_at_a_time_and_batches_small_ones():
    from segvol.inference.core import cpu_window_batch

    assert cpu_window_batch(4, (96, 96, 96)) == 1
    assert cpu_window_batch(4, (128, 128, 128)) == 1
    assert cpu_window_batch(8, (32, 32, 32)) == 8
    assert cpu_window_batch(64, (32, 32, 32)) == 27


@pytest.mark.parametrize("device, given, expected", [("cpu", None, 1), ("cpu", 3, 3), ("cuda", None, 4)])
def test_window_batch_follows_the_device_unless_given(monkeypatch, device, given, expected):
    from types import SimpleNamespace

    import torch

    from segvol.config import load_config
    from segvol.inference import predictor

    seen = {}

    def fake_sliding_window(predict, x, cfg, sw_batch_size=None, **kw):
        seen["batch"] = sw_batch_size or cfg.infer.sw_batch_size
        return torch.zeros(1, 2, *x.shape[2:])

    monkeypatch.setattr(predictor, "sliding_window", fake_sliding_window)
    monkeypatch.setattr(predictor, "stitch_device", lambda shape, channels, dev: dev)
    cfg = load_config("imagecas", [])
    assert cfg.infer.sw_batch_size == 4 and cfg.preprocess.roi_size == (96, 96, 96)
    model = SimpleNamespace(task=SimpleNamespace(out_channels=2), device=torch.device(device), backend="onnxruntime",
                            cfg=cfg, predict=None)
    predictor._windows(model, torch.zeros(1, 1, 8, 8, 8), given, None, False, False)
    assert seen["batch"] == expected
