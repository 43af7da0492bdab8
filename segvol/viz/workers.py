"""Drawing several pictures at once: matplotlib spends most of a picture's time in Python (ticks, text layout), one
core per picture, so pictures that do not depend on each other are drawn in forked processes beside the caller.

:func:`draw_all` splits the jobs between the caller and ``processes - 1`` forked children (largest first, each to
the least loaded). A child inherits the jobs by ``fork`` (nothing is pickled but the results), reports its results
or its first error through a pipe and exits; the caller draws its own share meanwhile, then waits for every child.
An error in a child is raised in the caller, with the child's traceback as a note; an error in the caller ends the
children before it propagates. Without ``fork`` (not Linux or macOS), with one CPU, or when the caller runs other
Python threads that are not daemons (a server's workers: forking them is unsafe) or is a daemonic process, everything
is drawn in the caller, one picture after the other.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["draw_all", "available_cpus"]

Job = tuple[Callable[[], Any], float]  # a picture to draw, and its rough cost (any unit)


def available_cpus() -> int:
    """CPUs this process may run on that other work does not keep busy: those it may run on less the load of the
    last minute beyond this process's own (a busy machine gains nothing from more processes, and loses by them)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        busy = max(0, round(os.getloadavg()[0] - 1.0))
    except (AttributeError, OSError):  # no load average (Windows)
        busy = 0
    return max(1, cpus - busy)


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
             before_cost: float = 0.0) -> list[Any]:
    """Run every job (see the module doc) and return their results in order.

    Args:
        jobs: (zero-argument callable, rough cost) pairs, independent of each other.
        processes: how many processes draw, the caller included (None: one per idle CPU, :func:`available_cpus`); at
            most one per job.
        before: run by the caller first, while the children draw (writing the other files).
        before_cost: its rough cost, in the jobs' unit.
    """
    n = max(1, min(processes or available_cpus(), len(jobs)))
    if n == 1 or not _can_fork():
        if before is not None:
            before()
        return [job() for job, _ in jobs]
    shares = _shares(jobs, n, before_cost)
    ctx = multiprocessing.get_context("fork")
    children = []
    results: list[Any] = [None] * len(jobs)
    done = False
    try:
        for share in shares[1:]:
            recv, send = ctx.Pipe(duplex=False)
            child = ctx.Process(target=_child, args=(jobs, share, send), daemon=True)
            child.start()
            send.close()
            children.append((child, recv, share))
        if before is not None:
            before()
        for i in shares[0]:
            results[i] = jobs[i][0]()
        for child, recv, share in children:
            for i, value in zip(share, _received(child, recv)):
                results[i] = value
        done = True
    finally:
        for child, recv, _ in children:
            if not done:  # the caller failed, or a child did: the others' pictures are not wanted
                child.terminate()
            child.join()
            recv.close()
    return results


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
