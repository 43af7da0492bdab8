"""The optional outputs of ``segvol infer`` beside each mask: probability map, overlay PNG, slice GIF, surface mesh.

File names follow the mask's (``scan_seg.nii.gz``):

=============  =============================  ==============================================================
option         file                           content
=============  =============================  ==============================================================
``--prob``     ``scan_prob.nii.gz``           float32 foreground probability on the input's grid (one volume
                                              per class or region in the model's order, e.g. TC, WT, ET; 4D
                                              when several), before post-processing
``--overlay``  ``scan_overlay.png``           axial, coronal and sagittal views through the mask's largest
                                              extent, scan in grey, mask in red
``--gif``      ``scan_seg.gif``               a sweep through the axial slices that hold the mask
``--mesh``     ``scan_seg.stl`` (or ``.ply``)  surface per label value in scanner mm (``_label<v>`` appended
                                              when there are several)
=============  =============================  ==============================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segvol.utils import check_writable_target

__all__ = ["ExtraOutputs", "extra_targets", "write_extras"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtraOutputs:
    """Which optional outputs to write (see the module doc)."""

    prob: bool = False
    overlay: bool = False
    gif: bool = False
    mesh: str | None = None  # "stl" or "ply"

    def wanted(self) -> dict[str, None]:
        """The requests :func:`segvol.inference.predictor.predict_volume` fills (``extras``)."""
        want: dict[str, None] = {}
        if self.prob:
            want["prob"] = None
        if self.overlay or self.gif:
            want["image"] = None
        return want

    def __bool__(self) -> bool:
        return bool(self.prob or self.overlay or self.gif or self.mesh)


def _base(mask_path: Path) -> tuple[str, str]:
    """(``scan_seg``, ``scan``) for ``scan_seg.nii.gz``."""
    from segvol.inference.nifti import strip_nifti_suffix

    stem = strip_nifti_suffix(mask_path.name)
    return stem, stem[: -len("_seg")] if stem.endswith("_seg") and len(stem) > 4 else stem


def extra_targets(mask_path: str | Path, extras: ExtraOutputs | None, overwrite: bool = False) -> dict[str, Path]:
    """The files ``extras`` will write next to ``mask_path``, checked not to exist unless ``overwrite``."""
    if not extras:
        return {}
    mask_path = Path(mask_path)
    stem, base = _base(mask_path)
    folder = mask_path.parent
    targets = {}
    if extras.prob:
        targets["prob"] = folder / f"{base}_prob.nii.gz"
    if extras.overlay:
        targets["overlay"] = folder / f"{base}_overlay.png"
    if extras.gif:
        targets["gif"] = folder / f"{stem}.gif"
    if extras.mesh:
        targets["mesh"] = folder / f"{stem}.{extras.mesh}"
    for path in targets.values():
        check_writable_target(path, overwrite)
    return targets


def write_extras(targets: dict[str, Path], labels: np.ndarray, reference: Any, found: dict[str, Any],
                 overwrite: bool = False) -> dict[str, Path]:
    """Write the requested outputs for one prediction.

    Args:
        targets: from :func:`extra_targets`.
        labels: the uint8 mask on the input's grid.
        reference: the input's grid (a nibabel image or a DICOM ``SeriesGrid``), for the affine and header.
        found: what :func:`predict_volume` filled in (``image``, ``prob``).
    """
    from segvol.inference.nifti import save_like

    affine = np.asarray(reference.affine, dtype=np.float64)
    written: dict[str, Path] = {}
    if "prob" in targets:
        prob = found["prob"]
        prob = prob[0] if prob.shape[0] == 1 else np.moveaxis(prob, 0, -1)  # NIfTI: channels last
        save_like(prob, reference, targets["prob"], dtype=np.float32)
        written["prob"] = targets["prob"]
    if "overlay" in targets or "gif" in targets:
        from segvol.evaluation.overlays import save_gif, save_overlay

        image, mask = found.get("image"), labels != 0
        if "overlay" in targets:
            name = targets["overlay"].name
            title = f"{name}: {int(mask.sum())} voxels segmented" if mask.any() else f"{name}: nothing segmented"
            written["overlay"] = save_overlay(targets["overlay"], image, None, mask, affine, title=title)
        if "gif" in targets:
            written["gif"] = save_gif(targets["gif"], image, None, mask, affine)
    if "mesh" in targets:
        from segvol.mesh import write_label_meshes

        meshes = write_label_meshes(labels, affine, targets["mesh"], overwrite=overwrite, source=str(targets["mesh"]))
        if meshes:
            written["mesh"] = meshes[0][0]
    return written
