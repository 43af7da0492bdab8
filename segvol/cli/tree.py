"""``segvol tree``: parsing only; the work is in :mod:`segvol.api`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from segvol.cli.argtypes import fraction as _fraction

__all__ = ["COMMANDS"]


def _add_tree(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tree", help="artery tree of a vessel mask: centrelines, radii, graded narrowings, CPRs",
                       description="Centreline graph of each connected tree of a binary vessel mask: segment "
                                   "lengths, cross-section radii and diameters, tortuosity, generation, and "
                                   "narrowings graded in CAD-RADS bands against a reference fitted to the healthy "
                                   "vessel (geometric cues, not a diagnosis; places too near an ostium or a tip, or "
                                   "too short or thin, are reported as not assessable). Writes tree.json, "
                                   "segments.csv, lesions.csv, centrelines.vtk, tree.png, radius_profiles.png and "
                                   "one curved planar reformation cpr_*.png per main artery. See docs/tree.md.")
    p.add_argument("mask", help="mask file, e.g. scan_seg.nii.gz (every non-zero voxel is vessel)")
    p.add_argument("-o", "--out-dir", default=None, help="output folder (default: <mask>_tree/ beside the mask)")
    p.add_argument("--label", type=int, default=None, help="only voxels with this label value are vessel")
    p.add_argument("--spur-factor", type=float, default=None,
                   help="prune end branches shorter than this times the radius where they leave (default 2)")
    p.add_argument("--narrowing", type=_fraction, default=None,
                   help="flag graded narrowings of at least this diameter reduction (default 0.45: a 50 %% "
                        "stenosis reads 48-53 %%)")
    p.add_argument("--trees", type=int, default=None, metavar="N",
                   help="analyse the N largest components as trees (default 2; 0: all); the rest are reported")
    p.add_argument("--prob", default=None, metavar="PROB.nii.gz",
                   help="probability map on the mask's grid (segvol infer --output prob): sections are cut through "
                        "it instead of the mask")
    p.add_argument("--image", default=None, metavar="SCAN.nii.gz", help="the scan, shown in the reformations")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def _run_tree(args: argparse.Namespace) -> int:
    from segvol import api
    from segvol.tree.outputs import summary_line

    out = api.tree(mask=args.mask, out_dir=args.out_dir, label=args.label, spur_factor=args.spur_factor,
                   narrowing=args.narrowing, max_trees=args.trees, overwrite=args.overwrite,
                   prob=args.prob, image=args.image)
    print(summary_line(out.analysis))
    print(f"wrote {', '.join(sorted(p.name for p in out.files.values()))} to {out.out_dir}")
    return 0


COMMANDS: dict[str, tuple[Callable, Callable]] = {
    "tree": (_add_tree, _run_tree),
}
