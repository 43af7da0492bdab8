"""Reading masks and scans for evaluation, and matching two folders of masks by case id.

Matching rule: a file's case id is its name without ``.nii.gz`` / ``.nii``, then without any trailing marker
(repeatedly, in any order). The markers are segvol's own ``_seg`` and ``-seg`` plus those the caller passes: the
datasets' (:meth:`segvol.data.adapter.DatasetAdapter.case_id`; :func:`segvol.data.registry.file_markers` gathers
every registered dataset's). With ImageCAS's ``.label`` and ``.img``, ``12.label.nii.gz`` (reference),
``12.img_seg.nii.gz`` (what ``segvol infer`` writes) and ``12.img.nii.gz`` (the scan) all read as case ``12``.
When two files of one folder give the same id, a mask folder keeps the one named like a mask and an image folder
the other; anything still ambiguous is an error naming both files. Reference folders may hold one folder per case
(BraTS): their ``*seg.nii(.gz)`` files are found one level down.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from segvol.errors import SegvolError
from segvol.io.nifti import nifti_stem

__all__ = ["case_id", "index_folder", "match_folders", "load_mask", "load_scan", "spacing_of",
           "check_same_grid", "load_pair", "SEGVOL_MARKERS", "FileMarkers"]

SEGVOL_MARKERS = ("_seg", "-seg")  # what segvol writes after a scan's name


class FileMarkers(NamedTuple):
    """Name endings (before ``.nii(.gz)``) of masks and of scans, stripped to make case ids."""

    masks: tuple[str, ...] = SEGVOL_MARKERS
    images: tuple[str, ...] = ()


SEGVOL_ONLY = FileMarkers()  # no dataset's markers: only what segvol writes


def case_id(name: str, markers: Sequence[str] = SEGVOL_MARKERS) -> str:
    """The case id of a file name (see the module doc); e.g. ``12.img_seg.nii.gz`` -> ``12`` with ImageCAS's
    markers."""
    stem = nifti_stem(name) or name
    changed = True
    while changed:
        changed = False
        for marker in markers:
            if stem.lower().endswith(marker) and len(stem) > len(marker):
                stem, changed = stem[: -len(marker)], True
    return stem


def _is_mask_name(name: str, markers: FileMarkers) -> bool:
    stem = (nifti_stem(name) or name).lower()
    return any(m in stem for m in markers.masks)


def index_folder(folder: str | Path, masks: bool = True, markers: FileMarkers = SEGVOL_ONLY) -> dict[str, Path]:
    """``{case id: file}`` for the NIfTI files of ``folder`` (``masks``: prefer mask-named files, else scans)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SegvolError(f"{folder}: no such folder")
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and nifti_stem(p.name) and not p.name.startswith(".")]
    if masks:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files += [p for p in sorted(sub.iterdir()) if p.is_file() and nifti_stem(p.name)
                      and (nifti_stem(p.name) or "").lower().endswith("seg")]
    found: dict[str, Path] = {}
    for path in files:
        cid = case_id(path.name, markers.masks + markers.images)
        if cid not in found:
            found[cid] = path
            continue
        old = found[cid]
        if _is_mask_name(old.name, markers) != _is_mask_name(path.name, markers):
            found[cid] = path if _is_mask_name(path.name, markers) == masks else old
        else:
            raise SegvolError(f"{path}: same case id {cid!r} as {old}; keep one of them in {folder}")
    if not found:
        raise SegvolError(f"{folder}: holds no .nii/.nii.gz files")
    return found


def match_folders(pred_dir: str | Path, ref_dir: str | Path, markers: FileMarkers = SEGVOL_ONLY
                  ) -> list[tuple[str, Path, Path]]:
    """``(case id, prediction, reference)`` for every id in both folders; none in common is an error."""
    preds, refs = index_folder(pred_dir, markers=markers), index_folder(ref_dir, markers=markers)
    common = sorted(set(preds) & set(refs), key=lambda c: (len(c), c))
    if not common:
        raise SegvolError(f"{pred_dir}: no case id in common with {ref_dir} (e.g. {next(iter(preds))!r} vs "
                          f"{next(iter(refs))!r}); names are matched after stripping "
                          f"{', '.join(markers.masks + markers.images)} and .nii(.gz)")
    return [(c, preds[c], refs[c]) for c in common]


def load_mask(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """An integer label map (float files rounded) and its affine; a 4D file with one volume is squeezed."""
    from segvol.io.nifti import check_volume

    img = check_volume(path)
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4:
        data = data[..., 0]
    if not np.isfinite(data).all():
        raise SegvolError(f"{path}: the mask holds NaN or Inf values")
    return np.rint(data).astype(np.int16), np.asarray(img.affine, dtype=np.float64)


def load_scan(path: str | Path | list) -> np.ndarray:
    """The first channel of a scan (a path, or a list of sequence paths) as float32."""
    from segvol.io.nifti import read_header

    first = path[0] if isinstance(path, (list, tuple)) else path
    img = read_header(first)
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    return data[..., 0] if data.ndim == 4 else data


def spacing_of(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel size in mm per axis (column norms of the affine)."""
    return tuple(float(v) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))


def check_same_grid(pred_path: Path, pred_shape: tuple, pred_affine: np.ndarray, ref_path: Path, ref_shape: tuple,
                    ref_affine: np.ndarray) -> None:
    """Prediction and reference must share a grid (:func:`segvol.io.grid.grid_mismatch`)."""
    from segvol.io.grid import Grid, grid_mismatch

    reason = grid_mismatch(Grid(tuple(ref_shape), ref_affine), Grid(tuple(pred_shape), pred_affine))
    if reason is None:
        return
    if reason.startswith("shape"):
        raise SegvolError(f"{pred_path}: shape {tuple(pred_shape)} differs from the reference {ref_path} "
                          f"{tuple(ref_shape)}; resample the prediction onto the reference grid first")
    raise SegvolError(f"{pred_path}: not on the grid of the reference {ref_path} ({reason})")



def load_pair(pred_path: str | Path, ref_path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prediction and reference label maps checked to share one grid, and that grid's affine."""
    pred, pred_affine = load_mask(pred_path)
    ref, ref_affine = load_mask(ref_path)
    check_same_grid(Path(pred_path), pred.shape, pred_affine, Path(ref_path), ref.shape, ref_affine)
    return pred, ref, ref_affine
