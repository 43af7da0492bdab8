"""Training data: the deterministic prefix cached once (RAM, disk or GPU), the random part applied per step."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import pickle
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from monai.data import PersistentDataset
from monai.utils import convert_to_tensor

from segvol.config import Config, config_to_dict
from segvol.labels import TaskSpec
from segvol.data.records import Record
from segvol.transforms import MAX_BG_INDICES, crop_indices, deterministic_prefix, random_part
from segvol.utils import atomic_path

__all__ = ["cache_key", "cache_settings", "record_identity", "DiskCache", "cached_volumes", "Augmented", "augment_seed",
           "estimate_cache_bytes"]

log = logging.getLogger(__name__)
CACHE_FORMAT = 3  # bump when the prefix's code changes in a way the config does not show
FILE_KEYS = ("image", "label")  # record keys holding file paths (one, or a list of sequences)


def cache_settings(cfg: Config, spec: TaskSpec) -> dict[str, Any]:
    """Everything that determines the prefix's output (recorded in each disk cache's ``cache.json``)."""
    return {"format": CACHE_FORMAT, "preprocess": config_to_dict(cfg.preprocess), "dataset": cfg.data.dataset,
            "labels": cfg.data.labels, "modalities": list(spec.modalities)}


def cache_key(cfg: Config, spec: TaskSpec) -> str:
    """Hash of :func:`cache_settings`: a config change invalidates the cache."""
    return hashlib.sha1(json.dumps(cache_settings(cfg, spec), sort_keys=True).encode()).hexdigest()[:16]


def _files(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [f for v in value for f in _files(v)]
    return [str(value)] if isinstance(value, (str, Path)) else []


def record_identity(record: Record) -> bytes:
    """Disk-cache name of one record: its paths and each file's size and modification time (ns), so a scan or
    label regenerated at the same path is preprocessed again. A stat per file: cheap enough for every access."""
    what: list[Any] = [[key, str(record[key])] for key in sorted(record) if key not in FILE_KEYS]
    for key in FILE_KEYS:
        for name in _files(record.get(key)):
            try:
                st = Path(name).stat()
                what.append([key, str(Path(name).resolve()), st.st_size, st.st_mtime_ns])
            except OSError:
                what.append([key, name, None, None])  # missing: the prefix reports it when it loads the file
    return hashlib.sha1(json.dumps(what).encode()).hexdigest().encode()


class DiskCache(PersistentDataset):
    """MONAI's PersistentDataset, with each file written to a temporary name in the cache folder and renamed into
    place, so processes sharing the folder only ever read whole files (MONAI's own temporary folder may sit on
    another file system, where its move is a copy that a reader can catch half-written)."""

    def _cachecheck(self, item_transformed: Any) -> Any:
        if self.cache_dir is None:
            return super()._cachecheck(item_transformed)
        hashfile = Path(self.cache_dir) / f"{self.hash_func(item_transformed).decode()}{self.transform_hash}.pt"
        if hashfile.is_file():
            try:
                return torch.load(hashfile, weights_only=self.weights_only)
            except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:  # cut short outside segvol
                log.warning("%s: unreadable cache file (%s); preprocessing again", hashfile, exc)
        out = self._pre_transform(copy.deepcopy(item_transformed))
        with atomic_path(hashfile) as tmp:
            torch.save(convert_to_tensor(out, convert_numeric=False, track_meta=self.track_meta), tmp)
        return out


def estimate_cache_bytes(records: list[Record], cfg: Config) -> int:
    """Bytes the prefix's float32 output takes for ``records`` (from headers only)."""
    import nibabel as nib
    from nibabel.spatialimages import SpatialImage

    total = 0
    for rec in records:
        paths = rec["image"] if isinstance(rec["image"], (list, tuple)) else [rec["image"]]
        hdr = cast(SpatialImage, nib.load(str(paths[0]))).header
        shape, zooms = np.asarray(hdr.get_data_shape()[:3]), np.asarray(hdr.get_zooms()[:3])
        out = np.maximum(np.ceil(shape * zooms / np.asarray(cfg.preprocess.spacing)), cfg.preprocess.roi_size)
        channels = len(paths) if len(paths) > 1 else (hdr.get_data_shape() + (1,))[3]
        total += int(np.prod(out)) * 4 * (channels + (1 if rec.get("label") else 0))
        total += MAX_BG_INDICES * 4 if rec.get("label") else 0  # crop positions (foreground ones not counted)
    return total


def cached_volumes(records: list[Record], cfg: Config, spec: TaskSpec, device: torch.device | None = None,
                   keys: tuple[str, ...] = ("image", "label")) -> Any:
    """A dataset of preprocessed volumes: each record passes the deterministic prefix once, and labelled ones get
    their foreground/background crop positions (:func:`segvol.transforms.crop_indices`; validation volumes too, so
    one disk cache serves any split).

    ``cfg.data.cache``: ``ram`` keeps results in memory (on ``device``, as plain tensors, when one is given: the
    GPU's memory on CUDA), ``disk`` writes them to
    ``<data.root>/.cache/<cache_key>/`` for later runs, ``none`` recomputes every time.
    """
    from monai.data import CacheDataset, Dataset
    from monai.transforms import Compose, EnsureTyped

    steps = deterministic_prefix(cfg, keys, spec.label_transforms)
    if "label" in keys:
        steps += crop_indices()
    mode = cfg.data.cache
    if mode == "ram":
        if device is not None:
            steps.append(EnsureTyped(keys=keys, device=device, track_meta=False))
        size = estimate_cache_bytes(records, cfg)
        log.info("caching %d volume(s) in %s: about %.2f GB", len(records),
                 "GPU memory" if device is not None and device.type != "cpu" else "RAM", size / 1e9)
        return CacheDataset(records, Compose(steps), cache_rate=cfg.data.cache_rate, num_workers=None,
                            progress=False)
    if mode == "disk":
        folder = Path(cfg.data.root) / ".cache" / cache_key(cfg, spec)
        folder.mkdir(parents=True, exist_ok=True)
        _open_disk_cache(folder, cache_settings(cfg, spec))
        return DiskCache(records, Compose(steps), cache_dir=folder, hash_func=record_identity)
    if mode == "none":
        return Dataset(records, Compose(steps))
    from segvol.errors import SegvolError

    raise SegvolError(f"data.cache={mode!r}: expected ram, disk or none")


def _open_disk_cache(folder: Path, settings: dict[str, Any]) -> None:
    """Mark the cache as used now, and say what the caches of earlier settings beside it take up."""
    from segvol.training.caches import list_caches, mark_used

    mark_used(folder, settings)
    log.info("preprocessing cache: %s", folder)
    others = [c for c in list_caches(folder.parent.parent) if c.key != folder.name]
    if others:
        log.info("%d more preprocessing cache(s) from other settings in %s take %.2f GB; `segvol cache %s` lists "
                 "them, `--clean` removes them", len(others), folder.parent, sum(c.size for c in others) / 1e9,
                 folder.parent.parent)


def augment_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The augmentation stream of one rank in one epoch: distinct per rank, and a function of ``(seed, epoch,
    rank)`` only, so a resumed run draws what the uninterrupted one drew."""
    return seed * 1_000_003 + epoch + 100_003 * rank


class Augmented(torch.utils.data.Dataset):
    """The random part (crops + augmentation) over a dataset of cached volumes; reseedable per epoch.

    With ``device`` (``train.gpu_augment``; any ``torch.device``) the volumes are moved there as plain tensors and
    the crops and augmentation run on that device; without, they run on MONAI MetaTensors wherever they are.
    """

    def __init__(self, volumes: Any, cfg: Config, device: torch.device | None = None) -> None:
        from monai.transforms import Compose, EnsureTyped

        self.volumes = volumes
        steps = random_part(cfg)
        if device is not None:
            steps.insert(0, EnsureTyped(keys=("image", "label"), device=device, track_meta=False))
        self.transform = Compose(steps)

    def __len__(self) -> int:
        return len(self.volumes)

    def reseed(self, seed: int) -> None:
        self.transform.set_random_state(seed=seed % (2**32))

    def __getitem__(self, index: int) -> Any:
        from monai.transforms import apply_transform

        return apply_transform(self.transform, self.volumes[index])
