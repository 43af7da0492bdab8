"""The plan rules and the fingerprint's array core against answers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from segvol.plan.fingerprint import ChannelStats, analyze_arrays, nonzero_box, structure_radius
from segvol.plan.rules import normalisation, target_spacing, topology


def test_median_spacing_without_anisotropy() -> None:
    spacings = np.array([[1.0, 1.0, 1.0], [0.8, 0.8, 2.0], [0.9, 0.9, 1.5]])
    shapes = np.array([[100, 100, 80]] * 3)
    target, rule = target_spacing(spacings, shapes)
    assert np.allclose(target, [0.9, 0.9, 1.5]) and "median" in rule


def test_coarse_axis_takes_its_10th_percentile() -> None:
    z = np.array([3.0, 4.0, 5.0, 5.0, 5.0, 6.0, 6.0, 6.0, 7.0, 8.0])
    spacings = np.stack([np.full(10, 0.7), np.full(10, 0.7), z], 1)
    shapes = np.array([[300, 300, 20]] * 10)
    target, rule = target_spacing(spacings, shapes)
    assert target[2] == pytest.approx(np.percentile(z, 10)) and target[2] < np.median(z)
    # many slices: the size test fails, so the median stays
    target2, _ = target_spacing(spacings, np.array([[300, 300, 200]] * 10))
    assert target2[2] == pytest.approx(np.median(z))


def _stats(name: str, modality: str) -> ChannelStats:
    return ChannelStats(name, modality, 10.0, 2.0, 9.0, 1.0, 20.0, 0.0, 30.0, 100)


def test_normalisation_schemes() -> None:
    chans = [_stats("CT", "CT"), _stats("T2", "T2"), _stats("nonorm", "nonorm")]
    loose = normalisation(chans, 0.9)
    assert [c["scheme"] for c in loose] == ["ct", "zscore", "none"]
    assert loose[0]["clip"] == [1.0, 20.0] and loose[0]["mean"] == 10.0 and loose[0]["std"] == 2.0
    assert [c["scheme"] for c in normalisation(chans, 0.5)] == ["ct", "zscore_nonzero", "none"]


def test_no_pooling_along_a_coarse_axis_until_comparable() -> None:
    topo = topology([0.7, 0.7, 5.0], [160, 160, 16])
    assert topo.strides[1] == (2, 2, 1) and topo.kernels[0] == (3, 3, 1)
    z_pools = [s[2] for s in topo.strides]
    first_z = z_pools.index(2)
    assert 0.7 * 2 ** (first_z - 1) * 2 >= 5.0 / 2  # pooled only once the in-plane spacing came within 2x


def test_analyze_arrays_box_samples_and_radius() -> None:
    image = np.zeros((2, 40, 40, 20), np.float32)
    image[:, 10:30, 5:35, 2:18] = 1.0
    label = np.zeros((40, 40, 20), np.uint8)
    yy, xx = np.mgrid[:40, :40]
    tube = (yy - 20) ** 2 + (xx - 20) ** 2 <= 6 ** 2
    label[tube & (np.abs(yy - 20) < 10)[:, :], 2:18] = 1  # a tube of radius 6 voxels along the last axis
    image[0][label > 0] = 5.0
    case, drawn = analyze_arrays("c", image, label, (1.0, 1.0, 1.0), samples=500)
    assert nonzero_box(image) == (slice(10, 30), slice(5, 35), slice(2, 18))
    assert case.shape_cropped == (20, 30, 16) and case.class_voxels == {1: int(label.sum())}
    assert np.all(drawn[0] == 5.0) and drawn[0].size == 500
    # the tube's ends are flat, so the estimate sits a little under 6 (3 x mean distance is exact for an endless tube)
    assert 4.5 < case.class_radius_mm[1] < 6.5
    assert structure_radius(label > 0, (0.5, 0.5, 0.5)) == pytest.approx(case.class_radius_mm[1] / 2, rel=1e-3)
