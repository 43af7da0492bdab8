"""Which masks are scored: label schemes that turn a label map into named binary masks.

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
from dataclasses import dataclass

import numpy as np

from segvol.data import TaskSpec
from segvol.errors import SegvolError

__all__ = ["ClassDef", "SCHEMES", "BRATS_REGIONS", "BRATS_LABEL_NAMES", "READABLE", "class_defs", "guess_scheme",
           "class_mask", "scheme_for_task"]

SCHEMES = ("auto", "binary", "multi", "brats")
BRATS_REGIONS: dict[str, tuple[int, ...]] = {"tc": (1, 3, 4), "wt": (1, 2, 3, 4), "et": (3, 4)}
BRATS_LABEL_NAMES = {1: "necrotic core", 2: "edema", 3: "enhancing tumour", 4: "enhancing tumour"}
READABLE = {"tc": "tumour core", "wt": "whole tumour", "et": "enhancing tumour"}  # class names in readings


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
