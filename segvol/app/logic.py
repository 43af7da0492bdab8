"""The web app's logic, free of Streamlit so that it can be tested directly: model choice, safe handling of
uploads, inference, slice rendering and metrics."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segvol.config import env_path
from segvol.errors import SegvolError

__all__ = ["ModelChoice", "choose_model", "safe_name", "AppResult", "segment_upload", "render_slice",
           "dice_score", "DEFAULT_MODEL", "MAX_UPLOAD_MB", "AXES"]

DEFAULT_MODEL = "models/model.onnx"
MAX_UPLOAD_MB = 1024
AXES = {"axial (z)": 2, "coronal (y)": 1, "sagittal (x)": 0}


@dataclass(frozen=True)
class ModelChoice:
    path: Path
    reason: str


def choose_model(uploaded: tuple[str, bytes] | None, typed: str | None, workdir: Path,
                 default: str = DEFAULT_MODEL) -> ModelChoice:
    """An uploaded .onnx first, else a typed path, else ``MODEL_PATH``, else ``models/model.onnx``."""
    if uploaded is not None:
        name, data = uploaded
        path = workdir / safe_name(name, (".onnx",))
        path.write_bytes(data)
        return ModelChoice(path, f"uploaded file {name}")
    if typed and typed.strip():
        return ModelChoice(Path(typed.strip()).expanduser(), "path typed in the sidebar")
    from_env = env_path("MODEL_PATH")
    if from_env:
        return ModelChoice(Path(from_env), "MODEL_PATH environment variable")
    return ModelChoice(Path(default), "default location")


def safe_name(name: str, suffixes: tuple[str, ...]) -> str:
    """The upload's base name only (no folders, no '..'), checked against the allowed suffixes."""
    base = Path(name.replace("\\", "/")).name
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".") or "upload"
    if not base.lower().endswith(suffixes):
        raise SegvolError(f"{name}: expected a {' or '.join(suffixes)} file")
    return base


@dataclass
class AppResult:
    image: np.ndarray  # (X, Y, Z) first channel, as stored (RAS-ish display handled by render_slice)
    mask: np.ndarray  # (X, Y, Z) uint8 on the same grid
    mask_bytes: bytes  # the mask as .nii.gz, for download
    seconds: float
    backend: str
    affine: np.ndarray  # voxel -> scanner mm of the scan


def segment_upload(files: list[tuple[str, bytes]], model: ModelChoice, device: str = "auto") -> AppResult:
    """Write the uploads to a private temp folder, segment them, read the result back, clean up."""
    import nibabel as nib

    from segvol import api

    if not files:
        raise SegvolError("no scan uploaded")
    if not model.path.is_file():
        raise SegvolError(f"{model.path}: model not found ({model.reason}); export one with 'segvol export-onnx'")
    workdir = Path(tempfile.mkdtemp(prefix="segvol-app-"))
    try:
        paths = [workdir / safe_name(name, (".nii", ".nii.gz")) for name, _ in files]
        for path, (_, data) in zip(paths, files):
            path.write_bytes(data)
        inputs = _order_sequences(paths) if len(paths) > 1 else paths
        start = time.perf_counter()
        out = workdir / "mask.nii.gz"
        (pred,) = api.infer(inputs=[inputs if len(inputs) > 1 else inputs[0]], model=model.path, out=out,
                            device=device)
        seconds = time.perf_counter() - start
        first = nib.load(str(inputs[0]))
        image = np.asanyarray(first.dataobj).astype(np.float32)
        image = image[..., 0] if image.ndim == 4 else image
        return AppResult(image, pred.labels, out.read_bytes(), seconds, model.path.suffix.lstrip("."),
                         np.asarray(first.affine))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _order_sequences(paths: list[Path]) -> list[Path]:
    """BraTS sequences in segvol's channel order (flair, t1, t1ce, t2) by their file names."""
    order = [("flair", "t2f"), ("t1n", "_t1."), ("t1ce", "t1c"), ("t2w", "_t2.")]
    ranked = []
    for path in paths:
        low = "_" + path.name.lower()
        rank = next((i for i, keys in enumerate(order) if any(k in low for k in keys)), len(order))
        ranked.append((rank, path.name, path))
    return [p for _, _, p in sorted(ranked)]


def render_slice(image: np.ndarray, mask: np.ndarray, axis: int, index: int, opacity: float) -> np.ndarray:
    """RGB uint8 picture of one slice: the scan in grey (1st-99th percentile window), the mask in red."""
    from segvol.evaluation.overlays import grey_window, overlay_rgb, slice_of

    index = int(np.clip(index, 0, image.shape[axis] - 1))
    labels = slice_of(mask, axis, index) > 0
    rgb = overlay_rgb(slice_of(image, axis, index), np.zeros_like(labels), labels, grey_window(image, (1, 99)),
                      alpha=opacity)
    return np.ascontiguousarray(np.rot90(rgb))  # rows run anterior->posterior / superior->inferior


def mesh_stl(mask: np.ndarray, affine: np.ndarray) -> bytes:
    """The mask's surface (every non-zero voxel) as binary STL in scanner mm, for download."""
    from segvol.mesh import mask_to_mesh, write_stl

    if not mask.any():
        raise SegvolError("the mask is empty; there is no surface to download")
    workdir = Path(tempfile.mkdtemp(prefix="segvol-mesh-"))
    try:
        return write_stl(mask_to_mesh(mask, affine), workdir / "mask.stl").read_bytes()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def dice_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of the foreground (any non-zero label); 1.0 when both are empty."""
    from segvol.evaluation.metrics import overlap_metrics

    return float(overlap_metrics(pred > 0, ref > 0)["dice"])


def reference_mask(data: tuple[str, bytes], shape: tuple[int, ...]) -> Any:
    """Read an uploaded reference mask and check that it matches the scan's grid."""
    import nibabel as nib

    workdir = Path(tempfile.mkdtemp(prefix="segvol-ref-"))
    try:
        path = workdir / safe_name(data[0], (".nii", ".nii.gz"))
        path.write_bytes(data[1])
        ref = np.asanyarray(nib.load(str(path)).dataobj)
    except SegvolError:
        raise
    except Exception as exc:
        raise SegvolError(f"{data[0]}: not a readable NIfTI mask ({type(exc).__name__})") from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if ref.shape[:3] != tuple(shape[:3]):
        raise SegvolError(f"{data[0]}: reference shape {ref.shape} does not match the scan {tuple(shape)}")
    return ref
