"""Pictures drawn in forked processes (segvol.viz.workers, used by ``segvol tree``): the same results as one after
the other, errors raised in the caller with their type, and no process left behind."""

from __future__ import annotations

import multiprocessing
import os
import time

import numpy as np
import pytest

from segvol.errors import SegvolError
from segvol.tree.outputs import write_tree
from segvol.viz.workers import _shares, draw_all
from tests.tree.tubes import capsule_mask, grid_affine


def _pid_and(value: int) -> tuple[int, int]:
    return os.getpid(), value


def test_results_in_order_from_several_processes():
    jobs = [(lambda v=v: _pid_and(v), float(v % 3 + 1)) for v in range(7)]
    before = []
    out = draw_all(jobs, processes=3, before=lambda: before.append(os.getpid()), before_cost=0.5)
    assert [v for _, v in out] == list(range(7)) and before == [os.getpid()]
    assert len({pid for pid, _ in out}) == 3  # the caller and two children drew
    assert [v for _, v in draw_all(jobs, processes=1)] == list(range(7))
    assert not multiprocessing.active_children()


def test_drawn_here_while_another_thread_runs():
    """Forking a process that runs other (non-daemon) threads is unsafe: then every picture is drawn here."""
    import threading

    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        out = draw_all([(lambda v=v: _pid_and(v), 1.0) for v in range(3)], processes=3)
    finally:
        stop.set()
        worker.join()
    assert {pid for pid, _ in out} == {os.getpid()} and [v for _, v in out] == [0, 1, 2]


def test_shares_balance_the_costs():
    shares = _shares([(None, c) for c in (3.0, 3.0, 2.0, 2.0, 1.0)], 2, head_start=1.0)
    loads = [1.0 + sum((3.0, 3.0, 2.0, 2.0, 1.0)[i] for i in shares[0]), sum((3.0, 3.0, 2.0, 2.0, 1.0)[i]
                                                                              for i in shares[1])]
    assert sorted(i for s in shares for i in s) == list(range(5)) and abs(loads[0] - loads[1]) <= 1.0


def _fails() -> None:
    raise SegvolError("no room for the picture")


def test_an_error_in_a_child_is_raised_here_with_its_type():
    jobs = [(lambda: time.sleep(0.05) or 1, 1.0), (_fails, 5.0)]  # the costly one goes to the child
    with pytest.raises(SegvolError, match="no room") as info:
        draw_all(jobs, processes=2)
    assert any("picture process" in note for note in getattr(info.value, "__notes__", []))
    assert not multiprocessing.active_children()


def test_a_child_that_dies_is_an_error():
    jobs = [(lambda: 1, 1.0), (lambda: os._exit(3), 5.0)]
    with pytest.raises(RuntimeError, match="exit code 3"):
        draw_all(jobs, processes=2)
    assert not multiprocessing.active_children()


def test_an_error_here_ends_the_children_at_once():
    jobs = [(lambda: time.sleep(60), 5.0), (lambda: 1, 1.0)]
    start = time.perf_counter()
    with pytest.raises(ValueError, match="caller"):
        draw_all(jobs, processes=2, before=lambda: (_ for _ in ()).throw(ValueError("caller failed")))
    assert time.perf_counter() - start < 20 and not multiprocessing.active_children()


def test_write_tree_draws_the_same_files_in_parallel(tmp_path):
    aff = grid_affine((0.5, 0.5, 0.6))
    p = lambda i, j, k: aff[:3, :3] @ np.array([i, j, k], float) + aff[:3, 3]  # noqa: E731
    mask = capsule_mask((50, 40, 120), aff, [(p(25, 20, 3), p(25, 20, 110), 2.5), (p(25, 20, 60), p(45, 20, 100), 2.0)])
    serial = write_tree(mask, aff, tmp_path / "serial", processes=1)
    forked = write_tree(mask, aff, tmp_path / "forked", processes=3)
    assert sorted(serial.files) == sorted(forked.files) and any(n.startswith("cpr_") for n in serial.files)
    for name in serial.files:
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "forked" / name).read_bytes(), name
    assert not multiprocessing.active_children()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def _jobs_of(values: list[int]) -> list[tuple]:
    return [(lambda v=v: _pid_and(v), 1.0 + v % 2) for v in values]


def test_helpers_started_early_draw_the_jobs_they_make_themselves(tmp_path):
    """A helper forked before its jobs are known runs its steps ahead, then makes the same jobs from the arguments
    it is sent and draws its share; with as many helpers as processes the caller draws none, or one job when the
    others would not split evenly between the helpers."""
    from segvol.viz.workers import Helper

    marks = tmp_path / "ahead"
    steps = lambda: [lambda: marks.mkdir()]  # noqa: E731
    for values, here in ((list(range(4)), 0), (list(range(5)), 1)):
        helpers = [Helper(_jobs_of, steps) for _ in range(2)]
        jobs = _jobs_of(values)
        for helper in helpers:
            helper.jobs(values)
        before: list[int] = []
        out = draw_all(jobs, processes=2, before=lambda seen=before: seen.append(os.getpid()), helpers=helpers)
        assert [v for _, v in out] == values and before == [os.getpid()] and marks.is_dir()
        pids = [pid for pid, _ in out]
        assert pids.count(os.getpid()) == here and len(set(pids) - {os.getpid()}) == 2
        marks.rmdir()
    helpers = [Helper(_jobs_of)]  # fewer helpers than processes: the caller draws too
    helpers[0].jobs(values)
    out = draw_all(jobs, processes=2, helpers=helpers)
    assert [v for _, v in out] == values and os.getpid() in {pid for pid, _ in out}
    assert not multiprocessing.active_children()


def _failing_jobs(values: list[int]) -> list[tuple]:
    return [(lambda: 1, 1.0), (_fails, 5.0)]


def test_a_helpers_error_is_raised_here_and_an_unused_helper_ends():
    from segvol.viz.workers import Helper

    helper = Helper(_failing_jobs)
    jobs = helper.jobs([0])
    with pytest.raises(SegvolError, match="no room"):
        draw_all(jobs, processes=2, helpers=[helper])
    unused = Helper(_jobs_of)
    assert [v for _, v in draw_all(_jobs_of([0, 1]), processes=1, helpers=[unused])] == [0, 1]
    with Helper(_jobs_of):  # never handed any jobs
        pass
    assert not multiprocessing.active_children()


def test_figures_made_ahead_are_handed_out_once():
    from segvol.tree.cpr import cpr_figure
    from segvol.viz.plots import make_ahead, made_ahead, pyplot

    made = []
    make_ahead("test", lambda: made.append(1) or "ahead", 1)
    assert made_ahead("test", lambda: "now") == "ahead" and made_ahead("test", lambda: "now") == "now"
    fig, axes = cpr_figure()
    assert len(axes) == 4 and axes[1].get_shared_x_axes().joined(axes[1], axes[3])
    assert len(axes[0].xaxis.majorTicks) >= 8  # ticks made with the figure
    pyplot().close(fig)
