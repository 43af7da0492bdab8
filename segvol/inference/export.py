"""ONNX export with a parity check against PyTorch under ONNX Runtime."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segvol.errors import SegvolError
from segvol.utils import atomic_path

__all__ = ["ExportResult", "export_onnx_file", "locator_path", "TOLERANCE"]

log = logging.getLogger(__name__)
TOLERANCE = 1e-3  # max abs logit difference accepted between PyTorch and ONNX Runtime


@dataclass
class ExportResult:
    """What :func:`export_onnx_file` (and ``segvol.api.export_onnx``) returns.

    Attributes:
        path: the ONNX file written.
        max_abs_diff: the largest |ONNX Runtime (CPU) - PyTorch| logit difference over ``checked_shapes``.
        dynamic: batch and spatial axes are dynamic (else the graph takes the ROI size only).
        checked_shapes: the input shapes the two were compared on.
        tolerance: the largest difference the export accepts (it fails, writing nothing, above it).
        divisor: what each dynamic spatial axis must be a multiple of (the network's downsampling).
        locator: a cascade's coarse stage, exported beside ``path`` (``model.locate.onnx``), or None.
    """

    path: Path
    max_abs_diff: float
    dynamic: bool
    checked_shapes: list[tuple[int, ...]]
    tolerance: float = TOLERANCE
    divisor: tuple[int, int, int] = (16, 16, 16)
    locator: ExportResult | None = None


def _export(model: torch.nn.Module, example: torch.Tensor, path: Path, divisor: tuple[int, int, int] = (16, 16, 16)
            ) -> bool:
    """Export with dynamic batch and spatial axes (multiples of the network's ``divisor``) where the exporter allows;
    else static."""
    from torch.export import Dim

    spatial = {i: d * Dim(f"s{i}", min=1, max=1024 // d) for i, d in zip((2, 3, 4), divisor)}
    kwargs: dict[str, Any] = dict(input_names=["image"], output_names=["logits"], dynamo=True, optimize=True,
                                  verbose=False)
    sink = io.StringIO()
    for name in ("torch.onnx", "torch.onnx._internal.exporter._registration", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (example,), str(path),
                              dynamic_shapes={"x": {0: Dim("batch", min=1, max=256), **spatial}}, **kwargs)
            return True
        except Exception as exc:  # the exporter raises many types; fall back to a static graph
            log.warning("dynamic-shape export failed (%s); exporting fixed shape %s", type(exc).__name__,
                        tuple(example.shape))
            torch.onnx.export(model, (example,), str(path), **kwargs)
            return False


def _parity(model: torch.nn.Module, path: Path, shapes: list[tuple[int, ...]]) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst, gen = 0.0, torch.Generator().manual_seed(0)
    for shape in shapes:
        x = torch.randn(*shape, generator=gen)
        with torch.inference_mode():
            ref = model(x).numpy()
        out = session.run(None, {"image": x.numpy()})[0]
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst


def locator_path(out: str | Path) -> Path:
    """Where a cascade's coarse stage goes beside its ONNX file: ``model.onnx`` -> ``model.locate.onnx``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.locate{out.suffix or '.onnx'}")


def export_onnx_file(ckpt: dict, out: str | Path, tolerance: float = TOLERANCE) -> ExportResult:
    """Export a loaded checkpoint to ``out``; check the graph; compare with PyTorch; embed segvol metadata.

    A cascade's checkpoint (one with a ``locator``) becomes two files found together: its coarse stage at
    :func:`locator_path` and the fine stage at ``out``, whose metadata names the other; when the second export fails
    the first file is removed again.
    """
    if "locator" not in ckpt:
        return _export_one(ckpt, out, tolerance)
    coarse_path = locator_path(out)
    coarse = _export_one(dict(ckpt["locator"]), coarse_path, tolerance)
    try:
        fine = _export_one(ckpt, out, tolerance, extra_meta={"segvol_locator": coarse_path.name})
    except BaseException:
        coarse_path.unlink(missing_ok=True)
        raise
    fine.locator = coarse
    return fine


def _export_one(ckpt: dict, out: str | Path, tolerance: float, extra_meta: dict[str, Any] | None = None
                ) -> ExportResult:
    import onnx

    from segvol.networks import build_network, shape_divisor

    model = build_network(ckpt["network"])
    divisor = shape_divisor(ckpt["network"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    roi = tuple(ckpt["config"]["preprocess"]["roi_size"])
    channels = int(ckpt["task"]["in_channels"])
    out = Path(out)
    with atomic_path(out) as tmp:
        dynamic = _export(model, torch.zeros(1, channels, *roi), tmp, divisor)
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto, full_check=True)
        meta = {"segvol_config": ckpt["config"], "segvol_network": ckpt["network"], "segvol_task": ckpt["task"],
                **(extra_meta or {})}
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, json.dumps(value)
        onnx.save(proto, str(tmp))
        shapes = [(1, channels, *roi)]
        if dynamic:
            other = (max(d, r - d) if i else r + d for i, (r, d) in enumerate(zip(roi, divisor)))
            shapes.append((2, channels, *other))
        diff = _parity(model, tmp, shapes)
        if not diff <= tolerance:
            raise SegvolError(f"{out}: ONNX Runtime output differs from PyTorch by {diff:.3g} "
                              f"(> tolerance {tolerance}); nothing was written")
    return ExportResult(path=out, max_abs_diff=diff, dynamic=dynamic, checked_shapes=shapes, tolerance=tolerance,
                        divisor=divisor)
