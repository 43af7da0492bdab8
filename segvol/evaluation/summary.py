"""``metrics.csv`` (one row per case and class) and ``summary.json`` (statistics per metric and class).

Statistics use finite values only; ``n`` counts the rows, ``n_finite`` those that entered the statistics, so an
``inf`` HD95 (one mask empty) or a ``NaN`` precision (nothing predicted) is visible, not silently averaged.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segvol.evaluation.metrics import METRIC_NAMES
from segvol.utils import atomic_path

__all__ = ["write_metrics_csv", "read_metrics_csv", "summarise", "write_json", "CSV_COLUMNS"]

CSV_COLUMNS = ("case", "class", *METRIC_NAMES)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.6g}"
    return str(value)


def write_metrics_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Write the rows (keys :data:`CSV_COLUMNS`) atomically; ``nan``/``inf`` are written as such."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_fmt(row.get(c, math.nan)) for c in CSV_COLUMNS])
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def read_metrics_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``metrics.csv`` written by :func:`write_metrics_csv`, numbers as floats."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key in METRIC_NAMES:
            if key in row:
                row[key] = float(row[key]) if row[key] not in ("", None) else math.nan
    return rows


def _stats(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    out: dict[str, Any] = {"n": int(arr.size), "n_finite": int(finite.size)}
    if finite.size == 0:
        return {**out, "mean": None, "std": None, "median": None, "q1": None, "q3": None, "iqr": None}
    q1, med, q3 = np.percentile(finite, [25, 50, 75])
    return {**out, "mean": float(finite.mean()), "std": float(finite.std()), "median": float(med),
            "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1)}


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{class: {metric: {n, n_finite, mean, std, median, q1, q3, iqr}}}`` over the cases."""
    classes = list(dict.fromkeys(r["class"] for r in rows))
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for cls in classes:
        mine = [r for r in rows if r["class"] == cls]
        out[cls] = {m: _stats([float(r[m]) for r in mine]) for m in METRIC_NAMES
                    if any(not math.isnan(float(r[m])) for r in mine)}
    return out


def write_json(data: Any, path: str | Path) -> None:
    """JSON with ``inf``/``NaN`` written as the strings "inf"/"nan" (valid JSON), atomically."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return _fmt(v)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(clean(data), indent=1) + "\n")
