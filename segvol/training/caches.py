"""Housekeeping of the disk caches in ``<data>/.cache/``: what each one was made for, how big it is, when it was
last used, and removing the ones a config change left behind (``segvol cache``)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segvol.errors import SegvolError
from segvol.utils import atomic_path

__all__ = ["CacheInfo", "list_caches", "mark_used", "remove_caches", "describe", "format_caches", "INFO_FILE"]

log = logging.getLogger(__name__)
INFO_FILE = "cache.json"
_KEY = re.compile(r"^[0-9a-f]{16}$")  # segvol.training.data.cache_key: nothing else in .cache/ is ever removed


@dataclass(frozen=True)
class CacheInfo:
    """One cache folder: its key, what it was made for (``None`` for caches older than ``cache.json``), the volumes
    it holds, its size in bytes and when it was last opened (seconds since the epoch)."""

    key: str
    folder: Path
    made_for: dict[str, Any] | None
    volumes: int
    size: int
    last_used: float


def mark_used(folder: Path, made_for: dict[str, Any]) -> None:
    """Record in ``folder/cache.json`` what the cache holds and that it is being used now (written by rename, so
    processes sharing the folder never read half a file)."""
    with atomic_path(folder / INFO_FILE) as tmp:
        tmp.write_text(json.dumps({"made_for": made_for, "last_used": time.time()}, indent=1, sort_keys=True))


def _stats(folder: Path) -> dict[str, os.stat_result]:
    """Name -> stat of the plain files in ``folder``; a temporary file renamed away meanwhile (another process
    writing the cache) is skipped."""
    found = {}
    for f in folder.iterdir():
        try:
            st = f.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            found[f.name] = st
    return found


def _info(folder: Path) -> CacheInfo:
    files = _stats(folder)
    volumes = [name for name in files if name.endswith(".pt") and not name.startswith(".")]
    made_for, last_used = None, max((st.st_mtime for st in files.values()), default=folder.stat().st_mtime)
    try:
        info = json.loads((folder / INFO_FILE).read_text())
        made_for, last_used = info["made_for"], float(info["last_used"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a cache from before cache.json: the newest file's time stands in for its last use
    return CacheInfo(folder.name, folder, made_for, len(volumes), sum(st.st_size for st in files.values()),
                     last_used)


def list_caches(data: str | Path) -> list[CacheInfo]:
    """The caches in ``<data>/.cache/``, most recently used first."""
    root = Path(data)
    if not root.is_dir():
        raise SegvolError(f"{root}: no such data folder")
    base = root / ".cache"
    if not base.is_dir():
        return []
    found = [_info(f) for f in base.iterdir() if f.is_dir() and not f.is_symlink() and _KEY.match(f.name)]
    return sorted(found, key=lambda c: c.last_used, reverse=True)


def remove_caches(caches: list[CacheInfo]) -> int:
    """Delete these cache folders; returns the bytes freed."""
    freed = 0
    for cache in caches:
        shutil.rmtree(cache.folder)
        freed += cache.size
        log.info("removed %s (%.2f GB)", cache.folder, cache.size / 1e9)
    return freed


def describe(made_for: dict[str, Any] | None) -> str:
    """One line naming the settings a cache was made with."""
    if made_for is None:
        return "(made before segvol recorded its settings)"
    pre = made_for.get("preprocess", {})
    parts = [str(made_for.get("dataset", "?"))]
    if pre.get("spacing"):
        parts.append("spacing " + "x".join(f"{s:g}" for s in pre["spacing"]) + " mm")
    if pre.get("intensity_norm"):
        window = pre.get("intensity_window")
        parts.append(f"{pre['intensity_norm']}" + (f" {window}" if pre["intensity_norm"] == "window" else ""))
    if pre.get("roi_size"):
        parts.append("pad to " + "x".join(str(s) for s in pre["roi_size"]))
    return ", ".join(parts)


def format_caches(caches: list[CacheInfo]) -> str:
    """The ``segvol cache`` table."""
    if not caches:
        return "no preprocessing caches"
    lines = [f"{'cache':<16}  {'volumes':>7}  {'size':>9}  {'last used':<16}  made for"]
    for c in caches:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.last_used))
        lines.append(f"{c.key:<16}  {c.volumes:>7}  {c.size / 1e9:>7.2f} GB  {used:<16}  {describe(c.made_for)}")
    total = sum(c.size for c in caches)
    lines.append(f"{len(caches)} cache(s), {total / 1e9:.2f} GB in all")
    return "\n".join(lines)
