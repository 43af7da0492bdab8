"""Atomic writes: a folder is replaced whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from segvol.utils import atomic_dir


def _folder(path: Path, text: str) -> Path:
    path.mkdir()
    (path / "a.txt").write_text(text)
    return path


def test_atomic_dir_replaces_and_leaves_nothing_behind(tmp_path):
    target = _folder(tmp_path / "out", "old")
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary or aside folder left


def test_crash_between_the_renames_keeps_the_old_folder(tmp_path, monkeypatch):
    target = _folder(tmp_path / "out", "old")
    real_rename = os.rename

    def crash(src, dst):  # the new folder's rename onto the target fails (disk, signal, ...)
        if Path(dst) == target:
            raise OSError("injected crash")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="injected crash"):
        with atomic_dir(target, overwrite=True) as tmp:
            (tmp / "b.txt").write_text("new")
    assert (target / "a.txt").read_text() == "old" and not (target / "b.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
