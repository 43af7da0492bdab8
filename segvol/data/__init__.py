"""Datasets: records, splits, the adapter registry, importers and phantoms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TaskSpec"]


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
        from segvol.errors import SegvolError

        missing = [k for k in ("in_channels", "out_channels", "activation") if k not in task]
        if missing:
            raise SegvolError(f"{where}: the stored task lacks {', '.join(missing)}")
        return cls(in_channels=int(task["in_channels"]), out_channels=int(task["out_channels"]),
                   activation=str(task["activation"]), class_names=tuple(str(n) for n in task.get("class_names", ())),
                   modalities=tuple(str(m) for m in task.get("modalities", ())),
                   paint=tuple((int(c), int(v)) for c, v in task.get("paint", ()) or ()))
