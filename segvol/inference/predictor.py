"""Whole-scan prediction: the training prefix, sliding windows, argmax, and the prefix's inverse.

``predict_volume`` is the array-level core (a preprocessed MetaTensor in, a label MetaTensor on the input grid
out); ``infer_file`` wraps it with reading, geometry checks and an atomic write.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segvol.errors import SegvolError
from segvol.inference.backends import LoadedModel
from segvol.inference.core import sliding_window, to_label_index
from segvol.inference.nifti import check_volume, save_like
from segvol.inference.postprocess import postprocess
from segvol.transforms import deterministic_prefix, inverse_transform

__all__ = ["Prediction", "predict_volume", "infer_file", "regions_to_labels"]

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    labels: np.ndarray  # (H, W, D) uint8 on the input's grid
    affine: np.ndarray
    output: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)


def regions_to_labels(bits: torch.Tensor, task: dict[str, Any]) -> torch.Tensor:
    """(C, ...) region masks -> (1, ...) label map, painting regions in the order the task names them."""
    paint = task.get("paint")
    if not paint:
        out = torch.zeros_like(bits[:1])
        for c in range(bits.shape[0]):
            out[0][bits[c] > 0] = c + 1
        return out
    out = torch.zeros_like(bits[:1])
    for channel, value in paint:
        out[0][bits[channel] > 0] = value
    return out


def _prefix(model: LoadedModel) -> Any:
    from monai.transforms import Compose

    return Compose(deterministic_prefix(model.cfg, keys=("image",)))


def _logits(model: LoadedModel, x: torch.Tensor, sw_batch_size: int | None, overlap: float | None,
            progress: bool, tta: bool) -> torch.Tensor:
    """Sliding-window logits; with ``tta``, the mean probability over the identity and three axis flips,
    returned in logit form (log-probabilities for softmax heads) so thresholds and argmax keep their meaning."""
    def run(v: torch.Tensor) -> torch.Tensor:
        return sliding_window(model.predict, v, model.cfg, sw_batch_size=sw_batch_size, overlap=overlap,
                              progress=progress).float()

    logits = run(x)
    if not tta:
        return logits
    softmax = model.task["activation"] == "softmax"
    to_prob = (lambda t: torch.softmax(t, dim=1)) if softmax else torch.sigmoid
    probs = to_prob(logits)
    for axis in (2, 3, 4):
        probs += to_prob(torch.flip(run(torch.flip(x, (axis,))), (axis,)))
    probs = (probs / 4).clamp(1e-6, 1 - 1e-6)
    return torch.log(probs) if softmax else torch.logit(probs)


def predict_volume(model: LoadedModel, image_input: Any, sw_batch_size: int | None = None,
                   overlap: float | None = None, progress: bool = False, tta: bool = False
                   ) -> tuple[Any, dict[str, float]]:
    """Preprocess ``image_input`` (a path, or a list of paths for multi-channel data), predict and invert.

    Returns:
        ``(labels, timings)``: a (1, H, W, D) uint8 MetaTensor on the input's own grid and seconds per stage.
    """
    prefix, times = _prefix(model), {}
    start = time.perf_counter()
    try:
        data = prefix.transforms[0]({"image": image_input})
    except Exception as exc:  # MONAI wraps reader errors in RuntimeError with the file in the message
        cause = exc.__cause__ or exc
        raise SegvolError(f"{_name(image_input)}: cannot read the image data ({type(cause).__name__}: "
                          f"{str(cause).strip().splitlines()[0][:160] if str(cause).strip() else 'truncated?'})") from exc
    times["load"] = time.perf_counter() - start
    if not bool(torch.isfinite(torch.as_tensor(data["image"])).all()):
        raise SegvolError(f"{_name(image_input)}: the image holds NaN or Inf values; replace them (e.g. with the "
                          f"background value) first")
    for t in prefix.transforms[1:]:
        data = t(data)
    times["preprocess"] = time.perf_counter() - start - times["load"]
    image = data["image"]
    if image.shape[0] != model.task["in_channels"]:
        raise SegvolError(f"{_name(image_input)}: the model expects {model.task['in_channels']} channel(s), "
                          f"the input has {image.shape[0]}")
    start = time.perf_counter()
    with torch.inference_mode():
        logits = _logits(model, image.unsqueeze(0).to(model.device), sw_batch_size, overlap, progress, tta)[0]
        index = to_label_index(logits.unsqueeze(0), model.task["activation"])[0]
        if model.task["activation"] == "sigmoid":
            index = regions_to_labels(index, model.task)
    times["inference"] = time.perf_counter() - start
    start = time.perf_counter()
    index = postprocess(index.cpu(), model.cfg.infer, tuple(model.cfg.preprocess.spacing),
                        int(model.task["out_channels"]))
    times["postprocess"] = time.perf_counter() - start
    start = time.perf_counter()
    from monai.data import MetaTensor

    data["pred"] = MetaTensor(index.cpu().float(), meta=dict(image.meta))
    labels = inverse_transform(prefix)(data)["pred"]
    times["invert"] = time.perf_counter() - start
    return labels, times


def _name(image_input: Any) -> str:
    return str(image_input[0] if isinstance(image_input, (list, tuple)) else image_input)


def infer_file(model: LoadedModel, image_input: Any, out_path: str | Path, sw_batch_size: int | None = None,
               overlap: float | None = None, progress: bool = False, tta: bool = False) -> Prediction:
    """Predict one scan and write the label map on the scan's own grid (shape and affine checked)."""
    paths = list(image_input) if isinstance(image_input, (list, tuple)) else [image_input]
    refs = [check_volume(p, load_data=False) for p in paths]
    ref = refs[0]
    for p, other in zip(paths[1:], refs[1:]):
        if tuple(other.shape[:3]) != tuple(ref.shape[:3]) or not np.allclose(other.affine, ref.affine, atol=1e-3):
            raise SegvolError(f"{p}: grid {other.shape[:3]} differs from {paths[0]} {ref.shape[:3]}")
    labels, times = predict_volume(model, paths if len(paths) > 1 else paths[0], sw_batch_size, overlap, progress,
                                   tta)
    array = labels[0].cpu().numpy().round().astype(np.uint8)
    if array.shape != tuple(ref.shape[:3]):
        raise SegvolError(f"{paths[0]}: internal error: prediction shape {array.shape} != input {ref.shape[:3]}")
    affine = np.asarray(labels.affine, dtype=np.float64)
    if not np.allclose(affine, ref.affine, atol=1e-3):
        raise SegvolError(f"{paths[0]}: internal error: prediction affine differs from the input's")
    start = time.perf_counter()
    save_like(array, ref, out_path)
    times["save"] = time.perf_counter() - start
    return Prediction(labels=array, affine=ref.affine, output=Path(out_path), timings=times)
