"""What the network outputs and which masks are scored: the task, and label schemes that turn a label map into
named binary masks.

:class:`TaskSpec` is what a dataset asks of the network and the metrics; checkpoints and ONNX files carry it.

* ``binary``: one class, every non-zero voxel (ImageCAS arteries, BraTS whole tumour in binary mode).
* ``multi``: one class per non-zero label value found in the reference or the prediction (``label_<v>``, or the
  task's class names when a run supplies them).
* ``brats``: the three BraTS regions from label values, valid for every release: tumour core TC = {1, 3, 4},
  whole tumour WT = {1, 2, 3, 4}, enhancing tumour ET = {3, 4} (enhancing is 4 up to 2021 and 3 from 2023;
  label 3 was "non-enhancing core" in 2017 and belongs to the core either way).
* ``auto``: ``binary`` when the references hold only 0/1, ``brats`` when their values lie in {0, 1, 2, 4} and
  include 4, otherwise ``multi``. BraTS 2023 maps ({0, 1, 2, 3}) read as ``multi`` unless ``brats`` is asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segvol.errors import SegvolError

__all__ = ["TaskSpec", "ClassDef", "SCHEMES", "BRATS_REGIONS", "BRATS_LABEL_NAMES", "READABLE", "class_defs",
           "guess_scheme", "class_mask", "scheme_for_task"]

SCHEMES = ("auto", "binary", "multi", "brats")
BRATS_REGIONS: dict[str, tuple[int, ...]] = {"tc": (1, 3, 4), "wt": (1, 2, 3, 4), "et": (3, 4)}
BRATS_LABEL_NAMES = {1: "necrotic core", 2: "edema", 3: "enhancing tumour", 4: "enhancing tumour"}
READABLE = {"tc": "tumour core", "wt": "whole tumour", "et": "enhancing tumour"}  # class names in readings


@dataclass(frozen=True)
class TaskSpec:
    """What a dataset asks of the network and the metrics, for one label mode.

    Attributes:
        in_channels: image channels (1 for CT, up to 4 for BraTS).
        out_channels: network outputs (classes for softmax, regions for sigmoid).
        activation: ``"softmax"`` (mutually exclusive classes, argmax) or ``"sigmoid"`` (overlapping regions).
        class_names: names of the foreground classes or regions that metrics report, in output order.
        modalities: the image channels' names, in order.
        label_transforms: MONAI transforms applied to the loaded label before resampling.
        paint: for sigmoid regions, ``(channel, value)`` pairs painted in order to write predicted regions back as
            one label map (BraTS: WT->2, then TC->1, then ET->4); empty = region ``c`` is painted ``c + 1``.
    """

    in_channels: int
    out_channels: int
    activation: str
    class_names: tuple[str, ...]
    modalities: tuple[str, ...]
    label_transforms: tuple[Any, ...] = field(default=(), compare=False)
    paint: tuple[tuple[int, int], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        task = {"in_channels": self.in_channels, "out_channels": self.out_channels, "activation": self.activation,
                "class_names": list(self.class_names), "modalities": list(self.modalities)}
        if self.paint:
            task["paint"] = [[int(c), int(v)] for c, v in self.paint]
        return task

    @classmethod
    def from_dict(cls, task: dict[str, Any], where: str = "task") -> TaskSpec:
        """The inverse of :meth:`as_dict`, as checkpoints and ONNX metadata store it (``label_transforms`` are
        training-only and not stored); a task lacking what inference needs is a SegvolError naming ``where``."""

        missing = [k for k in ("in_channels", "out_channels", "activation") if k not in task]
        if missing:
            raise SegvolError(f"{where}: the stored task lacks {', '.join(missing)}")
        return cls(in_channels=int(task["in_channels"]), out_channels=int(task["out_channels"]),
                   activation=str(task["activation"]), class_names=tuple(str(n) for n in task.get("class_names", ())),
                   modalities=tuple(str(m) for m in task.get("modalities", ())),
                   paint=tuple((int(c), int(v)) for c, v in task.get("paint", ()) or ()))


@dataclass(frozen=True)
class ClassDef:
    """A scored class: its name and the label values that make its mask (None = every non-zero value)."""

    name: str
    values: tuple[int, ...] | None = None


def class_mask(labels: np.ndarray, cls: ClassDef) -> np.ndarray:
    """Boolean mask of ``cls`` in an integer label map."""
    if cls.values is None:
        return labels != 0
    return np.isin(labels, cls.values)


def guess_scheme(values: Iterable[int]) -> str:
    """``binary``, ``brats`` or ``multi`` from the label values found in the references (see module doc)."""
    found = {int(v) for v in values} - {0}
    if found <= {1}:
        return "binary"
    if found <= {1, 2, 4} and 4 in found:
        return "brats"
    return "multi"


def class_defs(scheme: str, values: Iterable[int] = (), names: Sequence[str] = ()) -> list[ClassDef]:
    """The classes of ``scheme``; ``values`` are the non-zero labels seen (for ``multi``), ``names`` optional
    class names (``names[0]`` for binary, ``names[v - 1]`` for label ``v`` in ``multi``)."""
    if scheme == "binary":
        return [ClassDef(names[0] if names else "foreground", None)]
    if scheme == "brats":
        return [ClassDef(name, vals) for name, vals in BRATS_REGIONS.items()]
    if scheme == "multi":
        found = sorted({int(v) for v in values} - {0})
        return [ClassDef(names[v - 1] if 0 < v <= len(names) else f"label_{v}", (v,)) for v in found]
    raise SegvolError(f"--labels {scheme!r}: expected one of {', '.join(SCHEMES)}")


def scheme_for_task(task: TaskSpec) -> tuple[str, list[str]]:
    """The scheme and class names that score a trained model's output (the checkpoint's task)."""
    names = list(task.class_names)
    if task.activation == "sigmoid":
        if sorted(names) == sorted(BRATS_REGIONS):
            return "brats", names
        return "multi", names
    if task.out_channels <= 2:
        return "binary", names
    return "multi", names
