"""Training data: the deterministic prefix cached once (RAM, disk or GPU), the random part applied per step."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segvol.config import Config, config_to_dict
from segvol.data import TaskSpec
from segvol.data.records import Record
from segvol.transforms import MAX_BG_INDICES, crop_indices, deterministic_prefix, random_part

__all__ = ["cache_key", "cached_volumes", "Augmented", "augment_seed", "estimate_cache_bytes"]

log = logging.getLogger(__name__)
CACHE_FORMAT = 2  # bump when the prefix's code changes in a way the config does not show


def cache_key(cfg: Config, spec: TaskSpec) -> str:
    """Hash of everything that determines the prefix's output: a config change invalidates the cache."""
    what = {"format": CACHE_FORMAT, "preprocess": config_to_dict(cfg.preprocess), "dataset": cfg.data.dataset,
            "labels": cfg.data.labels, "modalities": list(spec.modalities)}
    return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def estimate_cache_bytes(records: list[Record], cfg: Config) -> int:
    """Bytes the prefix's float32 output takes for ``records`` (from headers only)."""
    import nibabel as nib

    total = 0
    for rec in records:
        paths = rec["image"] if isinstance(rec["image"], (list, tuple)) else [rec["image"]]
        hdr = nib.load(str(paths[0])).header
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
    from monai.data import CacheDataset, Dataset, PersistentDataset
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
        log.info("preprocessing cache: %s", folder)
        return PersistentDataset(records, Compose(steps), cache_dir=folder)
    if mode == "none":
        return Dataset(records, Compose(steps))
    from segvol.errors import SegvolError

    raise SegvolError(f"data.cache={mode!r}: expected ram, disk or none")


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
