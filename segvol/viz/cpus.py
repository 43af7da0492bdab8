"""How many CPUs are idle, for :mod:`segvol.viz.workers`: from the kernel's CPU time counters over a span of the
caller's own work (the other CPUs' idle share meanwhile, its own children's time counted as idle), else from the
number of processes running now, else from the last minute's load average."""

from __future__ import annotations

import os

__all__ = ["available_cpus", "cpu_times"]


def cpu_times() -> tuple[float, float, float] | None:
    """Idle and total CPU time of the machine so far (clock ticks, all CPUs; ``/proc/stat``) and the CPU time of
    this process's ended children (seconds), or None without the counters (not Linux). Two readings bound a span:
    :func:`available_cpus` ``(since=...)``."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [float(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 8:
        return None
    own = os.times()
    return fields[3] + fields[4], sum(fields[:8]), own.children_user + own.children_system  # idle + iowait; to steal


def _machine_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _running_now() -> int | None:
    """Processes running or ready to run on the machine now, this one included (``/proc/loadavg``), or None."""
    try:
        with open("/proc/loadavg", encoding="ascii") as fh:
            return int(fh.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def available_cpus(since: tuple[float, float, float] | None = None, own_ticks: float = 0.0) -> int:
    """CPUs this process may use that other work does not keep busy, this process's own included: with ``since`` (a
    :func:`cpu_times` reading taken before the caller's own work), one plus the CPUs that were idle or ran this
    process's children since then (those that ended, and ``own_ticks`` clock ticks of those still running; a span
    of at least a tenth of a second; half a CPU counts); else one plus the CPUs no running process holds now; else
    (no such counters) those it may run on less the last minute's load beyond this process."""
    cpus = _machine_cpus()
    now = cpu_times() if since is not None else None
    if since is not None and now is not None and now[1] > since[1]:
        tick = os.sysconf("SC_CLK_TCK")
        span = (now[1] - since[1]) / (os.cpu_count() or cpus)  # clock ticks per CPU
        if span >= 0.1 * tick:
            idle = (now[0] - since[0] + (now[2] - since[2]) * tick + own_ticks) / span  # CPUs idle or ours
            return max(1, min(cpus, 1 + int(idle + 0.5)))
    running = _running_now()
    if running is not None:
        return max(1, min(cpus, 1 + cpus - running))
    try:
        busy = max(0, round(os.getloadavg()[0] - 1.0))
    except (AttributeError, OSError):  # no load average (Windows)
        busy = 0
    return max(1, cpus - busy)
