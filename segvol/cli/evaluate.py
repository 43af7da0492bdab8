"""``segvol evaluate``, ``segvol report`` and ``segvol mesh``: parsing and the summary; the work is in
:mod:`segvol.api`. Nothing heavy is imported here."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from segvol.cli.argtypes import count as _count

__all__ = ["COMMANDS", "format_summary"]

SCHEME_HELP = ("label scheme: auto (from the references), binary (non-zero), multi (one class per label value), "
               "brats (TC/WT/ET regions from labels 1,2,4 or 1,2,3)")


def add_evaluate(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="score predictions: metrics.csv, summary.json, plots, failure analysis",
                       description="Either --run (predict the run's test/val split with its best.pt, then score) or "
                                   "--pred and --ref (two folders of masks matched by case id).")
    p.add_argument("--run", default=None, metavar="RUN_DIR", help="a run folder, models/<run>")
    p.add_argument("--split", choices=("test", "val", "train"), default=None,
                   help="with --run: which cases (default: test when the run holds one out, else val)")
    p.add_argument("--data", default=None, help="with --run: dataset folder if it moved since training")
    p.add_argument("--pred", default=None, metavar="DIR", help="folder of predicted masks")
    p.add_argument("--ref", default=None, metavar="DIR", help="folder of reference masks")
    p.add_argument("--images", default=None, metavar="DIR", help="with --pred/--ref: scans to draw overlays on")
    p.add_argument("--labels", choices=("auto", "binary", "multi", "brats"), default="auto", help=SCHEME_HELP)
    p.add_argument("--cldice", choices=("auto", "on", "off"), default="auto",
                   help="centreline Dice for vessels (auto: ImageCAS runs and binary masks)")
    p.add_argument("--out", default=None, help="output folder (default: <run>/eval, or <pred>/eval)")
    p.add_argument("--worst", type=_count, default=3, help="worst cases to analyse (default 3)")
    p.add_argument("--no-gif", action="store_true", help="skip the slice-sweep GIF")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (inference with --run)")


def run_evaluate(args: argparse.Namespace) -> int:
    from segvol import api
    from segvol.errors import SegvolError

    if bool(args.run) == bool(args.pred or args.ref):
        raise SegvolError("give either --run RUN_DIR, or both --pred DIR and --ref DIR")
    if not args.run and not (args.pred and args.ref):
        raise SegvolError("--pred and --ref go together: both folders are needed")
    vessel = {"auto": None, "on": True, "off": False}[args.cldice]
    result = api.evaluate(run=args.run, split=args.split, data=args.data, pred=args.pred, ref=args.ref,
                          images=args.images, labels=args.labels, cldice=vessel, out=args.out, worst=args.worst,
                          gif=not args.no_gif, device=args.device, progress=not args.quiet)
    print(format_summary(result))
    return 0


def format_summary(result: Any) -> str:
    """Mean ± std of the main metrics per class, the worst cases' readings and where the files are."""
    lines = [f"{result.summary['cases']} case(s), {result.summary['scheme']} labels"]
    for cls, metrics in result.summary["metrics"].items():
        parts = []
        for name in ("dice", "iou", "hd95_mm", "asd_mm", "cldice", "cl_cover_ref", "branches_missed"):
            s = metrics.get(name)
            if s and s["mean"] is not None:
                na = f" ({s['n'] - s['n_finite']} n/a)" if s["n_finite"] < s["n"] else ""
                parts.append(f"{name} {s['mean']:.3f} ± {s['std']:.3f}{na}")
        lines.append(f"  {cls}: " + ", ".join(parts))
    for entry in result.worst:
        readings = "; ".join(f"{k}: {v['reading']}" for k, v in entry["classes"].items())
        lines.append(f"  worst {entry['case']} (Dice {entry['mean_dice']:.3f}): {readings}")
    lines.append(f"wrote {result.out_dir}/metrics.csv, summary.json, failures.json and figures/")
    return "\n".join(lines)


def add_report(sub: Any) -> None:
    p = sub.add_parser("report", help="one Markdown + HTML page per run: curves, metrics, gallery")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a run folder, models/<run>")
    p.add_argument("--eval", dest="eval_dir", default=None,
                   help="evaluation folder (default: <run>/eval, else <run>/eval-val)")


def run_report(args: argparse.Namespace) -> int:
    from segvol import api

    md, page = api.report(run=args.run, eval_dir=args.eval_dir)
    print(f"wrote {md} and {page}")
    return 0


def add_mesh(sub: Any) -> None:
    p = sub.add_parser("mesh", help="surface mesh (STL/PLY, scanner mm) of a segmentation mask")
    p.add_argument("seg", help="mask file, e.g. scan_seg.nii.gz")
    p.add_argument("-o", "--out", required=True, help="output .stl or .ply (class name appended when several)")
    p.add_argument("--smooth", type=_count, default=0, help="Taubin smoothing iterations (default 0)")
    p.add_argument("--label", type=int, default=None, help="mesh only this label value")
    p.add_argument("--labels", choices=("multi", "binary", "brats"), default="multi",
                   help="one mesh per label value (multi), one of every non-zero voxel (binary), or BraTS regions")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")


def run_mesh(args: argparse.Namespace) -> int:
    from segvol import api

    written = api.mesh(seg=args.seg, out=args.out, smooth=args.smooth, label=args.label, labels=args.labels,
                       overwrite=args.overwrite)
    for path, mesh in written:
        print(f"wrote {path}: {len(mesh.vertices)} vertices, {len(mesh.faces)} triangles")
    return 0


COMMANDS: dict[str, tuple[Callable, Callable]] = {
    "evaluate": (add_evaluate, run_evaluate),
    "report": (add_report, run_report),
    "mesh": (add_mesh, run_mesh),
}
