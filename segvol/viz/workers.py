"""Drawing several pictures at once: matplotlib spends most of a picture's time in Python (ticks, text layout), one
core per picture, so pictures that do not depend on each other are drawn in forked processes beside the caller.

:func:`draw_all` splits the jobs between the caller and ``processes - 1`` forked children (largest first, each to
the least loaded). A child inherits the jobs by ``fork`` (nothing is pickled but the results), reports its results
or its first error through a pipe and exits; the caller draws its own share meanwhile, then waits for every child.
An error in a child is raised in the caller, with the child's traceback as a note; an error in the caller ends the
children before it propagates. Without ``fork`` (not Linux or macOS), with one CPU, or when the caller runs other
Python threads that are not daemons (a server's workers: forking them is unsafe) or is a daemonic process, everything
is drawn in the caller, one picture after the other.

:class:`Helper` is a picture process forked before its jobs are known (``segvol tree`` starts them with its
analysis): it makes figures ahead meanwhile, then gets the jobs' arguments and its share from :func:`draw_all`.
:class:`Beside` runs one computation of any kind in a forked child (a tree's thinning in ``segvol tree``), its result
collected later; in the caller when no child is wanted. How many CPUs are idle: :mod:`segvol.viz.cpus`. While
children run, the garbage collector is kept off the objects that existed before (``gc.freeze``, :func:`_freeze`).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import threading
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from segvol.viz.cpus import available_cpus, cpu_times

__all__ = ["draw_all", "available_cpus", "cpu_times", "Beside", "Helper"]

Job = tuple[Callable[[], Any], float]  # a picture to draw, and its rough cost (any unit)
HELPER_NICENESS = 10  # a Helper's priority below the caller's (os.nice): the caller's analysis comes first


def _shares(jobs: Sequence[Job], n: int, head_start: float) -> list[list[int]]:
    """Job indices per process (the caller first, already busy for ``head_start``): largest first, each to the
    least loaded."""
    load = [head_start] + [0.0] * (n - 1)
    shares: list[list[int]] = [[] for _ in range(n)]
    for i in sorted(range(len(jobs)), key=lambda i: -jobs[i][1]):
        p = min(range(n), key=lambda p: (load[p], p == 0))  # a tie goes to a child: the caller also collects
        shares[p].append(i)
        load[p] += jobs[i][1]
    return shares


def _child(jobs: Sequence[Job], share: list[int], conn: Any) -> None:
    try:
        conn.send(("ok", [jobs[i][0]() for i in share]))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
        try:
            pickle.loads(pickle.dumps(exc))  # the caller must be able to read it back
        except Exception:  # noqa: BLE001
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        conn.send(("error", exc, traceback.format_exc()))
    finally:
        conn.close()


def _can_fork() -> bool:
    """``fork`` exists, every other Python thread is a daemon (a progress bar's monitor, not a server's worker), and
    this is no daemonic process (which may have none)."""
    others = [t for t in threading.enumerate() if t is not threading.current_thread()]
    return ("fork" in multiprocessing.get_all_start_methods() and all(t.daemon for t in others)
            and not multiprocessing.current_process().daemon)


def draw_all(jobs: Sequence[Job], processes: int | None = None, *, before: Callable[[], Any] | None = None,
             before_cost: float = 0.0, helpers: Sequence[Helper] = ()) -> list[Any]:
    """Run every job (see the module doc) and return their results in order.

    Args:
        jobs: (zero-argument callable, rough cost) pairs, independent of each other.
        processes: how many processes draw, the caller included (None: one per idle CPU, :func:`available_cpus`); at
            most one per job.
        before: run by the caller first, while the children draw (writing the other files).
        before_cost: its rough cost, in the jobs' unit.
        helpers: :class:`Helper` processes that made ``jobs`` (:meth:`Helper.jobs`): they draw first, the caller
            only when there are fewer helpers than ``processes`` (and more are forked now); those not needed are
            ended unused.
    """
    helpers = [h for h in helpers if h.alive]
    n = max(1, min(processes or available_cpus(), len(jobs)))
    if not _can_fork():
        n = min(n, max(len(helpers), 1))  # no child forked now
    if n == 1:
        for helper in helpers:
            helper.close()
        if before is not None:
            before()
        return [job() for job, _ in jobs]
    for helper in helpers[n:]:
        helper.close()
    helpers = helpers[:n]
    shares = _shares(jobs, n, before_cost) if len(helpers) < n else _helper_shares(jobs, n)
    ctx = multiprocessing.get_context("fork")
    children = []
    results: list[Any] = [None] * len(jobs)
    done = False
    frozen = _freeze()
    try:
        for helper, share in zip(helpers, shares[1:]):
            helper.submit(share)
        for share in shares[1 + len(helpers):]:
            recv, send = ctx.Pipe(duplex=False)
            child = ctx.Process(target=_child, args=(jobs, share, send), daemon=True)
            child.start()
            send.close()
            children.append((child, recv, share))
        if before is not None:
            before()
        for i in shares[0]:
            results[i] = jobs[i][0]()
        for helper, share in zip(helpers, shares[1:]):
            for i, value in zip(share, helper.collect()):
                results[i] = value
        for child, recv, share in children:
            for i, value in zip(share, _received(child, recv)):
                results[i] = value
        done = True
    finally:
        for helper in helpers:
            helper.close()
        for child, recv, _ in children:
            if not done:  # the caller failed, or a child did: the others' pictures are not wanted
                child.terminate()
            child.join()
            recv.close()
        _unfreeze(frozen)
    return results


def _helper_shares(jobs: Sequence[Job], n: int) -> list[list[int]]:
    """Shares when ``n`` helpers draw, in turn by position (helper ``i`` draws jobs ``i, i + n, ...``: a helper knows
    ahead which kinds of job it will likely draw, when the caller orders its jobs so); the caller (first share)
    draws the last job when the jobs do not split evenly between the helpers (five pictures: two each and one here,
    not three and two), else none."""
    mine = [len(jobs) - 1] if len(jobs) % n else []
    rest = len(jobs) - len(mine)
    return [mine] + [list(range(i, rest, n)) for i in range(n)]


def _freeze() -> bool:
    """Keep the garbage collector off the objects that exist now while children forked from here run: a collection
    writes to every object it visits, and each page so written is copied, in the caller and in every child that
    shares it (a picture process and its parent copied about 60 MB each during the first picture, half as much
    frozen). True when this call froze them (nothing was frozen before); give it to :func:`_unfreeze` once the
    children ended."""
    if gc.get_freeze_count():
        return False
    gc.freeze()
    return True


def _unfreeze(frozen: bool) -> None:
    if frozen:
        gc.unfreeze()


def _received(child: Any, recv: Any) -> list[Any]:
    """A child's results, or its error raised here."""
    try:
        message = recv.recv()
    except EOFError:
        child.join()
        raise RuntimeError(f"a picture process ended without a result (exit code {child.exitcode})") from None
    if message[0] == "error":
        message[1].add_note(f"raised in a picture process:\n{message[2]}")
        raise message[1]
    return message[1]


class _Forked:
    """A forked child and the caller's end of its pipe: :meth:`close` ends the child (if it still runs) and waits for
    it, also on leaving a ``with`` block."""

    _child: Any = None
    _conn: Any = None
    _frozen = False

    def _start(self, target: Callable[..., None], args: tuple[Any, ...], duplex: bool) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conn, theirs = ctx.Pipe(duplex=duplex)
        self._child = ctx.Process(target=target, args=(*args, theirs), daemon=True)
        self._frozen = _freeze()
        self._child.start()
        theirs.close()

    def close(self) -> None:
        """End the child (at once, if it still runs) and wait for it."""
        if self._child is not None:
            if self._child.is_alive():
                self._child.terminate()
            self._child.join()
            self._conn.close()
            self._child = None
            _unfreeze(self._frozen)
            self._frozen = False

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Beside(_Forked):
    """``fn()`` computed in a forked child while the caller goes on (when ``fork`` is true and forking is safe,
    :func:`_can_fork`), else in the caller when its result is asked for; :meth:`result` returns it or raises its
    error. Used as a context manager, a child whose result was not collected (the caller failed) is ended on exit."""

    def __init__(self, fn: Callable[[], Any], fork: bool = True) -> None:
        self._fn: Callable[[], Any] | None = fn
        if fork and _can_fork():
            self._start(_child, ([(fn, 1.0)], [0]), duplex=False)
            self._fn = None

    @property
    def forked(self) -> bool:
        return self._child is not None

    def result(self) -> Any:
        """``fn()``'s value (computed now when no child computes it), or its error raised here."""
        if self._child is None:
            if self._fn is None:
                raise RuntimeError("the result was already collected")
            fn, self._fn = self._fn, None
            return fn()
        try:
            value = _received(self._child, self._conn)[0]
        except BaseException:
            self.close()
            raise
        self._child.join()  # it sent its result and ends
        self.close()
        return value


def _helper_main(factory: Callable[..., Sequence[Job]], warm: Callable[[], Sequence[Callable[[], Any]]] | None,
                 conn: Any) -> None:
    try:
        os.nice(HELPER_NICENESS)  # what it does ahead gives way to the caller's work
    except (AttributeError, OSError):
        pass
    try:
        for step in warm() if warm is not None else ():
            if conn.poll():  # its share came: no more ahead
                break
            step()
    except Exception:  # noqa: BLE001, S110 - what it makes ahead only saves time
        pass
    try:
        message = conn.recv()
    except (EOFError, OSError):  # the caller ended
        return
    if message is None:  # not wanted
        conn.close()
        return
    args, share = message
    _child([(partial(_run_share, factory, args, share), 1.0)], [0], conn)


def _run_share(factory: Callable[..., Sequence[Job]], args: tuple[Any, ...], share: list[int]) -> list[Any]:
    jobs = factory(*args)
    return [jobs[i][0]() for i in share]


class Helper(_Forked):
    """A picture process forked before its jobs are known (while the caller computes what they draw), at a lower
    priority (:data:`HELPER_NICENESS`): it runs the steps ``warm()`` lists (figures made ahead,
    :func:`segvol.viz.plots.make_ahead`) one by one until its share comes. The caller makes the jobs with
    :meth:`jobs` (``factory(*args)``) and hands the helper to :func:`draw_all`, which sends it the args (pickled)
    and its share: the helper makes the same jobs from them, runs its share and sends the results back.
    :meth:`close` ends it (also when it was never used); use it as a context manager."""

    def __init__(self, factory: Callable[..., Sequence[Job]],
                 warm: Callable[[], Sequence[Callable[[], Any]]] | None = None) -> None:
        self._factory = factory
        self._args: tuple[Any, ...] = ()
        if _can_fork():
            self._start(_helper_main, (factory, warm), duplex=True)

    @property
    def alive(self) -> bool:
        return self._child is not None and self._child.is_alive()

    def cpu_ticks(self) -> float:
        """The helper's CPU time so far (clock ticks; ``/proc/<pid>/stat``), 0 when unknown."""
        try:
            with open(f"/proc/{self._child.pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return float(fields[11]) + float(fields[12])  # utime, stime
        except (AttributeError, OSError, ValueError, IndexError):
            return 0.0

    def jobs(self, *args: Any) -> list[Job]:
        """``factory(*args)`` here; :func:`draw_all` sends ``args`` to the helper."""
        self._args = args
        return list(self._factory(*args))

    def submit(self, share: list[int]) -> None:
        self._conn.send((self._args, share))

    def collect(self) -> list[Any]:
        """The results of its share, or its error raised here."""
        results = _received(self._child, self._conn)[0]
        self._child.join()  # it sent them and ends
        return results
