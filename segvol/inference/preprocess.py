"""What the network sees: a scan through the deterministic prefix (orientation, 1 mm resampling, intensity
normalisation, padding), written as NIfTI on the 1 mm grid so it can be checked in a viewer.

``preprocess_volume`` is the array core (a MetaTensor out); ``preprocess_file`` writes it atomically.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from segvol.config import Config
from segvol.errors import SegvolError, first_line

__all__ = ["preprocess_volume", "preprocess_file", "preprocess_scan"]

log = logging.getLogger(__name__)


def preprocess_volume(cfg: Config, image_input: Any) -> Any:
    """``image_input`` (a file, a DICOM series folder, or the sequence files of one multi-channel scan) through
    the inference prefix of ``cfg``: a (C, H, W, D) float32 MetaTensor on the 1 mm grid, its affine in RAS mm."""
    from monai.transforms import Compose

    from segvol.transforms import deterministic_prefix

    try:
        return Compose(deterministic_prefix(cfg, keys=("image",)))({"image": image_input})["image"]
    except Exception as exc:  # MONAI wraps reader errors in RuntimeError with the file in the message
        cause = exc.__cause__ or exc
        name = image_input[0] if isinstance(image_input, (list, tuple)) else image_input
        raise SegvolError(f"{name}: cannot preprocess ({type(cause).__name__}: "
                          f"{first_line(cause, empty='unreadable?')})") from exc


def preprocess_file(cfg: Config, image_input: Any, out: str | Path, overwrite: bool = False) -> Path:
    """Write :func:`preprocess_volume` of ``image_input`` to ``out`` (float32 NIfTI; channels last when several)."""
    from segvol.io.grid import Grid
    from segvol.io.nifti import save_like
    from segvol.utils import check_writable_target

    out = check_writable_target(out, overwrite)
    inputs = image_input if isinstance(image_input, (list, tuple)) else [image_input]
    if any(Path(p).resolve() == out.resolve() for p in inputs):
        raise SegvolError(f"{out}: is the input scan; choose another output name")
    image = preprocess_volume(cfg, image_input)
    array = np.asarray(image.detach().cpu(), dtype=np.float32)
    array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    affine = np.asarray(image.affine.detach().cpu(), dtype=np.float64)
    save_like(array, Grid(tuple(array.shape[:3]), affine), out, dtype=np.float32)
    log.info("wrote %s: %s voxels at %s mm, intensity %s", out, "x".join(map(str, array.shape)),
             "x".join(f"{s:g}" for s in cfg.preprocess.spacing), cfg.preprocess.intensity_norm)
    return out


def preprocess_scan(scan: Any, out: str | Path, *, config: str | None = None, model: str | Path | None = None,
                    models_dir: str | Path = "models", overwrite: bool = False) -> Path:
    """``segvol preprocess``: write what the network sees for ``scan`` with ``model``'s pipeline (default: the
    default model) or the preset/YAML ``config``; a case folder is read by the dataset's adapter."""
    from segvol.data.registry import get_adapter

    if config is not None:
        from segvol.config import load_config

        cfg = load_config(config)
        adapter = get_adapter(cfg.data.dataset)
        modalities = tuple(adapter.task_spec(cfg).modalities)
    else:
        import torch

        from segvol.checkpoint import default_model
        from segvol.inference.backends import load_model

        loaded = load_model(model or default_model(models_dir), torch.device("cpu"))
        cfg, modalities, adapter = loaded.cfg, loaded.task.modalities, get_adapter(loaded.dataset)
    if isinstance(scan, (list, tuple)) and len(scan) == 1:
        scan = scan[0]
    return preprocess_file(cfg, adapter.case_input(scan, modalities), out, overwrite=overwrite)
