"""Dataset checks: everything that would break or silently spoil training, found before training starts.

:func:`check_records` inspects records ``{"id", "image": path | [paths], "label": path | None}`` from any adapter;
:func:`check_dataset` finds them with the dataset's adapter first, whose
:meth:`~segvol.data.adapter.DatasetAdapter.check_rules` say which modality, channels and label values to expect.
Each problem has a severity: ``error`` (training would fail or learn from broken data) or ``warning`` (worth a
look), a code, a one-line message naming the file, and a hint. ``headers_only=True`` reads headers and the gzip
size field only (seconds for a thousand cases); it is what ``segvol train`` runs before training
(:func:`require_trainable`). The per-file inspection lives in :mod:`segvol.data.check_files`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segvol.data.adapter import CheckRules, DatasetAdapter, as_list
from segvol.data.check_files import HINTS, FileInfo, Problem, inspect_file, same_grid
from segvol.data.records import Record
from segvol.errors import SegvolError, first_line

__all__ = ["Problem", "CaseReport", "CheckReport", "check_records", "check_dataset", "require_trainable", "HINTS"]

log = logging.getLogger(__name__)

OUTLIER_FACTOR = 2.0  # a spacing or size more than 2x (or under half) the dataset's median is flagged


@dataclass
class CaseReport:
    """What was found in one case."""

    id: str
    shape: list[int] | None = None
    spacing: list[float] | None = None
    channels: int | None = None
    label_values: list[float] | None = None
    intensity: list[float] | None = None  # [min, max] over all channels
    problems: list[Problem] = field(default_factory=list)
    digest: str | None = None
    preprocessed_shape: list[int] | None = None  # (C, H, W, D) after the training prefix (``full`` only)

    @property
    def status(self) -> str:
        severities = {p.severity for p in self.problems}
        return "error" if "error" in severities else "warning" if severities else "ok"


@dataclass
class CheckReport:
    """Every case's findings, dataset-level problems and spacing/size statistics."""

    dataset: str
    root: str
    headers_only: bool
    cases: list[CaseReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # dataset-level (outliers, duplicates)
    stats: dict[str, Any] = field(default_factory=dict)

    def all_problems(self) -> list[Problem]:
        return [p for c in self.cases for p in c.problems] + self.problems

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.all_problems() if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.all_problems() if p.severity == "warning"]

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON: the cases, problems, statistics and counts."""
        return {"dataset": self.dataset, "root": self.root, "headers_only": self.headers_only,
                "summary": {"cases": len(self.cases), "ok": sum(c.status == "ok" for c in self.cases),
                            "errors": len(self.errors), "warnings": len(self.warnings),
                            "trainable": not self.errors},
                "stats": self.stats, "problems": [asdict(p) for p in self.problems],
                "cases": [{**asdict(c), "status": c.status} for c in self.cases]}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1) + "\n"


def _check_case(record: Record, adapter: DatasetAdapter, rules: CheckRules, headers_only: bool) -> CaseReport:
    """Inspect the image file(s) and the label of one record and compare their grids."""
    case = CaseReport(id=str(record["id"]))
    paths = as_list(record["image"])
    modality, channels = rules.modality, rules.channels
    per_file = 1 if len(paths) > 1 else channels
    images = [inspect_file(p, "image", case.id, channels=per_file, modality=modality, headers_only=headers_only)
              for p in paths]
    label = None
    if record.get("label"):
        label = inspect_file(record["label"], "label", case.id, allowed=adapter.allowed_labels(record, rules),
                             headers_only=headers_only)
    for info in images + ([label] if label else []):
        case.problems += info.problems
    readable = [i for i in images if i.header_ok]
    if readable:
        first = readable[0]
        case.shape, case.spacing = first.shape[:3], first.spacing
        case.channels = sum(i.channels for i in readable) if len(paths) > 1 else first.channels
        found = [i.intensity for i in readable if i.intensity]
        case.intensity = [min(f[0] for f in found), max(f[1] for f in found)] if found else None
        digests = [i.digest for i in images if i.digest]
        if len(digests) == len(images):
            case.digest = "-".join(digests)
        for other in readable[1:]:
            _compare_grids(case, first, other, "image")
        if label is not None and label.header_ok:
            _compare_grids(case, first, label, "label")
    if channels is not None and len(paths) > 1 and len(paths) != channels:
        case.problems.append(Problem("error", "channels", case.id, paths[0],
                                     f"{len(paths)} sequence file(s), expected {channels}", HINTS["channels"]))
    if label is not None:
        case.label_values = label.label_values
    return case


def _compare_grids(case: CaseReport, ref: FileInfo, other: FileInfo, what: str) -> None:
    reason = same_grid(ref, other)
    if reason:
        case.problems.append(Problem("error", "grid", case.id, other.path,
                                     f"{what} grid differs from {Path(ref.path).name}: {reason}", HINTS["grid"]))


def _outliers(report: CheckReport) -> None:
    """Spacing and size statistics; cases beyond OUTLIER_FACTOR x the median on any axis are flagged."""
    for key, unit in (("spacing", "mm"), ("shape", "voxels")):
        rows = [(c, np.asarray(getattr(c, key), float)) for c in report.cases if getattr(c, key) is not None]
        if not rows:
            continue
        values = np.stack([v for _, v in rows])
        median = np.median(values, axis=0)
        cast = (lambda a: a.round(4).tolist()) if key == "spacing" else (lambda a: [int(x) for x in a])
        report.stats[key] = {"min": cast(values.min(0)), "median": cast(median), "max": cast(values.max(0))}
        if len(rows) < 3:
            continue
        for case, v in rows:
            ratio = v / np.maximum(median, 1e-9)
            if np.any(ratio > OUTLIER_FACTOR) or np.any(ratio < 1 / OUTLIER_FACTOR):
                shown = ", ".join(f"{x:g}" for x in v.round(3))
                mid = ", ".join(f"{x:g}" for x in median.round(3))
                report.problems.append(Problem("warning", f"{key}_outlier", case.id, "",
                                               f"{key} ({shown}) {unit} is far from the dataset's median ({mid})",
                                               HINTS[f"{key}_outlier"]))


def _duplicates(report: CheckReport) -> None:
    seen: dict[str, str] = {}
    for case in report.cases:
        if case.digest is None:
            continue
        if case.digest in seen:
            report.problems.append(Problem("warning", "duplicate", case.id, "",
                                           f"same image content as case {seen[case.digest]}", HINTS["duplicate"]))
        else:
            seen[case.digest] = case.id


def check_records(records: list[Record], *, dataset: str | DatasetAdapter, root: str | Path = "",
                  channels: int | None = None, modality: str | None = None, headers_only: bool = False,
                  progress: bool = False) -> CheckReport:
    """Check every record and the dataset as a whole.

    Args:
        records: ``{"id", "image": path | [paths], "label": path | None}``.
        dataset: the adapter (or its registry name) whose :meth:`check_rules` and :meth:`allowed_labels` apply.
        root: the dataset folder (for the rules that depend on it, and the report).
        channels: image channels training expects (default: the adapter's rule).
        modality: ``"CT"`` or ``"MR"`` (default: the adapter's rule).
        headers_only: read headers and gzip size fields only (no voxel data).
        progress: show a progress bar.
    """
    from dataclasses import replace

    from tqdm.auto import tqdm

    from segvol.data.registry import get_adapter

    adapter = get_adapter(dataset) if isinstance(dataset, str) else dataset
    if not records:
        raise SegvolError(f"{root or adapter.name}: the dataset has no cases")
    rules = adapter.check_rules(root)
    rules = replace(rules, channels=channels if channels is not None else rules.channels,
                    modality=modality or rules.modality)
    report = CheckReport(dataset=adapter.name, root=str(root), headers_only=headers_only)
    for record in tqdm(records, desc="check-data", unit="case", disable=not progress):
        report.cases.append(_check_case(record, adapter, rules, headers_only))
    _outliers(report)
    _duplicates(report)
    return report


def check_dataset(dataset: str, root: str | Path, *, headers_only: bool = False, full: bool = False,
                  progress: bool = False, modalities: tuple[str, ...] = ()) -> CheckReport:
    """Find the records of ``dataset`` under ``root`` with its adapter, then :func:`check_records` them.

    ``full`` also runs every error-free case through the training preprocessing (load, orientation, 1 mm
    resampling, normalisation) of the dataset's preset, so that anything MONAI itself rejects is found too.
    """
    from segvol.data.registry import get_adapter

    adapter = get_adapter(dataset)
    records = adapter.find_records(root, modalities, require_labels=False)
    rules = adapter.check_rules(root, modalities)
    report = check_records(records, dataset=adapter, root=root, channels=rules.channels, modality=rules.modality,
                           headers_only=headers_only, progress=progress)
    if full:
        _check_preprocessing(report, records, adapter, root, modalities, progress)
    return report


def _preprocess_config(adapter: DatasetAdapter, root: str | Path, modalities: tuple[str, ...]) -> Any:
    """The adapter's preset (defaults when it has none) for the data in ``root``, as training would adapt it."""
    from segvol.config import Config, load_config

    data = {"dataset": adapter.name, "root": str(root), "modalities": list(modalities)}
    cfg = load_config(adapter.preset, data=data) if adapter.preset else Config().replace(data=data)
    return adapter.configure(cfg)


def _check_preprocessing(report: CheckReport, records: list[Record], adapter: DatasetAdapter, root: str | Path,
                         modalities: tuple[str, ...], progress: bool) -> None:
    """Run the deterministic training prefix on each error-free case; failures become ``preprocess`` errors."""
    from monai.transforms import Compose
    from tqdm.auto import tqdm

    from segvol.transforms import deterministic_prefix

    cfg = _preprocess_config(adapter, root, modalities)
    label_transforms = tuple(adapter.task_spec(cfg).label_transforms)
    pairs = [(r, c) for r, c in zip(records, report.cases) if c.status != "error"]
    for record, case in tqdm(pairs, desc="preprocess", unit="case", disable=not progress):
        keys = ("image", "label") if record.get("label") else ("image",)
        try:
            out = Compose(deterministic_prefix(cfg, keys, label_transforms))(
                {k: record[k] for k in keys})
        except Exception as exc:  # MONAI wraps every failure in RuntimeError; the cause names the problem
            cause = exc.__cause__ or exc
            text = first_line(cause, 120, empty="")
            case.problems.append(Problem("error", "preprocess", case.id, as_list(record["image"])[0],
                                         f"training preprocessing failed ({type(cause).__name__}: {text})",
                                         HINTS["preprocess"]))
            continue
        case.preprocessed_shape = [int(s) for s in out["image"].shape]


def require_trainable(records: list[Record], *, dataset: str | DatasetAdapter, root: str | Path, channels: int
                      ) -> CheckReport:
    """Headers-only check before training; raises :class:`SegvolError` naming the first problem on errors."""
    report = check_records(records, dataset=dataset, root=root, channels=channels, headers_only=True)
    errors = report.errors
    for warning in report.warnings[:3]:
        log.warning("%s: %s", warning.file or f"case {warning.case}", warning.message)
    if errors:
        first, cases = errors[0], len({p.case for p in errors})
        raise SegvolError(f"{first.file}: {first.message} ({len(errors)} problem(s) in {cases} case(s); "
                          f"'segvol check-data --dataset {report.dataset} --data {root}' lists them all)")
    log.info("dataset check (headers): %d case(s) fine", len(report.cases))
    return report


def summarize_values(values: list[float]) -> str:
    """``[0.0, 1.0]`` -> ``"0,1"`` (for tables)."""
    return ",".join(f"{v:g}" for v in values[:6]) + ("..." if len(values) > 6 else "")

