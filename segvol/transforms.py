"""MONAI dictionary transforms for every stage, built from the config in one place.

The deterministic prefix (load, channel first, orientation, 1 mm resampling, intensity normalisation, padding) is
shared by training, validation, inference and caching; training appends the random part (pos/neg patch crops,
geometric augmentation on image and label, photometric augmentation on the image). Inference inverts the prefix
with MONAI's ``Invertd`` so that predictions land on the input's own grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from monai import transforms as mt

from segvol.config import Config

__all__ = ["deterministic_prefix", "random_part", "build_transforms", "inverse_transform"]


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
        mt.LoadImaged(keys=keys, image_only=True),
        mt.EnsureChannelFirstd(keys=keys),
        mt.EnsureTyped(keys="image", dtype="float32", track_meta=True),
    ]
    if has_label:
        steps += list(label_transforms)
    steps += [
        mt.Orientationd(keys=keys, axcodes=pp.orientation),
        mt.Spacingd(keys=keys, pixdim=pp.spacing, mode=modes),
    ]
    if pp.intensity_window is not None:
        lo, hi = pp.intensity_window
        steps.append(mt.ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
    steps += [
        mt.NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
        mt.SpatialPadd(keys=keys, spatial_size=pp.roi_size),
    ]
    return steps


def random_part(cfg: Config, keys: Sequence[str] = ("image", "label")) -> list[Any]:
    """Pos/neg patch crops, then geometric (image + label) and photometric (image only) augmentation."""
    aug, roi = cfg.augment, cfg.preprocess.roi_size
    keys = tuple(keys)
    steps: list[Any] = [
        mt.RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=roi, pos=aug.pos, neg=aug.neg,
                                  num_samples=aug.num_samples),
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
        mt.RandAdjustContrastd(keys="image", gamma=aug.gamma_range, prob=aug.gamma_prob),
        mt.RandScaleIntensityd(keys="image", factors=aug.scale_intensity, prob=aug.scale_intensity_prob),
        mt.RandGaussianNoised(keys="image", std=aug.noise_std, prob=aug.noise_prob),
    ]
    return steps


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
