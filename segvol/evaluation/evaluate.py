"""Scoring cases: masks on the same grid in, ``metrics.csv``, ``summary.json``, figures and failure analysis out.

:func:`score_case` is the array-level core (two label maps and their affine in, one row per class out);
:func:`evaluate_cases` is the file-level driver used by ``segvol evaluate`` in both its modes (a trained run's
split, or two folders of masks).

Output folder::

    metrics.csv            one row per case and class (columns: segvol.evaluation.summary.CSV_COLUMNS)
    summary.json           statistics per class and metric, scheme, worst cases with their readings
    failures.json          the worst cases in detail: FP/FN volume, missed and spurious components
    figures/scores.png     box-and-strip plots of Dice and IoU per class
    figures/training_curves.png   (run mode) loss, validation Dice and lr per epoch
    figures/<case>_<class>.png    overlays of the worst cases (and the best case)
    figures/<case>.gif     slice sweep of the worst case
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segvol.errors import SegvolError
from segvol.labels import ClassDef, RegionScheme, class_defs, class_mask, guess_scheme
from segvol.io.masks import load_mask, load_pair, spacing_of
from segvol.evaluation.metrics import binary_metrics

__all__ = ["CaseInput", "EvalResult", "score_case", "evaluate_cases", "resolve_classes"]

log = logging.getLogger(__name__)


@dataclass
class CaseInput:
    """One case to score: prediction and reference mask files, and optionally the scan (for overlays)."""

    id: str
    pred: Path
    ref: Path
    image: Any = None  # a path, a list of sequence paths, or None


@dataclass
class EvalResult:
    out_dir: Path
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    worst: list[dict[str, Any]] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


def score_case(case: str, pred: np.ndarray, ref: np.ndarray, affine: np.ndarray, classes: list[ClassDef],
               vessel: bool = False) -> list[dict[str, Any]]:
    """One row per class: ``{"case", "class", <every metric>}`` for two label maps on one grid.

    Args:
        case: the case id written in each row.
        pred: predicted label map.
        ref: reference label map, same shape.
        affine: the grid's voxel -> mm affine (the spacing is taken from it).
        classes: what to score (see :mod:`segvol.labels`).
        vessel: also compute clDice.
    """
    spacing = spacing_of(affine)
    return [{"case": case, "class": c.name,
             **binary_metrics(class_mask(pred, c), class_mask(ref, c), spacing, vessel=vessel)} for c in classes]


def _scan_values(cases: list[CaseInput], progress: bool) -> set[int]:
    from tqdm.auto import tqdm

    values: set[int] = set()
    for case in tqdm(cases, desc="label values", unit="case", disable=not progress or len(cases) < 2):
        values |= {int(v) for v in np.unique(load_mask(case.ref)[0])}
    return values


def resolve_classes(cases: list[CaseInput], scheme: str, names: list[str], progress: bool
                    ) -> tuple[str, list[ClassDef]]:
    """The scheme (``auto`` decided from the references' label values) and the classes scored in every case."""
    from segvol.data.registry import region_schemes

    schemes = region_schemes()
    values: set[int] = set(range(1, len(names) + 1)) if scheme == "multi" and names else set()
    if scheme == "auto" or (scheme == "multi" and not names):
        found = _scan_values(cases, progress)
        scheme = guess_scheme(found, schemes) if scheme == "auto" else scheme
        values |= found
        log.info("label scheme: %s (reference values %s)", scheme, sorted(found))
    return scheme, class_defs(scheme, values, names, schemes)


def _region_scheme(scheme: str) -> RegionScheme | None:
    from segvol.data.registry import region_schemes

    return region_schemes().get(scheme)


def evaluate_cases(cases: list[CaseInput], out_dir: str | Path, *, scheme: str = "auto",
                   names: list[str] | None = None, vessel: bool | None = None, worst: int = 3, gif: bool = True,
                   training_log: str | Path | None = None, label_names: dict[int, str] | None = None,
                   progress: bool = True, meta: dict[str, Any] | None = None) -> EvalResult:
    """Score every case, write metrics.csv, summary.json, failures.json and the figures into ``out_dir``.

    Args:
        cases: the cases (prediction and reference on the same grid; mismatches are one-line errors).
        scheme: ``auto``, ``binary``, ``multi`` or ``brats`` (see :mod:`segvol.labels`).
        names: class names (binary: one name; multi: one per label value 1..K).
        vessel: compute clDice (None: for the binary scheme).
        worst: how many worst cases get the failure analysis.
        gif: write a slice sweep of the worst case.
        training_log: a run's metrics.csv, drawn as training curves.
        label_names: names of reference sub-labels for the readings (BraTS: necrotic core, edema, ...).
        meta: extra entries for summary.json (run, split, checkpoint).
    """
    from tqdm.auto import tqdm

    from segvol.evaluation.outputs import write_outputs

    if not cases:
        raise SegvolError(f"{out_dir}: no cases to evaluate")
    scheme, classes = resolve_classes(cases, scheme, list(names or []), progress)
    vessel = scheme == "binary" if vessel is None else vessel
    regions = _region_scheme(scheme)
    if regions is not None and label_names is None:
        label_names = dict(regions.label_names)
    rows: list[dict[str, Any]] = []
    for case in tqdm(cases, desc="score", unit="case", disable=not progress or len(cases) < 2):
        pred, ref, affine = load_pair(case.pred, case.ref)
        extra = {int(v) for v in np.unique(pred)} - {0} if scheme == "multi" else set()
        known = {v for c in classes for v in (c.values or ())}
        mine = classes + class_defs("multi", extra - known) if extra - known else classes
        rows += score_case(case.id, pred, ref, affine, mine, vessel)
    ctx = {"scheme": scheme, "classes": [c.name for c in classes], "vessel": vessel, "label_names": label_names,
           "class_defs": classes, "readable": dict(regions.readable) if regions is not None else {}}
    summary, worst_cases, figures = write_outputs(cases, rows, Path(out_dir), ctx, worst=worst, gif=gif,
                                                  training_log=training_log, meta=meta or {})
    return EvalResult(Path(out_dir), rows, summary, worst_cases, figures)
