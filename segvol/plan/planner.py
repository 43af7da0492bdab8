"""Fingerprint -> :class:`Plan`: the rules of :mod:`segvol.plan.rules` under the memory model of
:mod:`segvol.plan.memory`."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segvol.plan.fingerprint import Fingerprint
from segvol.plan.memory import GB, parameter_count, training_bytes
from segvol.plan.rules import Topology, initial_patch, normalisation, resampled_shape, target_spacing, topology

__all__ = ["Plan", "make_plan", "choose_network", "BASIC_UNET_FEATURES", "MAX_FEATURES", "BASE_FEATURES",
           "MIN_BATCH", "MAX_DATASET_SHARE"]

log = logging.getLogger(__name__)

BASE_FEATURES = 32  # features of the first stage, doubled per stage up to MAX_FEATURES (nnU-Net's 3D numbers)
MAX_FEATURES = 320
BASIC_UNET_FEATURES = (32, 64, 128, 256, 512, 32)  # segvol's preset BasicUNet (4 poolings)
MIN_BATCH = 2
MIN_SIDE = 8  # the patch is not shrunk below this many voxels per axis (or the median shape, where smaller)
MAX_DATASET_SHARE = 0.05  # one batch sees at most 5 % of the dataset's voxels (nnU-Net's overfitting cap)


@dataclass(frozen=True)
class Plan:
    """What ``segvol plan`` decided, with the statistics behind it.

    Attributes:
        dataset / root / base: the dataset adapter, the data folder and the preset the plan sits on.
        spacing: target spacing (mm) in RAS axis order; patch: training and sliding-window patch, same order.
        batch: patches per step (``augment.num_samples``); channels: ``preprocess.channels`` entries.
        network: ``{"name", "kwargs", "kernels", "strides"}``; memory: budget and model figures (GB).
        rules: which statistic gave each choice; fingerprint: its summary; warnings: bad-dataset lines.
    """

    dataset: str
    root: str
    base: str
    spacing: tuple[float, float, float]
    patch: tuple[int, int, int]
    batch: int
    crop_nonzero: bool
    channels: tuple[dict[str, Any], ...]
    network: dict[str, Any]
    loss: str
    memory: dict[str, Any]
    median_shape: tuple[float, ...]
    rules: dict[str, str] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def _filters(stages: int) -> list[int]:
    return [min(MAX_FEATURES, BASE_FEATURES * 2 ** i) for i in range(stages)]


def choose_network(topo: Topology) -> dict[str, Any]:
    """BasicUNet (segvol's preset network) where the topology is isotropic with at least 4 poolings and the patch
    takes its 4 poolings (a multiple of 16, at least 32); else a DynUNet with the topology's per-axis kernels and
    strides (nnU-Net's layout: two convolutions per stage, instance norm, leaky ReLU)."""
    if topo.isotropic and len(topo.strides) >= 5 and all(p % 16 == 0 and p >= 32 for p in topo.patch):
        levels = [1, 2, 2, 2, 2]
        return {"name": "basic_unet", "features": list(BASIC_UNET_FEATURES),
                "kwargs": {}, "kernels": [[3, 3, 3]] * 5, "strides": [[s] * 3 for s in levels],
                "filters": list(BASIC_UNET_FEATURES[:5])}
    kernels = [list(k) for k in topo.kernels]
    strides = [list(s) for s in topo.strides]
    filters = _filters(len(strides))
    kwargs = {"kernel_size": kernels, "strides": strides, "upsample_kernel_size": strides[1:], "filters": filters}
    return {"name": "dynunet", "kwargs": kwargs, "kernels": kernels, "strides": strides, "filters": filters}


def _estimate(net: dict[str, Any], patch: tuple[int, ...], batch: int, in_ch: int, out_ch: int, device: str) -> int:
    build = {"spatial_dims": 3, "in_channels": in_ch, "out_channels": out_ch, **net["kwargs"]}
    if net["name"] == "basic_unet":
        build["features"] = net["features"]
    params = parameter_count(net["name"], json.dumps(build, sort_keys=True))
    return training_bytes(patch, batch, in_ch, out_ch, net["filters"], net["strides"], params, device)


def _fit_patch(spacing: np.ndarray, median: np.ndarray, budget: float, in_ch: int, out_ch: int, device: str
               ) -> tuple[Topology, dict[str, Any], int]:
    """The largest patch (from the spacing's aspect, clipped to the median shape) whose step at batch
    :data:`MIN_BATCH` fits ``budget`` bytes: shrink the axis largest relative to the median shape, one divisor at
    a time. Returns the topology, the network and the modelled bytes."""
    patch: list[float] = initial_patch(list(spacing), list(median))
    for _ in range(10_000):
        topo = topology(list(spacing), patch)
        net = choose_network(topo)
        need = _estimate(net, topo.patch, MIN_BATCH, in_ch, out_ch, device)
        if need <= budget:
            return topo, net, need
        order = np.argsort([p / m for p, m in zip(topo.patch, median)])[::-1]
        for axis in order:
            smaller = topo.patch[axis] - topo.divisor[axis]
            if smaller >= min(MIN_SIDE, int(median[axis])):
                patch = [float(p) for p in topo.patch]
                patch[axis] = float(smaller)
                break
        else:
            break
    log.warning("no patch fits %.2f GB under segvol's memory model; using the smallest one tried", budget / GB)
    return topo, net, need


def _batch(net: dict[str, Any], topo: Topology, budget: float, in_ch: int, out_ch: int, device: str,
           dataset_voxels: float) -> tuple[int, str]:
    """The batch the budget leaves room for, capped at 5 % of the dataset's voxels, at least 2."""
    one = _estimate(net, topo.patch, 1, in_ch, out_ch, device)
    per_sample = _estimate(net, topo.patch, 2, in_ch, out_ch, device) - one
    fits = int((budget - (one - per_sample)) // max(per_sample, 1))
    cap = int(round(dataset_voxels * MAX_DATASET_SHARE / math.prod(topo.patch)))
    batch = max(MIN_BATCH, min(fits, cap))
    why = (f"memory leaves room for {fits}; 5 % of the dataset's voxels caps it at {cap}; at least {MIN_BATCH}")
    return batch, why


def make_plan(fp: Fingerprint, *, base: str, in_channels: int, out_channels: int, budget_gb: float,
              budget_source: str, device: str = "cpu") -> Plan:
    """Apply the plan rules to ``fp`` for a network with these channels, under ``budget_gb`` of memory."""
    spacing, spacing_rule = target_spacing(fp.spacings, fp.shapes_cropped)
    median = resampled_shape(fp.spacings, fp.shapes_cropped, spacing)
    budget = budget_gb * GB
    topo, net, need = _fit_patch(spacing, median, budget, in_channels, out_channels, device)
    batch, batch_rule = _batch(net, topo, budget, in_channels, out_channels, device,
                               float(np.prod(median)) * len(fp.cases))
    final = _estimate(net, topo.patch, batch, in_channels, out_channels, device)
    channels = normalisation(fp.channels, fp.median_relative_size)
    rules = {
        "spacing": spacing_rule,
        "crop": f"crop to the non-zero box (median case keeps {fp.median_relative_size:.0%} of its voxels)",
        "normalisation": "CT: clip to foreground 0.5/99.5 percentiles, foreground mean/std; others: z-score"
                         + (", inside the non-zero mask (cropping kept < 75 %)"
                            if any(c["scheme"] == "zscore_nonzero" for c in channels) else ""),
        "patch": f"aspect of the resampled median shape {[int(round(m)) for m in median]}, shrunk until a step at "
                 f"batch {MIN_BATCH} fits {budget_gb:g} GB ({budget_source}) under segvol's memory model",
        "batch": batch_rule,
        "network": "DynUNet: per-axis kernels and strides from the spacing (no pooling along a coarse axis until "
                   "it is within 2x of the others)" if net["name"] == "dynunet" else
                   "BasicUNet: the topology is isotropic",
        "loss": "Dice + cross-entropy",
    }
    memory = {"budget_gb": round(budget_gb, 3), "source": budget_source, "device": device,
              "model_gb_batch_min": round(need / GB, 3), "model_gb": round(final / GB, 3),
              "cache_gb": round(float(np.prod(median)) * len(fp.cases) * 4 * (in_channels + 1) / GB, 3)}
    return Plan(dataset=fp.dataset, root=fp.root, base=base, spacing=_tuple3(spacing, float), patch=_tuple3(
        topo.patch, int), batch=batch, crop_nonzero=True, channels=tuple(channels), network=net, loss="dicece",
        memory=memory, median_shape=tuple(round(float(m), 1) for m in median), rules=rules,
        fingerprint=fp.summary(), warnings=fp.warnings)


def _tuple3(values: Any, kind: type) -> Any:
    return tuple(round(float(v), 5) if kind is float else int(v) for v in values)
