"""Array-level segmentation metrics for one binary mask pair, in millimetres where distances are concerned.

Every function takes two boolean arrays of the same shape (prediction, reference) and, for distances, the voxel
spacing in mm. Surface distances use MONAI (``monai.metrics.utils.get_edge_surface_distance``, as its Hausdorff and
average-surface-distance metrics do);
overlap counts are plain NumPy so that the edge cases below are exact.

Edge cases (the same everywhere: metrics.csv, summary.json, the report):

=====================  ===========  ==================  ===============  =================  ============
case                   Dice / IoU   precision           sensitivity      HD95 / ASD (mm)    clDice
=====================  ===========  ==================  ===============  =================  ============
both empty             1            1                   1                0                  1
prediction empty only  0            NaN (0/0)           0                inf                0
reference empty only   0            0                   NaN (0/0)        inf                0
=====================  ===========  ==================  ===============  =================  ============

``inf`` means "no surface to measure to"; ``NaN`` means "undefined ratio". Summaries (:mod:`.summary`) average
only finite values and count the others. Volume difference in % is ``inf`` when the reference is empty and the
prediction is not (0 when both are empty).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from segvol.evaluation.centreline import CENTRELINE_METRICS, centreline_metrics
from segvol.utils import crop_to_union

__all__ = ["overlap_metrics", "surface_distances", "cldice", "count_components", "binary_metrics",
           "METRIC_NAMES", "CONNECTIVITY"]

CONNECTIVITY = 3  # 26-neighbourhood in 3D for connected components (scipy's generate_binary_structure rank 3)

METRIC_NAMES = ("dice", "iou", "precision", "sensitivity", "hd95_mm", "asd_mm", "ref_ml", "pred_ml",
                "vol_diff_ml", "vol_diff_pct", "fp_ml", "fn_ml", "cldice", "ref_components", "pred_components",
                *CENTRELINE_METRICS)


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def overlap_metrics(pred: np.ndarray, ref: np.ndarray, voxel_ml: float = 1e-3) -> dict[str, float]:
    """Dice, IoU, precision, sensitivity and volumes (mL) of two boolean masks; see the module table.

    Args:
        pred: predicted mask (bool).
        ref: reference mask (bool), same shape.
        voxel_ml: volume of one voxel in millilitres (product of the spacing in mm / 1000).
    """
    tp = float(np.count_nonzero(pred & ref))
    n_pred, n_ref = float(np.count_nonzero(pred)), float(np.count_nonzero(ref))
    fp, fn = n_pred - tp, n_ref - tp
    if n_pred == 0 and n_ref == 0:
        dice = iou = precision = sensitivity = 1.0
    else:
        dice, iou = 2 * tp / (n_pred + n_ref), tp / (n_pred + n_ref - tp)
        precision, sensitivity = _ratio(tp, n_pred), _ratio(tp, n_ref)
    if n_ref:
        pct = 100.0 * (n_pred - n_ref) / n_ref
    else:
        pct = math.inf if n_pred else 0.0
    return {"dice": dice, "iou": iou, "precision": precision, "sensitivity": sensitivity,
            "ref_ml": n_ref * voxel_ml, "pred_ml": n_pred * voxel_ml, "vol_diff_ml": (n_pred - n_ref) * voxel_ml,
            "vol_diff_pct": pct, "fp_ml": fp * voxel_ml, "fn_ml": fn * voxel_ml}


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Symmetric HD95 and average surface distance (ASSD) in mm between the masks' surfaces.

    Both come from one call of MONAI's ``get_edge_surface_distance`` (the function behind its
    ``compute_hausdorff_distance`` and ``compute_average_surface_distance``), so the distance transforms run once:
    HD95 is the larger of the two directed 95th percentiles (``torch.quantile``, as MONAI), ASD the mean of both
    directed distance sets taken together. Both empty: 0; one empty: inf.
    """
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return {"hd95_mm": 0.0, "asd_mm": 0.0}
    if has_pred != has_ref:
        return {"hd95_mm": math.inf, "asd_mm": math.inf}
    pred, ref = crop_to_union(pred, ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, distances, _ = get_edge_surface_distance(
            torch.from_numpy(np.ascontiguousarray(pred)), torch.from_numpy(np.ascontiguousarray(ref)),
            spacing=[float(s) for s in spacing], symmetric=True)
    both = [d.double() for d in distances]
    hd95 = max(float(torch.quantile(d, 0.95)) for d in both)
    asd = float(torch.cat(both).mean())
    return {"hd95_mm": hd95, "asd_mm": asd}


def _skeleton(mask: np.ndarray) -> np.ndarray:
    from skimage.morphology import skeletonize

    if not mask.any():
        return mask
    padded = np.pad(mask, 1)  # a structure touching the border still gets a skeleton of its own
    skel = skeletonize(padded).astype(bool)[tuple(slice(1, -1) for _ in range(mask.ndim))]
    return skel if skel.any() else mask  # a blob too small to thin is its own centreline


def cldice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Centreline Dice (Shit et al., CVPR 2021): harmonic mean of topology precision and sensitivity.

    ``Tprec = |skel(P) & R| / |skel(P)|``, ``Tsens = |skel(R) & P| / |skel(R)|``, skeletons from
    :func:`skimage.morphology.skeletonize` (3D). Both empty: 1; one empty: 0.
    """
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return 1.0
    if has_pred != has_ref:
        return 0.0
    pred, ref = crop_to_union(pred, ref)
    s_pred, s_ref = _skeleton(pred), _skeleton(ref)
    tprec = np.count_nonzero(s_pred & ref) / np.count_nonzero(s_pred)
    tsens = np.count_nonzero(s_ref & pred) / np.count_nonzero(s_ref)
    return 0.0 if tprec + tsens == 0 else float(2 * tprec * tsens / (tprec + tsens))


def count_components(mask: np.ndarray) -> int:
    """Connected components of a mask (26-connectivity in 3D)."""
    from scipy import ndimage

    if not mask.any():
        return 0
    return int(ndimage.label(mask, ndimage.generate_binary_structure(mask.ndim, CONNECTIVITY))[1])


def binary_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], vessel: bool = False
                   ) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` for one mask pair (clDice and the centreline metrics of
    :mod:`segvol.evaluation.centreline` only when ``vessel``, else NaN).

    Args:
        pred: predicted mask; anything non-zero is foreground.
        ref: reference mask, same shape.
        spacing: voxel size in mm per axis.
        vessel: also compute clDice and the centreline metrics (skeletonisation costs seconds on a full CT).
    """
    pred, ref = np.asarray(pred).astype(bool), np.asarray(ref).astype(bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if len(spacing) != ref.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match {ref.ndim}D masks")
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    pred, ref = crop_to_union(pred, ref)  # every metric here is unchanged by the crop; all run on the small box
    out: dict[str, float] = dict(overlap_metrics(pred, ref, voxel_ml))
    out.update(surface_distances(pred, ref, spacing))
    out["cldice"] = cldice(pred, ref) if vessel else math.nan
    out.update(centreline_metrics(pred, ref, spacing) if vessel else dict.fromkeys(CENTRELINE_METRICS, math.nan))
    out["ref_components"] = float(count_components(ref))
    out["pred_components"] = float(count_components(pred))
    return {k: out[k] for k in METRIC_NAMES}
