"""``segvol import brats-h5|lgg-tiff|msd --src ... --out ...``: argument parsing for the importers (no heavy
imports here, so ``segvol --help`` stays instant)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_import_parser", "run_import_command"]

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


def add_import_parser(sub: argparse._SubParsersAction) -> None:
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


def run_import_command(args: argparse.Namespace) -> int:
    from segvol import api

    options: dict[str, Any] = {}
    if args.format == "brats-h5":
        options["channels"] = [c.strip() for c in args.channels.split(",") if c.strip()]
    if args.format == "lgg-tiff":
        options["spacing"] = tuple(args.spacing)
    report = api.import_data(fmt=args.format, src=args.src, out=args.out, overwrite=args.overwrite, **options)
    print(report.summary())
    return 0 if report.written else 1
