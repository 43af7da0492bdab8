"""Whole-scan prediction: the training prefix, sliding windows, argmax, and the prefix's inverse.

``predict_volume`` is the array-level core (a preprocessed MetaTensor in, a label MetaTensor on the input grid
out); ``predict_scan`` adds the geometry checks and returns a :class:`Prediction` in memory; ``infer_file`` wraps
that with the output writers (atomic writes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segvol.errors import SegvolError, first_line
from segvol.inference.backends import LoadedModel
from segvol.inference.core import (axis_gather_plan, cpu_window_batch, gather_labels, sliding_window, stitch_device,
                                  to_label_index)
from segvol.io.grid import Grid, grid_mismatch
from segvol.io.nifti import (IN_MEMORY, check_image, check_volume, fast_nifti_reader,
                                   image_like, is_in_memory, load_in_memory)
from segvol.inference.postprocess import postprocess
from segvol.transforms import deterministic_prefix, inverse_transform

__all__ = ["Prediction", "predict_volume", "predict_scan", "coarse_stage", "infer_file", "regions_to_labels",
           "probabilities"]

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """One scan's result.

    Attributes:
        labels: (H, W, D) uint8 label map on the input's grid.
        affine: that grid's voxel -> scanner (RAS mm) affine.
        output: the mask file written (None when nothing was written, e.g. an in-memory scan without ``out``).
        timings: seconds per stage.
        mask: the mask in the kind of the input: the written path for a file, a ``Nifti1Image`` for a nibabel
            image, a uint8 array for an array with its affine.
        files: output format name -> the (first) file its writer wrote.
        located: for a cascade model, the box of input voxels its fine stage segmented (None: the whole scan).
    """

    labels: np.ndarray
    affine: np.ndarray
    output: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    mask: Any = None
    files: dict[str, Path] = field(default_factory=dict)
    located: tuple[slice, ...] | None = None


def regions_to_labels(bits: torch.Tensor, paint: Sequence[Sequence[int]] = ()) -> torch.Tensor:
    """(C, ...) region masks -> (1, ...) label map, painting ``(channel, value)`` pairs in order (the task's
    ``paint``); without them region ``c`` is painted ``c + 1``."""
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
    """The training prefix for the image alone; its loader reads ``.nii.gz`` with :func:`fast_nifti_reader`."""
    from monai.transforms import Compose, LoadImaged

    prefix = Compose(deterministic_prefix(model.cfg, keys=("image",)))
    if isinstance(prefix.transforms[0], LoadImaged):
        prefix.transforms[0].register(fast_nifti_reader())
    return prefix


def _windows(model: LoadedModel, x: torch.Tensor, sw_batch_size: int | None, overlap: float | str | None,
             progress: bool, amp: bool) -> torch.Tensor:
    """Sliding-window logits of one input; the output is stitched on the CPU when it would not fit on the
    accelerator (decided up front, and again after an out-of-memory error)."""
    out_channels = int(model.task.out_channels)
    where = stitch_device(x.shape, out_channels, model.device)
    if where != model.device:
        log.info("stitching the sliding-window output on the CPU (%s voxels x %d channels do not fit on %s)",
                 "x".join(str(s) for s in x.shape[2:]), out_channels, model.device)
    use_amp = amp and model.backend == "pytorch" and model.device.type == "cuda"
    if sw_batch_size is None and model.device.type == "cpu":
        sw_batch_size = cpu_window_batch(model.cfg.infer.sw_batch_size, model.cfg.preprocess.roi_size)

    def run(target: torch.device) -> torch.Tensor:
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=use_amp):
            return sliding_window(model.predict, x, model.cfg, sw_batch_size=sw_batch_size, overlap=overlap,
                                  device=target, progress=progress).float()

    try:
        return run(where)
    except torch.OutOfMemoryError:
        if where.type == "cpu":
            raise
        torch.cuda.empty_cache()
        log.warning("%s ran out of memory; stitching the sliding-window output on the CPU instead", model.device)
        return run(torch.device("cpu"))


def _logits(model: LoadedModel, x: torch.Tensor, sw_batch_size: int | None, overlap: float | str | None,
            progress: bool, tta: bool, amp: bool = False) -> torch.Tensor:
    """Sliding-window logits; with ``tta``, the mean probability over the identity and three axis flips,
    returned in logit form (log-probabilities for softmax heads) so thresholds and argmax keep their meaning."""
    def run(v: torch.Tensor) -> torch.Tensor:
        return _windows(model, v, sw_batch_size, overlap, progress, amp)

    logits = run(x)
    if not tta:
        return logits
    softmax = model.task.activation == "softmax"
    to_prob = (lambda t: torch.softmax(t, dim=1)) if softmax else torch.sigmoid
    probs = to_prob(logits)
    for axis in (2, 3, 4):
        probs += to_prob(torch.flip(run(torch.flip(x, (axis,))), (axis,)).to(probs.device))
    probs = (probs / 4).clamp(1e-6, 1 - 1e-6)
    return torch.log(probs) if softmax else torch.logit(probs)


def probabilities(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """(C, ...) logits -> foreground probabilities: softmax without the background channel, or sigmoid per region."""
    if activation == "softmax":
        return torch.softmax(logits, dim=0)[1:]
    return torch.sigmoid(logits)


@dataclass
class _Grids:
    """The geometry the inverse needs: the input's own grid (after channel-first) and the resampled grid before
    padding."""

    source_affine: Any = None
    source_shape: tuple[int, ...] = ()
    resampled_affine: Any = None
    resampled_shape: tuple[int, ...] = ()


def _load(prefix: Any, image_input: Any) -> dict[str, Any]:
    from segvol.io.dicom_series import DicomSeries, staged_folder

    try:
        if isinstance(image_input, DicomSeries):  # the reader sees this series' files only, never two series
            with staged_folder(image_input) as folder:
                data = prefix.transforms[0]({"image": str(folder)})
        else:
            data = load_in_memory(image_input) if is_in_memory(image_input) else \
                prefix.transforms[0]({"image": image_input})
    except Exception as exc:  # MONAI wraps reader errors in RuntimeError with the file in the message
        cause = exc.__cause__ or exc
        raise SegvolError(f"{_name(image_input)}: cannot read the image data ({type(cause).__name__}: "
                          f"{first_line(cause, empty='truncated?')})") from exc
    image = torch.as_tensor(data["image"])
    # a sum is finite exactly when every value is (short of float overflow, which the full check then settles)
    if image.is_floating_point() and not bool(torch.isfinite(image.sum())) and \
            not bool(torch.isfinite(image).all()):
        raise SegvolError(f"{_name(image_input)}: the image holds NaN or Inf values; replace them (e.g. with the "
                          f"background value) first")
    return data


def _preprocess(model: LoadedModel, prefix: Any, data: dict[str, Any], extras: dict[str, Any]
                ) -> tuple[dict[str, Any], _Grids]:
    """The prefix after loading; records the grids for the inverse and, with ``device_transforms``, moves the
    image to the model's device before resampling."""
    from monai.transforms import EnsureChannelFirstd, EnsureTyped, Spacingd

    on_device = model.cfg.infer.device_transforms  # any device: on the CPU it is the same code, in place
    grids = _Grids()
    for t in prefix.transforms[1:]:
        data = t(data)
        image = data["image"]
        if isinstance(t, EnsureChannelFirstd):  # (C, H, W, D) on the input's grid
            grids.source_affine, grids.source_shape = image.affine.clone(), tuple(image.shape[1:])
            if "image" in extras:
                extras["image"] = np.asarray(image[0].detach().cpu(), dtype=np.float32).copy()
        if isinstance(t, EnsureTyped) and on_device:  # resample, normalise and pad on the accelerator
            data["image"] = image.to(model.device)
        if isinstance(t, Spacingd):
            grids.resampled_affine, grids.resampled_shape = image.affine.clone(), tuple(image.shape[1:])
    return data, grids


def _invert_labels(prefix: Any, data: dict[str, Any], index: torch.Tensor, grids: _Grids) -> Any:
    """(1, ...) uint8 labels on the processed grid -> the input's grid: a per-axis nearest gather when the grids
    are axis-aligned, as MONAI's orientation and spacing leave them (what ``Invertd`` with nearest interpolation
    gives, except where a voxel centre falls exactly half-way between two grid voxels), else ``Invertd``."""
    from monai.data import MetaTensor

    image = data["image"]
    plan = None
    if grids.resampled_affine is not None and grids.source_affine is not None:
        plan = axis_gather_plan(image.affine, grids.resampled_affine, grids.resampled_shape, grids.source_affine,
                                grids.source_shape)
    if plan is not None:
        labels = gather_labels(index.to(image.device), plan)
        return MetaTensor(labels, affine=grids.source_affine.to(torch.float64))
    log.debug("grids not axis-aligned: inverting with MONAI's Invertd")
    data["pred"] = MetaTensor(index.to(image.device).float(), meta=dict(image.meta))
    # MONAI types the data as Mapping[Hashable, Any], which a str-keyed dict does not match (invariant keys)
    return inverse_transform(prefix)(data)["pred"]  # type: ignore[arg-type]  # inverted where the image is


def predict_volume(model: LoadedModel, image_input: Any, sw_batch_size: int | None = None,
                   overlap: float | str | None = None, progress: bool = False, tta: bool = False, amp: bool = False,
                   extras: dict[str, Any] | None = None) -> tuple[Any, dict[str, float]]:
    """Preprocess ``image_input`` (a path, a DICOM series folder, a list of paths for multi-channel data, or the
    same in memory: a nibabel image or a list of them, read exactly as their files would be), predict and invert.

    Args:
        overlap: sliding-window overlap, ``"auto"`` or a fraction (default: the model's ``infer.overlap``).
        amp: bf16 autocast (PyTorch models on CUDA only).
        extras: optional requests, filled in place: ``"image"`` -> the scan's first channel on its own grid
            (numpy), ``"prob"`` -> the foreground probabilities (C', H, W, D) on the input's grid (numpy float32,
            before post-processing).

    Returns:
        ``(labels, timings)``: a (1, H, W, D) uint8 MetaTensor on the input's own grid and seconds per stage.
    """
    prefix, times, extras = _prefix(model), {}, extras if extras is not None else {}
    clock = time.perf_counter()
    data = _load(prefix, image_input)
    times["load"] = time.perf_counter() - clock
    data, grids = _preprocess(model, prefix, data, extras)
    times["preprocess"] = time.perf_counter() - clock - times["load"]
    image = data["image"]
    if image.shape[0] != model.task.in_channels:
        raise SegvolError(f"{_name(image_input)}: the model expects {model.task.in_channels} channel(s), "
                          f"the input has {image.shape[0]}")
    if image.ndim != 4:
        raise SegvolError(f"{_name(image_input)}: expected a 3D volume, got data of shape {tuple(image.shape)}")
    clock = time.perf_counter()
    with torch.inference_mode():
        logits = _logits(model, image.unsqueeze(0).to(model.device), sw_batch_size, overlap, progress, tta, amp)[0]
        index = to_label_index(logits.unsqueeze(0), model.task.activation)[0]
        if model.task.activation == "sigmoid":
            index = regions_to_labels(index, model.task.paint)
        prob = probabilities(logits, model.task.activation).cpu() if "prob" in extras else None
    del logits
    times["inference"] = time.perf_counter() - clock
    clock = time.perf_counter()
    index = postprocess(index.cpu(), model.cfg.infer, tuple(model.cfg.preprocess.spacing),
                        int(model.task.out_channels))
    times["postprocess"] = time.perf_counter() - clock
    clock = time.perf_counter()
    labels = _invert_labels(prefix, data, index, grids)
    if prob is not None:
        from monai.data import MetaTensor

        data["prob"] = MetaTensor(prob.to(image.device), meta=dict(image.meta))
        inverted = inverse_transform(prefix, key="prob", nearest=False)(data)["prob"]  # type: ignore[arg-type]
        extras["prob"] = np.clip(np.asarray(inverted.detach().cpu(), dtype=np.float32), 0.0, 1.0)
    times["invert"] = time.perf_counter() - clock
    return labels, times


def _name(image_input: Any) -> str:
    if is_in_memory(image_input):
        return IN_MEMORY
    return str(image_input[0] if isinstance(image_input, (list, tuple)) else image_input)


def _input_grid(image_input: Any, channels: int = 1) -> Any:
    """The input's grid checked before any work: a nibabel image (a NIfTI file or an in-memory image; the sequences
    of one scan must share it), or None for a DICOM series (its grid is what MONAI's reader returns, taken from the
    prediction). One image for a ``channels``-channel model is 4D."""
    from segvol.io.dicom import check_series, is_series_folder
    from segvol.io.dicom_series import DicomSeries

    if isinstance(image_input, DicomSeries):
        check_series(image_input)  # every slice readable and present, one orientation, no tilt; else one line
        return None
    items = list(image_input) if isinstance(image_input, (list, tuple)) else [image_input]
    per_item = channels if len(items) == 1 else None
    if is_in_memory(image_input):
        names = [IN_MEMORY if len(items) == 1 else f"{IN_MEMORY} (sequence {i + 1})" for i in range(len(items))]
        refs = [check_image(img, name, channels=per_item, load_data=False) for img, name in zip(items, names)]
    elif len(items) == 1 and Path(items[0]).is_dir():
        if not is_series_folder(items[0]):
            raise SegvolError(f"{items[0]}: folder holds neither .nii/.nii.gz scans nor a DICOM series")
        check_series(items[0])  # every slice readable and present, or a one-line error
        return None
    else:
        names = [str(p) for p in items]
        refs = [check_volume(p, channels=per_item, load_data=False) for p in items]
    for name, other in zip(names[1:], refs[1:]):
        reason = grid_mismatch(refs[0], other)
        if reason:
            raise SegvolError(f"{name}: grid differs from {names[0]} ({reason})")
    return refs[0]


def _as_series(image_input: Any, model: LoadedModel) -> Any:
    """A DICOM series folder -> its :class:`~segvol.io.dicom_series.DicomSeries` (the largest axial volume of the
    model's modality when it holds several); anything else as is."""
    from segvol.io.dicom import is_series_folder
    from segvol.io.dicom_series import open_series

    if isinstance(image_input, (str, Path)) and Path(image_input).is_dir() and is_series_folder(image_input):
        return open_series(image_input, modality=_modality(model))
    return image_input


def _modality(model: LoadedModel) -> str:
    """The imaging modality (CT, MR) of the model's dataset, or "" when unknown."""
    from segvol.data.registry import get_adapter

    try:
        return str(get_adapter(model.dataset).modality or "")
    except SegvolError:
        return ""


def predict_scan(model: LoadedModel, image_input: Any, sw_batch_size: int | None = None,
                 overlap: float | str | None = None, progress: bool = False, tta: bool = False, amp: bool = False,
                 extras: dict[str, Any] | None = None, locate: bool = True) -> tuple[Prediction, Any]:
    """The in-memory core: predict one scan onto its own grid (shape and affine checked) and write nothing.

    Args:
        image_input: a NIfTI path, the sequence paths of one scan, a DICOM series folder, or the same in memory
            (a nibabel image or a list of them).
        extras: requests of :func:`predict_volume`, filled in place (``"image"``, ``"prob"``).
        locate: for a cascade model, locate the target with its coarse stage and segment only that box (False:
            the fine stage over the whole scan, ``--no-locate``).

    Returns:
        The :class:`Prediction` (``mask`` a ``Nifti1Image`` for an in-memory input) and the input's grid: its
        nibabel image (header kept) or, for a DICOM series, a :class:`~segvol.io.grid.Grid`.
    """
    if isinstance(image_input, (list, tuple)) and len(image_input) == 1:  # one sequence: the scan itself
        image_input = image_input[0]
    image_input = _as_series(image_input, model)
    if locate and model.locator is not None:
        return _predict_located(model, image_input, sw_batch_size, overlap, progress, tta, amp, extras)
    ref = _input_grid(image_input, int(model.task.in_channels))
    labels, times = predict_volume(model, image_input, sw_batch_size, overlap, progress, tta, amp, extras)
    array = labels[0].cpu().numpy().round().astype(np.uint8)
    affine = np.asarray(torch.as_tensor(labels.affine).detach().cpu(), dtype=np.float64)  # meta may sit on the GPU
    if ref is None:  # DICOM: the grid MONAI read (RAS, from ImagePositionPatient/Orientation and PixelSpacing)
        ref = Grid(tuple(int(s) for s in array.shape), affine)
    reason = grid_mismatch(ref, Grid(array.shape, affine))
    if reason:
        raise SegvolError(f"{_name(image_input)}: internal error: the prediction is not on the input's grid ({reason})")
    mask = image_like(array, ref) if is_in_memory(image_input) else None
    return Prediction(labels=array, affine=np.asarray(ref.affine), timings=times, mask=mask), ref


def coarse_stage(locator: LoadedModel, keep_largest: int) -> LoadedModel:
    """A cascade's coarse stage that keeps its ``keep_largest`` largest finds (``locate.keep_largest``) through its
    own post-processing, on its own grid (at 3 mm: milliseconds; on the scan's grid: seconds)."""
    return replace(locator, cfg=locator.cfg.replace(infer={"keep_largest": keep_largest}))


def _predict_located(model: LoadedModel, image_input: Any, sw_batch_size: int | None, overlap: float | str | None,
                     progress: bool, tta: bool, amp: bool, extras: dict[str, Any] | None) -> tuple[Prediction, Any]:
    """A cascade (:mod:`segvol.inference.cascade`): the coarse stage finds the target on the whole scan, the fine
    stage segments the box around it, and its mask (and probabilities) are pasted back onto the scan's grid."""
    from segvol.inference.cascade import box_text, crop_scan, located_box, paste, scan_in_memory

    assert model.locator is not None
    clock = time.perf_counter()
    ref = _input_grid(image_input, int(model.task.in_channels))
    scan = scan_in_memory(image_input)  # read once, for both stages
    first = scan[0] if isinstance(scan, (list, tuple)) else scan
    ref = ref if ref is not None else Grid(tuple(int(s) for s in first.shape[:3]), np.asarray(first.affine))
    shape = tuple(int(s) for s in ref.shape[:3])
    locator = coarse_stage(model.locator, model.cfg.locate.keep_largest)
    found, _ = predict_scan(locator, scan, sw_batch_size, overlap, amp=amp, locate=False)
    box = located_box(found.labels, np.asarray(ref.affine), model.cfg.locate.margin_mm)
    located = time.perf_counter() - clock
    if box is None:
        log.info("locate: the coarse stage found nothing; segmenting the whole scan")
        part, _ = predict_scan(model, scan, sw_batch_size, overlap, progress, tta, amp, extras, locate=False)
        labels = part.labels
    else:
        log.info("locate: %s", box_text(box, shape))
        part, _ = predict_scan(model, crop_scan(scan, box), sw_batch_size, overlap, progress, tta, amp, extras,
                               locate=False)
        labels = paste(part.labels, box, shape)
        if extras is not None and "prob" in extras:
            extras["prob"] = paste(extras["prob"], box, shape, channels_first=True)
        if extras is not None and "image" in extras:
            data = np.asanyarray(first.dataobj)
            extras["image"] = np.asarray(data[..., 0] if data.ndim == 4 else data, dtype=np.float32)
    mask = image_like(labels, ref) if is_in_memory(image_input) else None
    timings = {"locate": located, **part.timings}
    return Prediction(labels=labels, affine=np.asarray(ref.affine), timings=timings, mask=mask, located=box), ref


def infer_file(model: LoadedModel, image_input: Any, out_path: str | Path | None, sw_batch_size: int | None = None,
               overlap: float | str | None = None, progress: bool = False, tta: bool = False, amp: bool = False,
               outputs: Any = None, overwrite: bool = False) -> Prediction:
    """Predict one scan (:func:`predict_scan`) and write its outputs on the scan's own grid.

    Args:
        image_input: a NIfTI path, the sequence paths of one scan, a DICOM series folder, or the same in memory
            (a nibabel image or a list of them).
        out_path: the mask path the outputs are named after; None writes nothing (in-memory use).
        outputs: an :class:`segvol.inference.outputs.OutputPlan` (default: the mask only).
    """
    from segvol.inference.outputs import OutputContext, OutputPlan
    from segvol.utils import check_writable_target

    plan = outputs if outputs is not None else OutputPlan.of(None)
    if isinstance(image_input, (list, tuple)) and len(image_input) == 1:  # one sequence: the scan itself
        image_input = image_input[0]
    targets = plan.targets(out_path) if out_path is not None else {}
    for target in targets.values():
        check_writable_target(target, overwrite)
    found = plan.wanted() if targets else {}
    pred, ref = predict_scan(model, image_input, sw_batch_size, overlap, progress, tta, amp, found)
    if not targets:
        return pred
    start = time.perf_counter()
    pred.files = plan.write(targets, OutputContext(pred.labels, ref, None if is_in_memory(image_input) else
                                                   image_input, found, model.task, overwrite))
    pred.timings["save"] = time.perf_counter() - start
    pred.output = targets.get("seg")
    if not is_in_memory(image_input):
        pred.mask = pred.output
    return pred
