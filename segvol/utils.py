"""Small shared helpers: atomic file writes, device selection, seeding."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segvol.errors import SegvolError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["atomic_path", "atomic_dir", "pick_device", "seed_everything", "torch_flags",
           "check_writable_target", "union_box", "crop_to_union"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed onto ``target`` in one step.

    The temporary name keeps ``target``'s suffixes (``.nii.gz``, ``.onnx``) so writers that pick a format from the
    name behave. On any error the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial" + suffix, dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.errno == 28:  # ENOSPC
            raise SegvolError(f"{target}: disk full while writing; nothing was written") from exc
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` (which must not exist unless
    ``overwrite``). On any error the temporary folder is removed and ``target`` is left as it was.

    An existing ``target`` is first renamed aside (``.<name>.<random>.old``), the new folder renamed into its place,
    and only then the old one deleted: at every moment one complete version exists, and an error between the two
    renames puts the old folder back (a hard kill there leaves it whole under the aside name).
    """
    target = Path(target)
    check_writable_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp
        _swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(new: Path, target: Path) -> None:
    """Rename ``new`` onto ``target``, keeping the old ``target`` aside until the new one is in place."""
    aside = None
    if target.exists() or target.is_symlink():
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, aside / target.name)  # same file system: one rename, the old folder stays whole
    try:
        os.rename(new, target)
    except BaseException:
        if aside is not None:
            os.replace(aside / target.name, target)
            aside.rmdir()
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
        if aside.exists():
            log.warning("%s: replaced, but the old version could not be removed from %s", target, aside)


def check_writable_target(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse to replace an existing output unless ``overwrite`` is set."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise SegvolError(f"{path}: already exists (use --overwrite to replace it)")
    return path


def pick_device(name: str = "auto") -> Any:
    """Resolve ``auto|cpu|cuda|cuda:N`` to a ``torch.device`` and log which one is used."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda")
            log.info("device: %s (%s)", device, torch.cuda.get_device_name(device))
        else:
            device = torch.device("cpu")
            log.info("device: cpu (no CUDA device found)")
        return device
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SegvolError(f"--device {name}: no CUDA device is available here (use --device cpu)")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SegvolError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        log.info("device: %s (%s)", device, torch.cuda.get_device_name(device))
        return device
    if name != "cpu":
        raise SegvolError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    log.info("device: cpu")
    return torch.device("cpu")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy, PyTorch and MONAI's global state; ``deterministic`` decides the kernels.

    MONAI's ``set_determinism`` also switches cuDNN to its deterministic kernels (and benchmark off); that is
    undone unless ``deterministic`` is asked for, which also turns on ``torch.use_deterministic_algorithms``.
    """
    import numpy as np
    import torch
    from monai.utils import set_determinism

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    set_determinism(seed=seed)
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if deterministic:
        torch.backends.cudnn.benchmark = False


@contextlib.contextmanager
def torch_flags(**cudnn: bool) -> Iterator[None]:
    """Set ``torch.backends.cudnn`` flags (``benchmark``, ``deterministic``) for a block and restore them after,
    so a library call (e.g. :func:`segvol.api.infer`) leaves the caller's global settings as they were."""
    import torch

    saved = {name: getattr(torch.backends.cudnn, name) for name in cudnn}
    try:
        for name, value in cudnn.items():
            setattr(torch.backends.cudnn, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(torch.backends.cudnn, name, value)


def union_box(pred: np.ndarray, ref: np.ndarray, margin: int = 2) -> tuple[slice, ...] | None:
    """The bounding box of ``pred | ref`` plus ``margin`` voxels (clipped at the start), None when both are empty.

    One pass over the full volume (a projection along the last axis); the last axis' extent is then found in the
    much smaller box of the others.
    """
    import numpy as np

    union = pred | ref
    flat = union.any(axis=-1)
    if not flat.any():
        return None
    box = []
    for ax in range(flat.ndim):
        hit = np.flatnonzero(flat.any(axis=tuple(a for a in range(flat.ndim) if a != ax)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    last = np.flatnonzero(union[tuple(box)].any(axis=tuple(range(flat.ndim))))
    box.append(slice(int(last[0]), int(last[-1]) + 1))
    return tuple(slice(max(s.start - margin, 0), s.stop + margin) for s in box)


def crop_to_union(pred: np.ndarray, ref: np.ndarray, margin: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to :func:`union_box` (no overlap or surface metric changes); empty arrays when both masks are
    empty."""
    box = union_box(pred, ref, margin)
    if box is None:
        return pred[(slice(0, 0),) * pred.ndim], ref[(slice(0, 0),) * ref.ndim]
    return pred[box], ref[box]
