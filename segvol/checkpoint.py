"""Checkpoints: plain dicts of tensors and values that load with ``torch.load(weights_only=True)``.

A checkpoint carries everything inference and resume need: the resolved config, the network's constructor
arguments, the task (activation, class names, modalities, dataset), the weights, and the training state; its keys
are :class:`Checkpoint`. Runs live in ``<models>/<run>/`` (``best.pt``, ``last.pt``); :func:`newest_run` finds the
newest.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, TypedDict, cast

from segvol.errors import SegvolError, first_line
from segvol.utils import atomic_path

__all__ = ["FORMAT", "Checkpoint", "save_checkpoint", "load_checkpoint", "newest_run", "default_model"]

FORMAT = "segvol-checkpoint"
VERSION = 1
REQUIRED = ("config", "network", "task", "state_dict")


class Checkpoint(TypedDict, total=False):
    """The keys of a segvol checkpoint (``config``, ``network``, ``task`` and ``state_dict`` are required; the
    training state is in ``last.pt`` and ``best.pt`` of a run, not in an exported file)."""

    format: str  # FORMAT
    version: int  # VERSION
    config: dict[str, Any]  # the resolved config (segvol.config.config_to_dict)
    network: dict[str, Any]  # segvol.networks.network_args: the network's name and constructor arguments
    task: dict[str, Any]  # segvol.labels.TaskSpec.as_dict: channels, activation, class names, modalities, dataset
    state_dict: dict[str, Any]  # the weights
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]  # fp16 autocast's gradient scaler ({} when unused)
    epoch: int  # epochs completed
    best_metric: float  # best mean validation Dice so far
    best_epoch: int
    bad_validations: int  # validations without improvement (early stopping)
    finished: bool
    metrics: dict[str, float]  # the epoch's row of metrics.csv
    locator: dict[str, Any]  # a cascade's coarse stage: its own config, network, task and state_dict


def save_checkpoint(path: str | Path, payload: Checkpoint | dict[str, Any]) -> None:
    """Write ``payload`` (plus format tags) atomically: a crash leaves the previous file or none."""
    import torch

    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise ValueError(f"checkpoint payload lacks {missing}")
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> Checkpoint:
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
    return cast(Checkpoint, ckpt)


def newest_run(models_dir: str | Path = "models", checkpoint: str = "best.pt") -> Path:
    """The most recently written ``<models_dir>/<run>/<checkpoint>``."""
    found = sorted(Path(models_dir).glob(f"*/{checkpoint}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SegvolError(f"{models_dir}: no run with a {checkpoint} yet; train one with "
                          f"'segvol train --dataset imagecas'")
    return found[-1]


def default_model(models_dir: str | Path = "models") -> Path:
    """``<models_dir>/model.onnx`` when it exists, else the newest run's ``best.pt``."""
    onnx_path = Path(models_dir) / "model.onnx"
    return onnx_path if onnx_path.is_file() else newest_run(models_dir)
