"""MONAI dictionary transforms for every stage, built from the config in one place.

The deterministic prefix (load, channel first, orientation, 1 mm resampling, intensity normalisation, padding) is
shared by training, validation, inference and caching; the training cache also stores where the foreground and
background voxels are (:func:`crop_indices`), so that the random part (pos/neg patch crops, geometric augmentation on
image and label, photometric augmentation on the image) does not search the label volume for every sample.
Inference inverts the prefix with MONAI's ``Invertd`` so that predictions land on the input's own grid.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai import transforms as mt
from monai.data import NibabelReader

from segvol.config import Config
from segvol.errors import SegvolError

__all__ = ["deterministic_prefix", "intensity_steps", "load_images", "ThreadSafeNibabelReader", "ChannelNormalize",
           "ChannelNormalized", "nonzero_voxels",
           "random_part", "build_transforms", "inverse_transform", "crop_indices",
           "INDEX_KEYS", "MAX_BG_INDICES"]

INDEX_KEYS = ("label_fg_indices", "label_bg_indices")  # FgBgToIndicesd's default names for the key "label"
MAX_BG_INDICES = 200_000  # background centres kept per volume: a fixed random subset (uniform over the background)


_READ = threading.local()  # the files of the read in progress, per thread (see ThreadSafeNibabelReader)


class ThreadSafeNibabelReader(NibabelReader):
    """MONAI's ``NibabelReader`` with the names of the files being read kept per thread.

    MONAI's ``read()`` stores them on the reader for ``get_data()``, which pairs them with the images it stacks
    (``zip``). ``CacheDataset`` fills its cache from a thread pool whose threads share one ``LoadImaged`` and so one
    reader: a thread reading a one-file label between another thread's ``read()`` and ``get_data()`` of a four-file
    BraTS image cut that image to one channel (a 1-channel volume for a 4-channel model, now and then).
    """

    @property
    def filenames(self) -> Any:
        return getattr(_READ, "filenames", ())

    @filenames.setter
    def filenames(self, value: Any) -> None:
        _READ.filenames = value


def load_images(keys: Sequence[str]) -> mt.LoadImaged:
    """``LoadImaged`` whose NIfTI reader is safe to share between threads; other formats (a DICOM series folder)
    fall back to MONAI's default readers."""
    # MONAI's annotation names a reader class or name, but LoadImage takes a reader instance as well
    return mt.LoadImaged(keys=tuple(keys), image_only=True, reader=ThreadSafeNibabelReader())  # type: ignore[arg-type]


def deterministic_prefix(cfg: Config, keys: Sequence[str] = ("image", "label"),
                         label_transforms: Sequence[Any] = ()) -> list[Any]:
    """Load → channel first → (label conversion) → orientation → spacing → window → normalise → pad.

    Args:
        cfg: resolved configuration (``preprocess`` section).
        keys: ``("image", "label")`` for training and validation, ``("image",)`` for inference.
        label_transforms: dataset-specific label conversions (e.g. BraTS regions), applied right after loading.
    """
    pp = cfg.preprocess
    keys = tuple(keys)
    has_label = "label" in keys
    modes = tuple("nearest" if k == "label" else "bilinear" for k in keys)
    steps: list[Any] = [
        load_images(keys),
        mt.EnsureChannelFirstd(keys=keys),
        mt.EnsureTyped(keys="image", dtype="float32", track_meta=True),
    ]
    if has_label:
        steps += list(label_transforms)
    steps.append(mt.Orientationd(keys=keys, axcodes=pp.orientation))
    if pp.crop_nonzero:  # the box of the non-zero voxels of any image channel (nnU-Net's crop); inverted at inference
        steps.append(mt.CropForegroundd(keys=keys, source_key="image", select_fn=nonzero_voxels, allow_smaller=True))
    steps += [
        mt.Spacingd(keys=keys, pixdim=pp.spacing, mode=modes, dtype=np.float32),  # float64 by default: 2x the memory
    ]
    steps += intensity_steps(cfg)
    steps.append(mt.SpatialPadd(keys=keys, spatial_size=pp.roi_size))
    return steps


def intensity_steps(cfg: Config) -> list[Any]:
    """Intensity normalisation of ``image`` by ``preprocess.intensity_norm`` (docs/normalisation.md):

    - ``window`` (CT): clip HU to ``intensity_window`` (mapped to [0, 1]), then z-score over all voxels: one
      increasing linear map per scan, so HU order is kept (air <= fat < muscle < lumen).
    - ``nonzero`` (MRI): z-score over each channel's non-zero voxels; the background stays 0.
    - ``channels`` (``segvol plan``): each channel by its entry of ``preprocess.channels`` (:class:`ChannelNormalize`).
    - ``window_nonzero``: the mapping of checkpoints saved before ``intensity_norm`` existed (window, then the
      non-zero z-score: clipped air becomes 0, the mean of the tissue), kept so they infer as trained.
    """
    pp = cfg.preprocess
    if pp.intensity_norm == "channels":
        return [ChannelNormalized(keys="image", channels=pp.channels)]
    steps: list[Any] = []
    if pp.intensity_norm in ("window", "window_nonzero"):
        lo, hi = pp.intensity_window  # type: ignore[misc]  # the config requires a window for these
        steps.append(mt.ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
    steps.append(mt.NormalizeIntensityd(keys="image", nonzero=pp.intensity_norm != "window", channel_wise=True))
    return steps


def nonzero_voxels(x: Any) -> Any:
    """``x != 0``: the voxels ``CropForegroundd`` keeps the box of (MONAI's default, ``x > 0``, drops negative HU)."""
    return x != 0


class ChannelNormalize(mt.Transform):
    """Normalise each channel of a ``(C, ...)`` image by its own scheme (``preprocess.channels``, docs/plan.md).

    - ``ct``: clip to ``clip``, then ``(x - mean) / std`` with the dataset's constants: one increasing map.
    - ``zscore``: the image's own mean and std over all voxels.
    - ``zscore_nonzero``: the same over the channel's non-zero voxels; the background stays 0.
    - ``none``: unchanged.

    A ``clip`` on a z-score channel is applied before its statistics are taken.
    """

    backend = mt.NormalizeIntensity.backend

    def __init__(self, channels: Sequence[dict[str, Any]]) -> None:
        self.channels = [dict(c) for c in channels]
        self._zscore = mt.NormalizeIntensity(nonzero=False)
        self._nonzero = mt.NormalizeIntensity(nonzero=True)

    def __call__(self, img: Any) -> Any:
        if img.shape[0] != len(self.channels):
            raise SegvolError(f"preprocess.channels names {len(self.channels)} channel(s), the image has "
                              f"{img.shape[0]}")
        tensor = isinstance(img, torch.Tensor)
        parts = []
        for c, entry in enumerate(self.channels):
            x = img[c:c + 1]
            if entry.get("clip") is not None:
                lo, hi = entry["clip"]
                x = x.clamp(lo, hi) if tensor else np.clip(x, lo, hi)
            if entry["scheme"] == "ct":
                x = (x - entry["mean"]) / entry["std"]
            elif entry["scheme"] == "zscore":
                x = self._zscore(x)
            elif entry["scheme"] == "zscore_nonzero":
                x = self._nonzero(x)
            parts.append(x)
        return torch.cat(parts, dim=0) if tensor else np.concatenate(parts, axis=0)


class ChannelNormalized(mt.MapTransform):
    """Dictionary twin of :class:`ChannelNormalize`."""

    backend = ChannelNormalize.backend

    def __init__(self, keys: Any, channels: Sequence[dict[str, Any]], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalize = ChannelNormalize(channels)

    def __call__(self, data: Any) -> dict[Any, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalize(d[key])
        return d


def _compact_indices(indices: Any, limit: int | None = None) -> np.ndarray:
    """Flat voxel indices as int32 (int64 beyond 2^31 voxels), thinned to a fixed random subset of ``limit``."""
    idx = np.asarray(indices)
    if limit is not None and idx.size > limit:
        idx = np.sort(idx[np.random.default_rng(idx.size).choice(idx.size, limit, replace=False)])
    return idx.astype(np.int32 if idx.size == 0 or idx.max() < 2**31 else np.int64)


def _thin_background(indices: Any) -> np.ndarray:
    return _compact_indices(indices, MAX_BG_INDICES)


def crop_indices() -> list[Any]:
    """Foreground and background voxel positions of ``label`` (any channel non-zero is foreground), computed once
    at the end of the cached prefix and read by :func:`random_part`'s ``RandCropByPosNegLabeld``: every foreground
    voxel, and at most :data:`MAX_BG_INDICES` background voxels."""
    return [mt.FgBgToIndicesd(keys="label"),
            mt.Lambdad(keys=INDEX_KEYS[0], func=_compact_indices),
            mt.Lambdad(keys=INDEX_KEYS[1], func=_thin_background)]


def random_part(cfg: Config, keys: Sequence[str] = ("image", "label")) -> list[Any]:
    """Pos/neg patch crops, then geometric (image + label) and photometric (image only) augmentation. The crop
    uses the positions :func:`crop_indices` stored with the volume when present, else searches the label."""
    aug, roi = cfg.augment, cfg.preprocess.roi_size
    keys = tuple(keys)
    steps: list[Any] = [
        mt.RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=roi, pos=aug.pos, neg=aug.neg,
                                  num_samples=aug.num_samples, fg_indices_key=INDEX_KEYS[0],
                                  bg_indices_key=INDEX_KEYS[1]),
    ]
    if not aug.enabled:
        return steps
    rad = math.radians(aug.rotate_range_deg)
    modes = ("bilinear", "nearest")
    steps += [
        mt.RandRotated(keys=keys, range_x=rad, range_y=rad, range_z=rad, prob=aug.rotate_prob, mode=modes,
                       padding_mode="zeros"),
        *[mt.RandFlipd(keys=keys, spatial_axis=axis, prob=aug.flip_prob) for axis in range(3)],
        mt.RandZoomd(keys=keys, min_zoom=aug.zoom_range[0], max_zoom=aug.zoom_range[1], prob=aug.zoom_prob,
                     mode=("trilinear", "nearest"), padding_mode="constant"),
        mt.RandAffined(keys=keys, prob=aug.affine_prob, mode=modes, padding_mode="zeros",
                       translate_range=(aug.affine_translate,) * 3, scale_range=(aug.affine_scale,) * 3,
                       rotate_range=(rad / 3,) * 3),
        *_elastic(aug, keys),
        mt.RandAdjustContrastd(keys="image", gamma=aug.gamma_range, prob=aug.gamma_prob),
        mt.RandScaleIntensityd(keys="image", factors=aug.scale_intensity, prob=aug.scale_intensity_prob),
        mt.RandGaussianNoised(keys="image", std=aug.noise_std, prob=aug.noise_prob),
    ]
    return steps


def _elastic(aug: Any, keys: tuple[str, ...]) -> list[Any]:
    """Elastic deformation (``augment.elastic_prob``; off at 0, so the other transforms' random streams stay as
    they were): a smoothed random displacement field, image bilinear, label nearest."""
    if aug.elastic_prob <= 0:
        return []
    return [mt.Rand3DElasticd(keys=keys, sigma_range=aug.elastic_sigma, magnitude_range=aug.elastic_magnitude,
                              prob=aug.elastic_prob, mode=("bilinear", "nearest"), padding_mode="zeros")]


def build_transforms(cfg: Config, train: bool, keys: Sequence[str] = ("image", "label"),
                     label_transforms: Sequence[Any] = ()) -> mt.Compose:
    """The whole chain for one stage: the prefix, plus the random part when ``train``."""
    steps = deterministic_prefix(cfg, keys, label_transforms)
    if train:
        steps += random_part(cfg, keys)
    return mt.Compose(steps)


def inverse_transform(prefix: mt.Compose, key: str = "pred", orig_key: str = "image", nearest: bool = True
                      ) -> mt.Invertd:
    """Undo ``prefix`` on ``key`` using ``orig_key``'s recorded operations: nearest-neighbour for label maps,
    the forward interpolation (bilinear) for probabilities (``nearest=False``)."""
    return mt.Invertd(keys=key, transform=prefix, orig_keys=orig_key, nearest_interp=nearest, to_tensor=True)
