"""The web app's logic, free of Streamlit so that it can be tested directly: model choice, safe handling of
uploads, inference, slice rendering and metrics."""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segvol.config import env_path
from segvol.errors import SegvolError

__all__ = ["ModelChoice", "choose_model", "data_dir", "server_path", "result_key", "safe_name",
           "AppResult", "segment_upload", "render_slice",
           "dice_score", "DEFAULT_MODEL", "MAX_UPLOAD_MB", "AXES", "TreeView", "tree_view"]

DEFAULT_MODEL = "models/model.onnx"
DATA_DIR_ENV = "SEGVOL_APP_DATA_DIR"  # set by ``segvol app --data-dir``
MAX_UPLOAD_MB = 1024
AXES = {"axial (z)": 2, "coronal (y)": 1, "sagittal (x)": 0}


@dataclass(frozen=True)
class ModelChoice:
    path: Path
    reason: str


def data_dir() -> Path | None:
    """The one folder whose files visitors may name by path (``segvol app --data-dir``); None: no server paths."""
    folder = env_path(DATA_DIR_ENV)
    return Path(folder).expanduser().resolve() if folder else None


def server_path(typed: str, allowed: Path | None) -> Path:
    """A path a visitor typed, resolved (``..`` and symbolic links followed) and accepted only inside ``allowed``.

    Relative paths are taken inside ``allowed``. Without ``allowed``, reading server files is off.
    """
    text = typed.strip()
    if allowed is None:
        raise SegvolError(f"{text}: reading files on the server is off; upload the file, or start the app with "
                          f"'segvol app --data-dir FOLDER' to allow paths inside FOLDER")
    root = allowed.resolve()
    path = (root / Path(text).expanduser()).resolve()  # an absolute path replaces root here
    if not path.is_relative_to(root):
        raise SegvolError(f"{text}: outside the app's data folder {root}; only paths inside it can be read")
    return path


def choose_model(uploaded: tuple[str, bytes] | None, typed: str | None, workdir: Path,
                 default: str = DEFAULT_MODEL, allowed: Path | None = None) -> ModelChoice:
    """An uploaded .onnx first, else a typed path (inside ``allowed`` only, see :func:`server_path`), else
    ``MODEL_PATH`` (set by whoever started the app), else ``models/model.onnx``."""
    if uploaded is not None:
        name, data = uploaded
        path = workdir / safe_name(name, (".onnx",))
        path.write_bytes(data)
        return ModelChoice(path, f"uploaded file {name}")
    if typed and typed.strip():
        return ModelChoice(server_path(typed, allowed), "path typed in the sidebar")
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


def result_key(files: list[tuple[str, bytes]], model: ModelChoice) -> str:
    """What a result depends on, by content: the scans' bytes and the model file's bytes (SHA-256), so another scan
    of the same name and size, or a replaced model, is segmented again."""
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(f"{len(name)}:{name}:{len(data)}:".encode())
        digest.update(data)
    digest.update(str(model.path).encode())
    if model.path.is_file():
        with open(model.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass
class AppResult:
    image: np.ndarray  # (X, Y, Z) first channel, as stored (RAS-ish display handled by render_slice)
    mask: np.ndarray  # (X, Y, Z) uint8 on the same grid
    mask_bytes: bytes  # the mask as .nii.gz, for download
    seconds: float
    backend: str
    affine: np.ndarray  # voxel -> scanner mm of the scan
    vessel: bool = False  # a single CT-like scan with a binary mask: the artery tree view applies


def segment_upload(files: list[tuple[str, bytes]], model: ModelChoice, device: str = "auto") -> AppResult:
    """Segment uploaded scans in memory: the bytes are read with nibabel (gunzipped for ``.nii.gz``) and given to
    :func:`segvol.api.infer` as images, so nothing is written to disk."""
    import gzip

    from segvol import api
    from segvol.io.nifti import image_from_bytes

    if not files:
        raise SegvolError("no scan uploaded")
    if not model.path.is_file():
        raise SegvolError(f"{model.path}: model not found ({model.reason}); export one with 'segvol export-onnx'")
    named = [(safe_name(name, (".nii", ".nii.gz")), data) for name, data in files]
    images = [image_from_bytes(data, name) for name, data in _order_sequences(named)]
    start = time.perf_counter()
    (pred,) = api.infer(inputs=[images if len(images) > 1 else images[0]], model=model.path, device=device)
    seconds = time.perf_counter() - start
    image = np.asanyarray(images[0].dataobj).astype(np.float32)
    image = image[..., 0] if image.ndim == 4 else image
    vessel = len(images) == 1 and set(np.unique(pred.labels).tolist()) <= {0, 1}
    return AppResult(image, pred.labels, gzip.compress(pred.mask.to_bytes(), compresslevel=6), seconds,
                     model.path.suffix.lstrip("."), np.asarray(images[0].affine), vessel=vessel)


def _order_sequences(named: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """BraTS sequences in segvol's channel order (flair, t1, t1ce, t2) by their file names."""
    order = [("flair", "t2f"), ("t1n", "_t1."), ("t1ce", "t1c"), ("t2w", "_t2.")]
    ranked = []
    for i, (name, _) in enumerate(named):
        low = "_" + name.lower()
        rank = next((r for r, keys in enumerate(order) if any(k in low for k in keys)), len(order))
        ranked.append((rank, name, i))
    return [named[i] for _, _, i in sorted(ranked)]


def render_slice(image: np.ndarray, mask: np.ndarray, axis: int, index: int, opacity: float) -> np.ndarray:
    """RGB uint8 picture of one slice: the scan in grey (1st-99th percentile window), the mask in red."""
    from segvol.viz.overlays import grey_window, overlay_rgb, slice_of

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
    """Read an uploaded reference mask in memory and check that it matches the scan's grid."""
    from segvol.io.nifti import image_from_bytes

    ref = np.asanyarray(image_from_bytes(data[1], safe_name(data[0], (".nii", ".nii.gz"))).dataobj)
    if ref.shape[:3] != tuple(shape[:3]):
        raise SegvolError(f"{data[0]}: reference shape {ref.shape} does not match the scan {tuple(shape)}")
    return ref


@dataclass
class TreeView:
    """The artery tree of a vessel mask, for the app: picture, ``tree.json``, a one-line summary and the curved
    planar reformation of each main artery (file name, PNG)."""

    png: bytes
    json: bytes
    summary: str
    cprs: list[tuple[str, bytes]] = field(default_factory=list)


def tree_view(mask: np.ndarray, affine: np.ndarray) -> TreeView:
    """Run ``segvol tree`` on the mask in a private temporary folder and read the picture and tree.json back."""
    from segvol.tree.outputs import summary_line, write_tree

    if not np.asarray(mask).any():
        raise SegvolError("the mask is empty; there is no artery tree to trace")
    workdir = Path(tempfile.mkdtemp(prefix="segvol-tree-"))
    try:
        out = write_tree(mask, affine, workdir / "tree", source="mask")
        cprs = [(name, path.read_bytes()) for name, path in sorted(out.files.items()) if name.startswith("cpr_")]
        return TreeView((out.out_dir / "tree.png").read_bytes(), (out.out_dir / "tree.json").read_bytes(),
                        summary_line(out.analysis), cprs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
