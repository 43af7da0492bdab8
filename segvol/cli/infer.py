"""``segvol infer`` and ``segvol preprocess``: parsing and the timing table; the work is in :mod:`segvol.api`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from segvol.cli.argtypes import DEVICE_HELP
from segvol.cli.argtypes import device as _device
from segvol.cli.argtypes import overlap as _overlap
from segvol.cli.argtypes import positive_int as _positive_int

__all__ = ["COMMANDS"]

def _add_infer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="segment scans; masks land on each scan's own grid")
    p.add_argument("inputs", nargs="*", help=".nii/.nii.gz scan(s), folders or globs of them, DICOM folder(s), "
                                             "DICOMweb series URL(s) (<server>/dicom-web/studies/<uid>/series/"
                                             "<uid>), or BraTS case folder(s)")
    p.add_argument("--image", nargs="+", default=None, metavar="FILE",
                   help="the sequence files of ONE multi-channel scan, e.g. flair t1 t1ce t2 (named files are put in "
                        "the model's order; otherwise give them in that order)")
    p.add_argument("--model", default=None, help=".onnx or .pt (default: models/model.onnx, else newest run)")
    p.add_argument("-o", "--out", default=None, help="output file (one input only); default <scan>_seg.nii.gz")
    p.add_argument("--out-dir", default=None, help="folder for the outputs (default: beside each input)")
    p.add_argument("--device", type=_device, default="auto", help=DEVICE_HELP)
    p.add_argument("--sw-batch-size", type=_positive_int, default=None, help="windows per forward pass")
    p.add_argument("--overlap", type=_overlap, default=None,
                   help="sliding-window overlap: auto (the fewest windows, spread evenly) or a fraction in [0, 1)")
    p.add_argument("--tta", action="store_true", help="average over three axis flips (4x the inference time)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (PyTorch models on CUDA)")
    p.add_argument("--no-locate", dest="locate", action="store_false",
                   help="a cascade model: segment the whole scan finely instead of the located box (for checking)")
    p.add_argument("--output", dest="outputs", action="append", default=None, metavar="FORMATS",
                   help="what to write for each scan, comma-separated (default seg): " + _OUTPUT_HELP)
    alias = p.add_argument_group("output aliases (each adds one format to --output)")
    alias.add_argument("--prob", action="store_true", help="= --output seg,prob")
    alias.add_argument("--overlay", action="store_true", help="= --output seg,overlay")
    alias.add_argument("--gif", action="store_true", help="= --output seg,gif")
    alias.add_argument("--mesh", action="store_true", help="= --output seg,stl (or ply with --mesh-format ply)")
    alias.add_argument("--mesh-format", choices=("stl", "ply"), default="stl", help="format for --mesh (default stl)")
    alias.add_argument("--tree", action="store_true", help="= --output seg,tree (artery tree folder, see segvol tree)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--models", default="models")
    dicom = p.add_argument_group("DICOM (see docs/dicom.md)")
    dicom.add_argument("--list-series", action="store_true",
                       help="list the series of each DICOM folder (number, description, modality, slices, kind, "
                            "SeriesInstanceUID) and exit")
    dicom.add_argument("--series", default=None, metavar="UID|NUMBER|DESCRIPTION",
                       help="the series to segment in a DICOM folder of several (default: the largest axial volume "
                            "of the model's modality, said in a log line)")
    dicom.add_argument("--store", action="store_true",
                       help="store the DICOM outputs (dicom-seg, rtstruct) back to the DICOMweb server the input URL "
                            "names")


def _run_infer(args: argparse.Namespace) -> int:
    from segvol import api

    if args.list_series:
        print(_list_series(args.inputs))
        return 0
    inputs = list(args.inputs) + ([args.image] if args.image else [])
    results = api.infer(inputs=inputs, model=args.model, out=args.out, out_dir=args.out_dir,
                        device=args.device, sw_batch_size=args.sw_batch_size, overlap=args.overlap,
                        overwrite=args.overwrite, models_dir=args.models, progress=not args.quiet,
                        tta=args.tta, amp=args.amp, outputs=_infer_outputs(args), series=args.series,
                        store=args.store, locate=args.locate)
    if results:  # under torchrun, rank 0 holds every rank's rows
        print(_timing_table(results))
    return 0


def _list_series(inputs: list[str]) -> str:
    """The series table of each DICOM folder named (reads headers only; no model, no torch)."""
    from segvol import api
    from segvol.io.dicom_series import series_table

    return "\n\n".join(f"{folder}:\n{series_table(found)}" for folder, found in api.list_series(inputs=inputs))


_OUTPUT_HELP = ("seg (mask .nii.gz), prob (probabilities), overlay (PNG), gif (slice sweep), stl or ply (surface in "
                "scanner mm), dicom-seg (DICOM Segmentation, DICOM inputs), rtstruct (RT Structure Set, DICOM "
                "inputs), tree (artery tree folder), and any registered in segvol/inference/outputs.py; e.g. "
                "--output seg,overlay,stl")


def _infer_outputs(args: argparse.Namespace) -> list[str]:
    """``--output`` (default ``seg``) plus the formats of the flags ``--prob/--overlay/--gif/--mesh/--tree``."""
    names = [n for item in (args.outputs or ["seg"]) for n in item.split(",") if n.strip()]
    aliases = {"prob": args.prob, "overlay": args.overlay, "gif": args.gif, args.mesh_format: args.mesh,
               "tree": args.tree}
    return names + [name for name, wanted in aliases.items() if wanted]


def _timing_table(results: list) -> str:
    """One row per scan: output, foreground voxels, seconds per stage and in total; a summary for batches."""
    stages = list(dict.fromkeys(k for pred in results for k in pred.timings))
    head = ["output", "voxels", *stages, "total"]
    rows = [[str(p.output), str(int(p.labels.astype(bool).sum())), *[f"{p.timings.get(k, 0):.2f}" for k in stages],
             f"{sum(p.timings.values()):.2f}"] for p in results]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [head, *rows]]
    if len(results) > 1:
        total = sum(sum(p.timings.values()) for p in results)
        lines.append(f"{len(results)} scans in {total:.1f} s ({total / len(results):.2f} s per scan); stage times in s")
    return "\n".join(lines)

def _add_preprocess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preprocess", help="write what the network sees (1 mm grid, normalised) as NIfTI")
    p.add_argument("scan", nargs="+", help="a scan (.nii/.nii.gz), a DICOM series or case folder, or the sequence "
                                          "files of one multi-channel scan")
    p.add_argument("-o", "--out", required=True, help="output .nii.gz (float32, on the 1 mm grid)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--config", default=None, help="preset name or YAML path")
    how.add_argument("--model", default=None, help=".pt or .onnx: the pipeline it was trained with (default: "
                                                   "models/model.onnx, else the newest run)")
    p.add_argument("--models", default="models")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def _run_preprocess(args: argparse.Namespace) -> int:
    from segvol import api

    out = api.preprocess(scan=args.scan, out=args.out, config=args.config, model=args.model,
                         models_dir=args.models, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


COMMANDS: dict[str, tuple[Callable, Callable]] = {
    "infer": (_add_infer, _run_infer),
    "preprocess": (_add_preprocess, _run_preprocess),
}
