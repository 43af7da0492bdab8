"""The plan rules: fingerprint statistics in, spacing, normalisation, network topology and patch size out.

The rules are nnU-Net v2's (``ExperimentPlanner``, ``get_pool_and_conv_props``, the normalisation schemes), read
and rewritten; segvol's own memory model (:mod:`segvol.plan.memory`) sizes the patch. Each function is pure and
works on plain arrays, so it is tested without files. Sources and differences: docs/plan.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segvol.plan.fingerprint import ChannelStats

__all__ = ["ANISOTROPY", "MIN_EDGE", "NONZERO_CROP_RATIO", "Topology", "target_spacing", "resampled_shape",
           "normalisation", "topology", "initial_patch", "coarse_axis"]

ANISOTROPY = 3.0  # nnU-Net's ANISO_THRESHOLD: spacing ratio (and inverse size ratio) that marks a coarse axis
COARSE_PERCENTILE = 10.0  # the coarse axis is resampled to this percentile of its spacings, not the median
NONZERO_CROP_RATIO = 0.75  # z-score inside the non-zero mask when cropping kept less than this share of voxels
MIN_EDGE = 4  # voxels per axis the deepest feature map keeps (nnU-Net's UNet_featuremap_min_edge_length)
INITIAL_PATCH_VOXELS = 256 ** 3  # the first patch has this volume before it is clipped and shrunk


def coarse_axis(spacing: Sequence[float]) -> int | None:
    """The axis whose spacing is more than :data:`ANISOTROPY` times every other's, or None."""
    s = np.asarray(spacing, dtype=np.float64)
    worst = int(np.argmax(s))
    others = np.delete(s, worst)
    return worst if s[worst] > ANISOTROPY * others.max() else None


def target_spacing(spacings: np.ndarray, shapes_cropped: np.ndarray) -> tuple[np.ndarray, str]:
    """The median spacing per axis, with the anisotropy rule for a coarse axis.

    When the median spacing of one axis is more than 3 x the others' and its median size (after cropping) less
    than a third of theirs, that axis gets the 10th percentile of its spacings instead (never finer than the other
    axes): fewer interpolated slices than the median would give. Returns the spacing and which rule chose it.
    """
    target = np.median(spacings, axis=0)
    size = np.median(shapes_cropped, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != worst]
    aniso_spacing = target[worst] > ANISOTROPY * max(target[a] for a in others)
    aniso_size = size[worst] * ANISOTROPY < min(size[a] for a in others)
    if not (aniso_spacing and aniso_size):
        return target, "median spacing per axis"
    coarse = float(np.percentile(spacings[:, worst], COARSE_PERCENTILE))
    target[worst] = max(coarse, max(target[a] for a in others))
    return target, f"median per axis; axis {worst} (coarse) at the 10th percentile of its spacings"


def resampled_shape(spacings: np.ndarray, shapes: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The median over cases of each case's (cropped) shape after resampling to ``target``."""
    new = np.rint(shapes * spacings / np.asarray(target)[None, :])
    return np.median(new, axis=0)


def normalisation(channels: Sequence[ChannelStats], median_relative_size: float) -> list[dict[str, Any]]:
    """One ``preprocess.channels`` entry per channel.

    CT: clip to the foreground 0.5 / 99.5 percentiles, then the foreground mean and std (one increasing map, the
    same for every case). ``nonorm`` channels: none. Anything else: z-score per image, inside the non-zero mask
    when cropping to it shrank the median case below :data:`NONZERO_CROP_RATIO` of its voxels.
    """
    out = []
    nonzero = median_relative_size < NONZERO_CROP_RATIO
    for ch in channels:
        stats = {"mean": _num(ch.mean), "std": _num(ch.std)}
        if ch.modality.casefold() == "ct":
            out.append({"name": ch.name, "scheme": "ct", "clip": [_num(ch.p00_5), _num(ch.p99_5)], **stats})
        elif ch.name.casefold() == "nonorm":
            out.append({"name": ch.name, "scheme": "none", "clip": None, **stats})
        else:
            out.append({"name": ch.name, "scheme": "zscore_nonzero" if nonzero else "zscore", "clip": None, **stats})
    return out


def _num(value: float) -> float | None:
    return None if not math.isfinite(value) else round(float(value), 4)


@dataclass(frozen=True)
class Topology:
    """A U-Net's per-axis layout for one patch: conv kernels and strides per stage (first stride 1), the patch
    padded to what the strides divide, and that divisor."""

    kernels: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    patch: tuple[int, ...]
    divisor: tuple[int, ...]

    @property
    def isotropic(self) -> bool:
        """Every stage pools every axis and every kernel is 3 wide."""
        return all(len(set(s)) == 1 for s in self.strides) and all(set(k) == {3} for k in self.kernels)


def topology(spacing: Sequence[float], patch: Sequence[float], min_edge: int = MIN_EDGE) -> Topology:
    """Pool an axis while its feature map keeps at least ``2 * min_edge`` voxels and its (pooled) spacing is within
    a factor 2 of the finest poolable axis; a lone axis pools only down to ``3 * min_edge``. A kernel is 1 wide
    along an axis until that axis's spacing comes within a factor 2 of the finest, then 3. The bottleneck is 3³."""
    sp = [float(s) for s in spacing]
    size = [float(p) for p in patch]
    dims = len(sp)
    kernel = [1] * dims
    kernels: list[tuple[int, ...]] = []
    strides: list[tuple[int, ...]] = [(1,) * dims]
    pools = [0] * dims
    while True:
        axes = [a for a in range(dims) if size[a] >= 2 * min_edge]
        if not axes:
            break
        finest = min(sp[a] for a in axes)
        axes = [a for a in axes if sp[a] / finest < 2]
        if not axes or (len(axes) == 1 and size[axes[0]] < 3 * min_edge):
            break
        kernel = [3 if k == 3 or sp[d] / min(sp) < 2 else 1 for d, k in enumerate(kernel)]
        kernels.append(tuple(kernel))
        strides.append(tuple(2 if a in axes else 1 for a in range(dims)))
        for a in axes:
            pools[a] += 1
            sp[a] *= 2
            size[a] = math.ceil(size[a] / 2)
    kernels.append((3,) * dims)
    divisor = tuple(2 ** p for p in pools)
    padded = tuple(int(math.ceil(p / d) * d) for p, d in zip(patch, divisor))
    return Topology(tuple(kernels), tuple(strides), padded, divisor)


def initial_patch(spacing: Sequence[float], median_shape: Sequence[float]) -> list[float]:
    """A patch with the aspect of ``1 / spacing`` (equal extent in mm per axis) and the volume of 256³ voxels,
    clipped to the resampled median shape. A side clipped to a fractional median stays fractional: the topology
    is decided on it (an axis pools only where the median case has the voxels) before it is padded up."""
    inv = 1.0 / np.asarray(spacing, dtype=np.float64)
    scale = (INITIAL_PATCH_VOXELS / np.prod(inv)) ** (1 / len(inv))
    return [max(1.0, min(float(round(v * scale)), float(m))) for v, m in zip(inv, median_shape)]
