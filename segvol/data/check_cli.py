"""``segvol check-data``: the parser, the on-screen table and the JSON report."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_check_parser", "run_check_command", "format_report"]

log = logging.getLogger(__name__)
MAX_ROWS = 200  # above this many cases only the cases with problems get a table row
MAX_PROBLEM_LINES = 60


def add_check_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``check-data`` on the CLI's subparsers."""
    p = sub.add_parser("check-data", help="check a dataset for everything that would break or spoil training",
                       description="Reads every case and reports unreadable or truncated files, wrong dimensions or "
                                   "channels, image/label grid mismatches, label values, empty labels, NaN/Inf, "
                                   "implausible intensities, spacing and size outliers and duplicates. Exit status "
                                   "1 when a case would break training.")
    p.add_argument("--dataset", required=True, help="imagecas, brats, lgg or msd (alias nnunet)")
    p.add_argument("--data", required=True, help="the dataset folder")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the full report to this JSON file")
    p.add_argument("--headers-only", action="store_true",
                   help="fast: headers and file sizes only (what 'segvol train' checks before training)")
    p.add_argument("--full", action="store_true",
                   help="also run every case through the training preprocessing (slow)")
    p.add_argument("--modalities", nargs="+", default=(), help="BraTS sequences to check (default: all four)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")


def _row(case: Any) -> list[str]:
    from segvol.data.check import summarize_values

    def fmt(values: Any, digits: int = 2) -> str:
        return "x".join(f"{round(float(v), digits):g}" for v in values) if values else "-"

    first = case.problems[0].code if case.problems else ""
    more = f" +{len(case.problems) - 1}" if len(case.problems) > 1 else ""
    return [case.id, case.status, fmt(case.shape, 0), fmt(case.spacing), str(case.channels or "-"),
            summarize_values(case.label_values) if case.label_values is not None else "-",
            fmt(case.intensity, 0).replace("x", " to ") if case.intensity else "-", first + more]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def format_report(report: Any) -> str:
    """The table (one row per case), the problems one per line, the hints once per kind, and a summary."""
    head = ["case", "status", "shape", "spacing (mm)", "ch", "labels", "intensity", "problems"]
    cases = report.cases if len(report.cases) <= MAX_ROWS else [c for c in report.cases if c.problems]
    lines = _table([head, *[_row(c) for c in cases]]) if cases else []
    if len(cases) < len(report.cases):
        lines.append(f"({len(report.cases) - len(cases)} case(s) without problems not shown)")
    problems = sorted(report.all_problems(), key=lambda p: p.severity != "error")
    if problems:
        lines.append("")
    for p in problems[:MAX_PROBLEM_LINES]:
        where = p.file or f"case {p.case}"
        lines.append(f"{p.severity:7s} {where}: {p.message}")
    if len(problems) > MAX_PROBLEM_LINES:
        lines.append(f"... {len(problems) - MAX_PROBLEM_LINES} more (all of them with --json)")
    hints = dict.fromkeys((p.code, p.hint) for p in problems)
    if hints:
        lines += ["", "hints:"] + [f"  {code}: {hint}" for code, hint in hints]
    for key in ("spacing", "shape"):
        if key in report.stats:
            s = report.stats[key]
            lines.append(f"{key}: min {s['min']}  median {s['median']}  max {s['max']}")
    verdict = ("would break training" if report.errors else "ready for training")
    mode = " (headers only)" if report.headers_only else ""
    lines.append(f"{len(report.cases)} case(s){mode}: {len(report.errors)} error(s), {len(report.warnings)} "
                 f"warning(s); {verdict}")
    return "\n".join(lines)


def run_check_command(args: argparse.Namespace) -> int:
    """Run the checks, print the table, write JSON on request; 1 when any case would break training."""
    from segvol.data.check import check_dataset
    from segvol.utils import atomic_path, check_writable_target

    if args.json:
        check_writable_target(args.json, args.overwrite)
    report = check_dataset(args.dataset, args.data, headers_only=args.headers_only, full=args.full,
                           progress=not args.quiet and sys.stderr.isatty(), modalities=tuple(args.modalities))
    print(format_report(report))
    if args.json:
        with atomic_path(args.json) as tmp:
            Path(tmp).write_text(report.to_json())
        log.info("report written to %s", args.json)
    return 1 if report.errors else 0
