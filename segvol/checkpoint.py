"""Checkpoints: plain dicts of tensors and values that load with ``torch.load(weights_only=True)``.

A checkpoint carries everything inference and resume need: the resolved config, the network's constructor
arguments, the task (activation, class names, modalities), the weights, and the training state.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

from segvol.errors import SegvolError, first_line
from segvol.utils import atomic_path

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint"]

FORMAT = "segvol-checkpoint"
VERSION = 1
REQUIRED = ("config", "network", "task", "state_dict")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus format tags) atomically: a crash leaves the previous file or none."""
    import torch

    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise ValueError(f"checkpoint payload lacks {missing}")
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load and validate a segvol checkpoint with ``weights_only=True`` (no arbitrary unpickling)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise SegvolError(f"{path}: checkpoint not found")
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives; anything else is foreign or cut short
        raise SegvolError(f"{path}: not a PyTorch checkpoint (not a zip archive: another format, or truncated)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise SegvolError(f"{path}: refused: the checkpoint needs arbitrary unpickling (not a plain segvol "
                          f"checkpoint; only tensors and plain values are loaded)") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise SegvolError(f"{path}: not a readable PyTorch checkpoint ({first_line(exc, 120)})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise SegvolError(f"{path}: not a segvol checkpoint (no '{FORMAT}' tag)")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise SegvolError(f"{path}: segvol checkpoint lacks {', '.join(missing)}")
    return ckpt
