"""What the network outputs and which masks are scored: the task, and label schemes that turn a label map into
named binary masks.

:class:`TaskSpec` is what a dataset asks of the network and the metrics; checkpoints and ONNX files carry it.

* ``binary``: one class, every non-zero voxel (ImageCAS arteries, BraTS whole tumour in binary mode).
* ``multi``: one class per non-zero label value found in the reference or the prediction (``label_<v>``, or the
  task's class names when a run supplies them).
* a dataset's :class:`RegionScheme`: overlapping regions, each the union of some label values (BraTS: tumour core,
  whole tumour, enhancing tumour; defined with the BraTS adapter in :mod:`segvol.data.brats` and found through
  :func:`segvol.data.registry.region_schemes`).
* ``auto``: ``binary`` when the references hold only 0/1, a region scheme when their values fit its signature,
  otherwise ``multi``.

The functions here take the region schemes they may use as an argument; this module knows no dataset.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segvol.errors import SegvolError

__all__ = ["TaskSpec", "ClassDef", "RegionScheme", "SCHEMES", "class_defs", "guess_scheme", "class_mask",
           "scheme_for_task"]

SCHEMES = ("auto", "binary", "multi")  # and the names of the registered region schemes


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
        dataset: the registered name of the dataset the model was trained on (its adapter reads inference inputs
            and names cases); empty in checkpoints older than this field, where the config's ``data.dataset`` says.
    """

    in_channels: int
    out_channels: int
    activation: str
    class_names: tuple[str, ...]
    modalities: tuple[str, ...]
    label_transforms: tuple[Any, ...] = field(default=(), compare=False)
    paint: tuple[tuple[int, int], ...] = ()
    dataset: str = ""

    def as_dict(self) -> dict[str, Any]:
        task = {"in_channels": self.in_channels, "out_channels": self.out_channels, "activation": self.activation,
                "class_names": list(self.class_names), "modalities": list(self.modalities)}
        if self.paint:
            task["paint"] = [[int(c), int(v)] for c, v in self.paint]
        if self.dataset:
            task["dataset"] = self.dataset
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
                   paint=tuple((int(c), int(v)) for c, v in task.get("paint", ()) or ()),
                   dataset=str(task.get("dataset", "")))


@dataclass(frozen=True)
class RegionScheme:
    """Overlapping regions read from label values: a dataset's own label scheme.

    Attributes:
        name: the scheme's name (``--labels NAME``).
        regions: region name -> the label values whose union it is, in output order.
        readable: region name -> the words failure readings use for it.
        label_names: label value -> name of that sub-label in readings.
        signature: ``auto`` reads references whose non-zero values lie in this set and include ``marker`` as this
            scheme.
        marker: see ``signature``.
    """

    name: str
    regions: Mapping[str, tuple[int, ...]]
    readable: Mapping[str, str]
    label_names: Mapping[int, str]
    signature: frozenset[int]
    marker: int

    def matches(self, values: Iterable[int]) -> bool:
        """Whether references holding ``values`` read as this scheme under ``auto``."""
        found = {int(v) for v in values} - {0}
        return found <= self.signature and self.marker in found


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


def guess_scheme(values: Iterable[int], schemes: Mapping[str, RegionScheme] | None = None) -> str:
    """``binary``, the first region scheme of ``schemes`` that matches, or ``multi`` (see the module doc)."""
    found = {int(v) for v in values} - {0}
    if found <= {1}:
        return "binary"
    for name, scheme in (schemes or {}).items():
        if scheme.matches(found):
            return name
    return "multi"


def class_defs(scheme: str, values: Iterable[int] = (), names: Sequence[str] = (),
               schemes: Mapping[str, RegionScheme] | None = None) -> list[ClassDef]:
    """The classes of ``scheme``; ``values`` are the non-zero labels seen (for ``multi``), ``names`` optional
    class names (``names[0]`` for binary, ``names[v - 1]`` for label ``v`` in ``multi``), ``schemes`` the region
    schemes ``scheme`` may name."""
    schemes = schemes or {}
    if scheme == "binary":
        return [ClassDef(names[0] if names else "foreground", None)]
    if scheme in schemes:
        return [ClassDef(name, tuple(vals)) for name, vals in schemes[scheme].regions.items()]
    if scheme == "multi":
        found = sorted({int(v) for v in values} - {0})
        return [ClassDef(names[v - 1] if 0 < v <= len(names) else f"label_{v}", (v,)) for v in found]
    raise SegvolError(f"--labels {scheme!r}: expected one of {', '.join([*SCHEMES, *schemes])}")


def scheme_for_task(task: TaskSpec, schemes: Mapping[str, RegionScheme] | None = None) -> tuple[str, list[str]]:
    """The scheme and class names that score a trained model's output (the checkpoint's task)."""
    names = list(task.class_names)
    if task.activation == "sigmoid":
        for name, scheme in (schemes or {}).items():
            if sorted(names) == sorted(scheme.regions):
                return name, names
        return "multi", names
    if task.out_channels <= 2:
        return "binary", names
    return "multi", names
