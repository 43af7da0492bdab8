"""Failure analysis of one class in one case: error components with sizes and scanner locations, and a one-line
reading of the dominant error.

False negatives (reference, not predicted) and false positives (predicted, not reference) are split into
connected components (26-connectivity); each is reported with its volume (mm³), centroid and bounding-box extent
in scanner millimetres (the NIfTI affine applied), and whether it is a whole missed / spurious object (a component
of the reference with no predicted voxel, or of the prediction with no reference voxel).

The reading follows these rules, first match wins (``FN`` and ``FP`` are the error volumes):

1. both masks empty: "nothing to find, nothing found"; no errors at all: "matches the reference".
2. prediction empty: "misses the <class> entirely"; reference empty: "false positive: <class> predicted where the
   reference has none".
3. ``FN >= FP`` (under-segmentation dominates):
   a. vessel classes, when the missed voxels lie in thin vessel (mean reference radius at the missed voxels below
      0.75 x the median radius over the reference's centreline): "misses small distal branches";
   b. more than half of FN in whole missed objects: "misses N separate <class> component(s)";
   c. a reference with sub-labels (BraTS): "under-segments <sub-label>", naming the label most of FN carries;
   d. otherwise "under-segments the <class> (boundary too tight)".
4. ``FP > FN`` (over-segmentation dominates):
   a. the largest FP component is detached from the reference, at least 0.5 mL, and as bright as the reference
      (mean scan intensity at least 0.8 x the reference's mean, when a scan is given): "false positive in a large
      bright structure";
   b. more than half of FP in detached components: "spurious detached component(s)";
   c. otherwise "over-segments the <class> (boundary too wide)".

Each reading ends with the volume and location of the component that decided it (for 4b the largest detached one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from segvol.evaluation.metrics import CONNECTIVITY

__all__ = ["analyse_errors", "error_components", "read_errors"]

TOP_COMPONENTS = 5
THIN_RATIO = 0.75
BRIGHT_RATIO = 0.8
LARGE_FP_MM3 = 500.0


def _structure(ndim: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.generate_binary_structure(ndim, CONNECTIVITY)


def _to_mm(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return points @ affine[:3, :3].T + affine[:3, 3]


def error_components(errors: np.ndarray, other: np.ndarray, affine: np.ndarray, voxel_mm3: float,
                     image: np.ndarray | None = None, top: int = TOP_COMPONENTS) -> tuple[list[dict[str, Any]], float]:
    """The ``top`` largest connected components of ``errors`` (an FP or FN mask).

    Args:
        errors: the error mask.
        other: the mask on the other side (reference for FP, prediction for FN): a component touching it is
            "attached" (a boundary error), one that does not is "detached".
        affine: voxel -> scanner mm.
        voxel_mm3: volume of one voxel.
        image: the scan, for the mean intensity of each component (optional).

    Returns:
        ``(components, detached_fraction)``: dicts with ``volume_mm3``, ``centroid_mm``, ``extent_mm``,
        ``detached`` and ``mean_intensity`` (or None); the fraction of the error volume in detached components.
    """
    from scipy import ndimage

    if not errors.any():
        return [], 0.0
    labels, n = ndimage.label(errors, _structure(errors.ndim))
    grown = ndimage.binary_dilation(other, _structure(errors.ndim)) if other.any() else other
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index)
    touching = ndimage.maximum(grown, labels, index) > 0 if other.any() else np.zeros(n, bool)
    detached_fraction = float(sizes[~touching].sum() / sizes.sum())
    order = np.argsort(-sizes)[:top]
    objects = ndimage.find_objects(labels)
    centroids = ndimage.center_of_mass(errors, labels, index[order])
    comps = []
    for rank, i in enumerate(order):
        box = objects[i]
        corners = np.array([[s.start for s in box], [s.stop - 1 for s in box]], dtype=float)
        lo, hi = _to_mm(corners, affine)
        mean = float(ndimage.mean(image, labels, i + 1)) if image is not None else None
        comps.append({"volume_mm3": round(float(sizes[i]) * voxel_mm3, 2),
                      "centroid_mm": [round(float(c), 1) for c in _to_mm(np.array(centroids[rank]), affine)],
                      "extent_mm": [round(float(abs(h - low)), 1) for low, h in zip(lo, hi)],
                      "detached": bool(not touching[i]), "mean_intensity": mean})
    return comps, detached_fraction


def _whole_objects(mask: np.ndarray, other: np.ndarray) -> tuple[int, float]:
    """Components of ``mask`` with no voxel in ``other``: their count and their share of ``mask``'s volume."""
    from scipy import ndimage

    if not mask.any():
        return 0, 0.0
    labels, n = ndimage.label(mask, _structure(mask.ndim))
    index = np.arange(1, n + 1)
    hit = ndimage.maximum(other, labels, index) > 0 if other.any() else np.zeros(n, bool)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index)
    return int((~hit).sum()), float(sizes[~hit].sum() / max(sizes.sum(), 1))


def _thin_misses(ref: np.ndarray, fn: np.ndarray, spacing: Sequence[float]) -> bool:
    """Are the missed voxels in thinner vessel than the reference's typical centreline radius?"""
    from scipy import ndimage

    from segvol.evaluation.metrics import _skeleton

    radius = ndimage.distance_transform_edt(ref, sampling=spacing)
    centre = radius[_skeleton(ref)]
    if centre.size == 0 or not fn.any():
        return False
    # the radius of the vessel a missed voxel belongs to: the largest radius within its neighbourhood
    local = ndimage.maximum_filter(radius, size=3)[fn]
    return float(local.mean()) < THIN_RATIO * float(np.median(centre))


def _where(comp: dict[str, Any] | None) -> str:
    if not comp:
        return ""
    x, y, z = comp["centroid_mm"]
    return f" ({comp['volume_mm3'] / 1000:.2f} mL at {x:.0f}, {y:.0f}, {z:.0f} mm)"


def analyse_errors(pred: np.ndarray, ref: np.ndarray, affine: np.ndarray, spacing: Sequence[float],
                   class_name: str, image: np.ndarray | None = None, vessel: bool = False,
                   ref_labels: np.ndarray | None = None, label_names: dict[int, str] | None = None
                   ) -> dict[str, Any]:
    """FP/FN volumes, missed and spurious components, and the one-line reading (rules in the module doc).

    Args:
        pred: predicted mask of the class (bool).
        ref: reference mask of the class (bool).
        affine: voxel -> scanner mm (4x4).
        spacing: voxel size in mm.
        class_name: used in the reading.
        image: the scan on the same grid (first channel), for the brightness rule.
        vessel: apply the thin-branch rule.
        ref_labels: the reference label map, to name the sub-label most missed voxels carry (BraTS).
        label_names: names of those sub-labels (default ``label <v>``).
    """
    from segvol.utils import union_box

    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    box = union_box(pred, ref, margin=3)  # everything below runs on the box around both masks
    if box is not None:
        pred, ref = pred[box], ref[box]
        image = image[box] if image is not None else None
        ref_labels = ref_labels[box] if ref_labels is not None else None
        shift = np.eye(4)
        shift[:3, 3] = [s.start for s in box]
        affine = np.asarray(affine, dtype=np.float64) @ shift  # voxel indices of the box -> the same scanner mm
    voxel_mm3 = float(np.prod(spacing))
    fp, fn = pred & ~ref, ref & ~pred
    missed, _ = error_components(fn, pred, affine, voxel_mm3, image)
    spurious, detached_fp = error_components(fp, ref, affine, voxel_mm3, image)
    n_missed, missed_share = _whole_objects(ref, pred)
    n_spurious, _ = _whole_objects(pred, ref)
    facts: dict[str, Any] = {"fp_ml": float(fp.sum()) * voxel_mm3 / 1000, "fn_ml": float(fn.sum()) * voxel_mm3 / 1000,
             "missed_objects": n_missed, "missed_share": missed_share, "spurious_objects": n_spurious,
             "detached_fp_share": detached_fp, "ref_any": bool(ref.any()), "pred_any": bool(pred.any())}
    facts["thin_misses"] = bool(vessel and fn.any() and _thin_misses(ref, fn, spacing))
    facts["ref_mean_intensity"] = float(image[ref].mean()) if image is not None and ref.any() else None
    facts["fn_sublabel"] = None
    if ref_labels is not None and fn.any():
        values, counts = np.unique(ref_labels[fn], return_counts=True)
        if len(np.unique(ref_labels[ref])) > 1:
            top = int(values[np.argmax(counts)])
            facts["fn_sublabel"] = (label_names or {}).get(top, f"label {top}")
    reading = read_errors(facts, missed, spurious, class_name)
    return {"fp_ml": round(facts["fp_ml"], 4), "fn_ml": round(facts["fn_ml"], 4), "missed_objects": n_missed,
            "spurious_objects": n_spurious, "missed": missed, "spurious": spurious, "reading": reading}


def read_errors(facts: dict[str, Any], missed: list[dict[str, Any]], spurious: list[dict[str, Any]],
                class_name: str) -> str:
    """The one-line reading of the dominant error, from the facts :func:`analyse_errors` gathers."""
    if not facts["ref_any"] and not facts["pred_any"]:
        return "nothing to find, nothing found"
    if facts["fp_ml"] == 0 and facts["fn_ml"] == 0:
        return "matches the reference"
    if not facts["pred_any"]:
        return f"misses the {class_name} entirely{_where(missed[0] if missed else None)}"
    if not facts["ref_any"]:
        return f"false positive: {class_name} predicted where the reference has none{_where(spurious[0])}"
    if facts["fn_ml"] >= facts["fp_ml"]:
        where = _where(missed[0] if missed else None)
        if facts["thin_misses"]:
            return f"misses small distal branches{where}"
        if facts["missed_share"] > 0.5:
            return f"misses {facts['missed_objects']} separate {class_name} component(s){where}"
        if facts["fn_sublabel"]:
            return f"under-segments {facts['fn_sublabel']}{where}"
        return f"under-segments the {class_name} (boundary too tight){where}"
    big = spurious[0]
    ref_mean, fp_mean = facts["ref_mean_intensity"], big["mean_intensity"]
    bright = ref_mean is not None and fp_mean is not None and fp_mean >= BRIGHT_RATIO * ref_mean
    if big["detached"] and big["volume_mm3"] >= LARGE_FP_MM3 and bright:
        return f"false positive in a large bright structure{_where(big)}"
    if facts["detached_fp_share"] > 0.5:
        largest = next((c for c in spurious if c["detached"]), big)
        return f"{facts['spurious_objects']} spurious detached component(s){_where(largest)}"
    return f"over-segments the {class_name} (boundary too wide){_where(big)}"
