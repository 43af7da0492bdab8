"""`segvol cache`: what each preprocessing cache was made for, its size and last use, and removing the ones that
earlier settings left behind."""

from __future__ import annotations

import json
import shutil

import pytest

from segvol import api
from segvol.cli import main
from segvol.config import load_config
from segvol.errors import SegvolError
from segvol.training.caches import INFO_FILE, describe, list_caches
from segvol.training.data import cache_key, cached_volumes


@pytest.fixture()
def data(tmp_path, imagecas_small):
    root = tmp_path / "imagecas"
    shutil.copytree(imagecas_small, root)
    return root


def _fill(data, *overrides):
    """Cache two volumes under the tiny preset with ``overrides``; returns the cache folder."""
    cfg = load_config("tiny", ["data.cache=disk", *overrides], data={"root": str(data)})
    _, spec, groups, _ = api.resolve_records(cfg)
    dataset = cached_volumes(groups["train"][:2], cfg, spec)
    for i in range(2):
        dataset[i]
    return data / ".cache" / cache_key(cfg, spec)


def test_each_cache_says_what_it_holds_and_clean_keeps_the_one_in_use(data, capsys):
    old = _fill(data, "preprocess.spacing=[1.5,1.5,1.5]")
    info = json.loads((old / INFO_FILE).read_text())
    info["last_used"] = 1.0  # a cache last used long ago ...
    (old / INFO_FILE).write_text(json.dumps(info))
    current = _fill(data)  # ... and the one the current settings use
    stray = data / ".cache" / "notes"  # not a cache segvol made: never touched
    stray.mkdir()

    caches = list_caches(data)
    assert [c.key for c in caches] == [current.name, old.name]  # most recently used first
    assert [c.volumes for c in caches] == [2, 2] and all(c.size > 0 for c in caches)
    assert "spacing 1.5x1.5x1.5 mm" in describe(caches[1].made_for)
    assert "spacing 1x1x1 mm" in describe(caches[0].made_for) and "pad to 32x32x32" in describe(caches[0].made_for)

    assert main(["cache", str(data)]) == 0
    listing = capsys.readouterr().out
    assert current.name in listing and old.name in listing and "2 cache(s)" in listing

    assert main(["cache", str(data), "--clean"]) == 0
    out = capsys.readouterr().out
    assert f"freed {caches[1].size / 1e9:.2f} GB" in out
    assert current.is_dir() and not old.exists() and stray.is_dir()
    assert len([p for p in current.iterdir() if p.suffix == ".pt"]) == 2  # the kept cache is whole

    assert main(["cache", str(data), "--all"]) == 0
    assert not current.exists() and stray.is_dir() and list_caches(data) == []


def test_opening_a_cache_mentions_the_stale_ones(data, caplog):
    _fill(data, "preprocess.spacing=[1.5,1.5,1.5]")
    with caplog.at_level("INFO", logger="segvol"):
        _fill(data)
    assert "1 more preprocessing cache(s) from other settings" in caplog.text


def test_a_cache_from_before_cache_json_is_listed(data):
    folder = _fill(data)
    (folder / INFO_FILE).unlink()
    (cache,) = list_caches(data)
    assert cache.volumes == 2 and cache.made_for is None and "before" in describe(None)


def test_a_missing_data_folder_is_one_line(tmp_path, capsys):
    with pytest.raises(SegvolError, match="no such data folder"):
        api.caches(data=tmp_path / "nope")
    assert main(["cache", str(tmp_path / "nope")]) == 2
    assert "no such data folder" in capsys.readouterr().err
