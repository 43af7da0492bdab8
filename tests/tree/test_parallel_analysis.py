"""The analysis shared with a forked child (``analyse_mask(processes=2)``, used by ``segvol tree`` when a CPU is
idle): the trees thinned in two processes, the cross-sections cut in two, the same numbers as in one process; and
:class:`segvol.viz.workers.Beside`, which runs the child's part."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest

from segvol.errors import SegvolError
from segvol.tree import analyse_mask
from segvol.tree.sections import CHUNK, cross_sections, plane_axes
from segvol.tree.thinning import skeleton_of_components
from segvol.viz.workers import Beside, available_cpus, cpu_times
from tests.tree.tubes import capsule_mask, grid_affine


def _fails() -> None:
    raise SegvolError("no room for the skeleton")


def test_beside_gives_the_childs_result_or_its_error():
    with Beside(os.getpid) as other:
        assert other.forked and other.result() != os.getpid()
    with Beside(os.getpid, fork=False) as here:
        assert not here.forked and here.result() == os.getpid()
    with pytest.raises(SegvolError, match="no room"), Beside(_fails) as failing:
        failing.result()
    with Beside(lambda: __import__("time").sleep(60)):  # never asked for: ended on leaving
        pass
    assert not multiprocessing.active_children()


def test_idle_cpus_over_a_span_are_counted_within_the_machines():
    since = cpu_times()
    assert since is None or len(since) == 3
    sum(i * i for i in range(2_000_000))  # a span of the caller's own work
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert 1 <= available_cpus(since) <= cpus and 1 <= available_cpus() <= cpus


def _labels() -> np.ndarray:
    """Seven tube-like components of different sizes, clear of the faces (as in a padded work mask)."""
    labels = np.zeros((70, 60, 50), np.int32)
    for lab, (x, y, r, z0, z1) in enumerate([(12, 12, 4, 3, 46), (40, 15, 3, 5, 40), (15, 42, 2, 10, 44),
                                             (45, 45, 3, 4, 30), (60, 30, 1, 8, 35), (30, 30, 1, 20, 28),
                                             (62, 52, 2, 30, 46)], start=1):
        xx, yy = np.ogrid[:70, :60]
        disk = (xx - x) ** 2 + (yy - y) ** 2 <= r * r
        labels[:, :, z0:z1][disk] = lab
    return labels


def test_thinning_in_two_processes_gives_the_same_skeleton():
    labels = _labels()
    which = list(range(1, 8))
    serial = skeleton_of_components(labels, which)
    assert serial.any()
    assert np.array_equal(skeleton_of_components(labels, which, fork=True), serial)
    two = which[:2]
    assert np.array_equal(skeleton_of_components(labels, two, fork=True), skeleton_of_components(labels, two))
    assert not multiprocessing.active_children()


def test_sections_cut_in_two_processes_are_the_same():
    aff = grid_affine((0.5, 0.5, 0.6))
    p = lambda i, j, k: aff[:3, :3] @ np.array([i, j, k], float) + aff[:3, 3]  # noqa: E731
    mask = capsule_mask((30, 30, 60), aff, [(p(15, 15, 3), p(15, 15, 56), 3.0)])
    n = 2 * CHUNK + 300  # three chunks: the child cuts the last one
    rng = np.random.default_rng(1)
    points = np.linspace(p(15, 15, 5), p(15, 15, 54), n) + rng.normal(0, 0.3, (n, 3))
    tangent = plane_axes(np.tile([0.0, 0.0, 1.0], (n, 1)))[0] * 0.1 + [0.0, 0.0, 1.0]
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    reach = np.full(n, 6.0)
    field, to_index = mask.view(np.uint8), np.linalg.inv(aff)
    one = cross_sections(field, to_index, points, tangent, reach)
    two = cross_sections(field, to_index, points, tangent, reach, fork=True)
    for name in ("area", "radius", "diameter_min", "diameter_max", "open", "centre"):
        assert np.array_equal(getattr(one, name), getattr(two, name)), name
    assert not multiprocessing.active_children()


def test_analysis_in_two_processes_gives_the_same_trees():
    aff = grid_affine((0.5, 0.5, 0.6), (True, False, False), origin=(20.0, -10.0, 30.0))
    p = lambda i, j, k: aff[:3, :3] @ np.array([i, j, k], float) + aff[:3, 3]  # noqa: E731
    mask = capsule_mask((90, 40, 110), aff, [(p(20, 20, 3), p(20, 20, 100), 2.5), (p(20, 20, 50), p(5, 20, 90), 1.8),
                                             (p(70, 20, 5), p(70, 20, 90), 2.0), (p(70, 20, 40), p(85, 20, 80), 1.5)])
    one, two = analyse_mask(mask, aff), analyse_mask(mask, aff, processes=2)
    assert len(one.trees) == 2 and [t.name for t in one.trees] == [t.name for t in two.trees]
    for a, b in zip(one.trees, two.trees):
        assert a.root == b.root and len(a.segments) == len(b.segments) and a.length_mm == b.length_mm
        for s, t in zip(a.segments, b.segments):
            for name in ("points_mm", "radii_mm", "diameter_min_mm", "diameter_max_mm", "reference_mm", "valid"):
                assert np.array_equal(getattr(s, name), getattr(t, name), equal_nan=name == "reference_mm"), name
    assert not multiprocessing.active_children()
