"""``segvol synth``, ``segvol cache``, ``segvol import`` and ``segvol check-data``: parsing and tables; the work is
in :mod:`segvol.api`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segvol.cli.argtypes import positive_int as _positive_int
from segvol.data.registry import describe_names

__all__ = ["COMMANDS", "format_report"]

log = logging.getLogger(__name__)

def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write phantom scans in a dataset's real layout")
    p.add_argument("dataset", help=describe_names(phantoms_only=True))
    p.add_argument("--out", required=True, help="output folder, e.g. data/imagecas")
    p.add_argument("--cases", type=_positive_int, default=8)
    p.add_argument("--size", choices=("small", "full"), default="small",
                   help="full: real scanner grids (512x512x206-275); small: quick to train, for tests and demos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dicom", action="store_true", help="also write each CT as a DICOM series in <out>/dicom/<case>/")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")


def _run_synth(args: argparse.Namespace) -> int:
    from segvol import api

    paths = api.synth(dataset=args.dataset, out=args.out, cases=args.cases, size=args.size, seed=args.seed,
                      overwrite=args.overwrite, progress=not args.quiet, dicom=args.dicom)
    print(f"wrote {len(paths)} files and folders to {args.out}")
    return 0

def _add_cache(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="list the preprocessing caches of a data folder; remove stale ones")
    p.add_argument("data", help="the data folder (its caches live in <data>/.cache/)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--clean", action="store_true",
                     help="remove every cache but the most recently used one (left behind by earlier settings)")
    how.add_argument("--all", dest="remove_all", action="store_true", help="remove all of them")


def _run_cache(args: argparse.Namespace) -> int:
    from segvol import api
    from segvol.training.caches import format_caches

    left, freed = api.caches(data=args.data, clean=args.clean, remove_all=args.remove_all)
    if args.clean or args.remove_all:
        print(f"freed {freed / 1e9:.2f} GB")
    print(format_caches(left))
    return 0

FORMATS = {
    "brats-h5": "BraTS2020 HDF5 slices (volume_V_slice_S.h5) -> BraTS 2020 case folders",
    "lgg-tiff": "LGG TIFF stacks (kaggle_3m: TCGA_*/TCGA_*_K.tif + _K_mask.tif) -> case folders (--dataset lgg)",
    "msd": "MSD Task01_BrainTumour (imagesTr/, labelsTr/, dataset.json) -> BraTS 2020 case folders",
}


def _spacing(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value}: spacing must be positive")
    return value


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="convert slice exports and the MSD layout into BraTS case folders")
    formats = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    for name, text in FORMATS.items():
        f = formats.add_parser(name, help=text, description=text)
        f.add_argument("--src", required=True, help="the folder as downloaded")
        f.add_argument("--out", required=True, help="output folder, e.g. data/brats_from_h5")
        f.add_argument("--overwrite", action="store_true", help="write into a non-empty folder, replacing cases")
        if name == "brats-h5":
            f.add_argument("--channels", default="t1,t1ce,t2,flair",
                           help="sequence of each image channel, in order (default: t1,t1ce,t2,flair)")
        if name == "lgg-tiff":
            f.add_argument("--spacing", type=_spacing, nargs=3, default=(1.0, 1.0, 3.0), metavar=("X", "Y", "Z"),
                           help="voxel size in mm, assumed (the TIFFs carry none; default 1 1 3)")


def _run_import(args: argparse.Namespace) -> int:
    from segvol import api

    options: dict[str, Any] = {}
    if args.format == "brats-h5":
        options["channels"] = [c.strip() for c in args.channels.split(",") if c.strip()]
    if args.format == "lgg-tiff":
        options["spacing"] = tuple(args.spacing)
    report = api.import_data(fmt=args.format, src=args.src, out=args.out, overwrite=args.overwrite, **options)
    print(report.summary())
    return 0 if report.written else 1

MAX_ROWS = 200  # above this many cases only the cases with problems get a table row
MAX_PROBLEM_LINES = 60


def _add_check(sub: argparse._SubParsersAction) -> None:
    """Register ``check-data`` on the CLI's subparsers."""
    p = sub.add_parser("check-data", help="check a dataset for everything that would break or spoil training",
                       description="Reads every case and reports unreadable or truncated files, wrong dimensions or "
                                   "channels, image/label grid mismatches, label values, empty labels, NaN/Inf, "
                                   "implausible intensities, spacing and size outliers and duplicates. Exit status "
                                   "1 when a case would break training.")
    p.add_argument("--dataset", required=True, help=describe_names())
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


def _run_check(args: argparse.Namespace) -> int:
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


COMMANDS: dict[str, tuple[Callable, Callable]] = {
    "synth": (_add_synth, _run_synth),
    "cache": (_add_cache, _run_cache),
    "import": (_add_import, _run_import),
    "check-data": (_add_check, _run_check),
}
