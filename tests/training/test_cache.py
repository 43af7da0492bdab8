"""The preprocessing cache: hits, invalidation by the prefix's config, and the stored crop positions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from segvol import api
from segvol.config import load_config
from segvol.training.caches import INFO_FILE
from segvol.training.data import cache_key, cached_volumes
from segvol.transforms import INDEX_KEYS, random_part


@pytest.fixture()
def data(tmp_path, imagecas_small):
    root = tmp_path / "imagecas"
    shutil.copytree(imagecas_small, root)
    return root


def _records_and_spec(cfg):
    _, spec, groups, _ = api.resolve_records(cfg)
    return groups["train"][:2], spec


def _cache_files(folder: Path) -> dict[str, int]:
    """The cached volumes (and any temporary file), not the ``cache.json`` each use rewrites."""
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name != INFO_FILE}


def test_disk_cache_hits_and_is_invalidated_by_the_prefix_config(data):
    cfg = load_config("tiny", ["data.cache=disk"], data={"root": str(data)})
    records, spec = _records_and_spec(cfg)
    first = [cached_volumes(records, cfg, spec)[i] for i in range(2)]
    folder = data / ".cache" / cache_key(cfg, spec)
    written = _cache_files(folder)
    assert len(written) == 2 and not any(name.startswith(".") for name in written)  # no temporary files left

    again = [cached_volumes(records, cfg, spec)[i] for i in range(2)]
    assert _cache_files(folder) == written  # read back: nothing preprocessed or rewritten
    for a, b in zip(first, again):
        assert torch.equal(torch.as_tensor(a["image"]), torch.as_tensor(b["image"]))

    assert cache_key(cfg.replace(train={"lr": 0.5}), spec) == cache_key(cfg, spec)  # not a preprocessing change
    other = cfg.replace(preprocess={"spacing": [1.5, 1.5, 1.5]})
    assert cache_key(other, spec) != cache_key(cfg, spec)
    assert cached_volumes(records, other, spec)[0]["image"].shape != first[0]["image"].shape
    assert len(_cache_files(data / ".cache" / cache_key(other, spec))) == 1


def test_regenerated_label_at_the_same_path_is_preprocessed_again(data):
    import nibabel as nib

    cfg = load_config("tiny", ["data.cache=disk"], data={"root": str(data)})
    records, spec = _records_and_spec(cfg)
    before = cached_volumes(records, cfg, spec)[0]
    assert before["label"].sum() > 0
    label_path = Path(records[0]["label"])
    old = nib.load(str(label_path))
    fixed = np.zeros(old.shape, np.uint8)
    fixed[2:12, 2:12, 2:12] = 1  # a corrected label: a different mask in the same file
    nib.save(nib.Nifti1Image(fixed, old.affine, old.header), str(label_path))

    after = cached_volumes(records, cfg, spec)[0]
    assert after["label"].sum() > 0
    assert not torch.equal(torch.as_tensor(after["label"]), torch.as_tensor(before["label"]))
    assert after["label"].sum() == pytest.approx(10**3 * np.prod(old.header.get_zooms()[:3]), rel=0.3)


def test_disk_cache_files_appear_whole_by_rename(data, monkeypatch):
    """Each cache file is written under a temporary name in the cache folder and renamed into place."""
    import os

    cfg = load_config("tiny", ["data.cache=disk"], data={"root": str(data)})
    records, spec = _records_and_spec(cfg)
    folder = data / ".cache" / cache_key(cfg, spec)
    renames = []
    real_replace = os.replace

    def spy(src, dst):
        renames.append((Path(src), Path(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    cached_volumes(records[:1], cfg, spec)[0]
    assert sorted(dst.suffix for _, dst in renames) == [".json", ".pt"]  # the volume, and cache.json
    for src, dst in renames:
        assert src.parent == dst.parent == folder and src.name.startswith(".")


def test_crop_positions_are_stored_and_used(data):
    from segvol.transforms import MAX_BG_INDICES

    cfg = load_config("tiny", ["data.cache=ram", "augment.pos=1", "augment.neg=0", "augment.enabled=false"],
                      data={"root": str(data)})
    records, spec = _records_and_spec(cfg)
    item = cached_volumes(records, cfg, spec)[0]
    fg, bg = np.asarray(item[INDEX_KEYS[0]]), np.asarray(item[INDEX_KEYS[1]])
    label = np.asarray(item["label"])[0]
    assert fg.dtype == np.int32 and bg.dtype == np.int32
    assert np.array_equal(fg, np.flatnonzero(label.ravel() > 0))  # every foreground voxel, in order
    assert 0 < bg.size <= MAX_BG_INDICES and not label.ravel()[bg].any()  # background voxels only

    from monai.transforms import Compose

    crop = Compose(random_part(cfg))
    crop.set_random_state(0)
    for patch in crop(item):  # pos=1, neg=0: every patch holds the foreground voxel it was centred on
        assert not set(patch) & set(INDEX_KEYS) and patch["label"].any()  # positions consumed, not passed on

    # the stored positions steer the crop: point them at one background voxel marked in the image
    marked = dict(item)
    target = int(bg[bg.size // 2])
    image = item["image"].clone()
    image.view(-1)[target] = 12345.0
    marked["image"], marked[INDEX_KEYS[0]] = image, torch.tensor([target], dtype=torch.int32)
    for patch in crop(marked):
        assert (patch["image"] == 12345.0).any()
