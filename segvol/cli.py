"""Command line: parse, load the config, call one API function. Heavy imports happen inside the commands so
that ``segvol --help`` stays instant."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from segvol.argtypes import DEVICE_HELP
from segvol.argtypes import device as _device
from segvol.argtypes import fraction as _fraction
from segvol.argtypes import overlap as _overlap
from segvol.argtypes import positive_int as _positive_int
from segvol.errors import SegvolError, first_line
from segvol.evaluation import commands as evaluation_commands  # argparse only: evaluate, report, mesh

__all__ = ["main", "build_parser", "COMMANDS"]

log = logging.getLogger("segvol")

# ---------------------------------------------------------------------------------------------------------- synth
def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write phantom scans in a dataset's real layout")
    p.add_argument("dataset", help="imagecas, brats or msd")
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


# ---------------------------------------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a 3D BasicUNet on a dataset")
    p.add_argument("--dataset", default=None, help="imagecas, brats, lgg, msd (alias nnunet) (default: the config's)")
    p.add_argument("--config", default=None, help="preset name or YAML path (default: the dataset's preset)")
    p.add_argument("--data", default=None, help="dataset folder (default: the config's data.root)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="SECTION.KEY=VALUE",
                   help="override config values, e.g. --set train.epochs=5 data.cache=disk (repeatable)")
    p.add_argument("--device", type=_device, default=None, help=DEVICE_HELP)
    p.add_argument("--name", default=None, help="run folder name under --models (default: <dataset>-<time>)")
    p.add_argument("--models", default="models", help="where run folders go")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue models/<run> from its last.pt exactly where it stopped")
    p.add_argument("--epochs", type=_positive_int, default=None, help="with --resume: extend the run to N epochs")


def _load_train_config(args: argparse.Namespace):  # noqa: ANN202
    from segvol.config import load_config

    from segvol.data.registry import get_adapter

    sections: dict = {}
    data = {}
    preset = args.config
    if args.dataset:
        adapter = get_adapter(args.dataset)  # aliases resolve: nnunet -> msd
        data["dataset"] = adapter.name
        preset = preset or adapter.preset or adapter.name
        if not args.data:
            data["root"] = f"data/{args.dataset}"
    if args.data:
        data["root"] = args.data
    if data:
        sections["data"] = data
    preset = preset or "imagecas"
    return load_config(preset, args.overrides, **sections)


def _run_train(args: argparse.Namespace) -> int:
    from segvol import api

    cfg = None if args.resume else _load_train_config(args)
    result = api.train(cfg=cfg, models_dir=args.models, name=args.name, device=args.device,
                       progress=not args.quiet, resume=args.resume, epochs=args.epochs)
    from segvol.config import distributed_env

    if distributed_env()[0] == 0:  # under torchrun, rank 0 speaks for the run
        print(f"best val Dice {result.best_metric:.4f} at epoch {result.best_epoch}; "
              f"checkpoints and metrics in {result.run_dir}")
    return 0


# ---------------------------------------------------------------------------------------------------- export-onnx
def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-onnx", help="export a checkpoint to ONNX and check it under ONNX Runtime")
    p.add_argument("--checkpoint", default=None, help="default: the newest run's best.pt under --models")
    p.add_argument("--out", default="models/model.onnx")
    p.add_argument("--models", default="models")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def _run_export(args: argparse.Namespace) -> int:
    from segvol import api
    from segvol.networks import divisor_text

    res = api.export_onnx(checkpoint=args.checkpoint, out=args.out, models_dir=args.models,
                          overwrite=args.overwrite)
    axes = (f"dynamic batch and spatial axes (multiples of {divisor_text(res.divisor)})"
            if res.dynamic else "fixed input shape")
    print(f"wrote {res.path} ({axes}); max |ONNX Runtime - PyTorch| = {res.max_abs_diff:.2e} "
          f"on {len(res.checked_shapes)} random input(s)")
    return 0


# ---------------------------------------------------------------------------------------------------------- infer
def _add_infer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="segment scans; masks land on each scan's own grid")
    p.add_argument("inputs", nargs="*", help=".nii/.nii.gz scan(s), folders or globs of them, DICOM series "
                                             "folder(s), or BraTS case folder(s)")
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


def _run_infer(args: argparse.Namespace) -> int:
    from segvol import api

    inputs = list(args.inputs) + ([args.image] if args.image else [])
    results = api.infer(inputs=inputs, model=args.model, out=args.out, out_dir=args.out_dir,
                        device=args.device, sw_batch_size=args.sw_batch_size, overlap=args.overlap,
                        overwrite=args.overwrite, models_dir=args.models, progress=not args.quiet,
                        tta=args.tta, amp=args.amp, outputs=_infer_outputs(args))
    if results:  # under torchrun, rank 0 holds every rank's rows
        print(_timing_table(results))
    return 0


_OUTPUT_HELP = ("seg (mask .nii.gz), prob (probabilities), overlay (PNG), gif (slice sweep), stl or ply (surface in "
                "scanner mm), dicom-seg (DICOM Segmentation, DICOM inputs), tree (artery tree folder), and any "
                "registered in segvol/inference/outputs.py; e.g. --output seg,overlay,stl")


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


# ----------------------------------------------------------------------------------------------------- preprocess
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


# ---------------------------------------------------------------------------------------------------------- cache
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


# ---------------------------------------------------------------------------------------------------------- bench
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure training and inference speed on phantoms")
    p.add_argument("--config", default="tiny", help="preset or YAML (tiny on the CPU, imagecas on a GPU)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--device", type=_device, default="auto", help=DEVICE_HELP)
    p.add_argument("--cases", type=_positive_int, default=4, help="phantom volumes to use")
    p.add_argument("--size", choices=("small", "full"), default="small", help="phantom size")
    p.add_argument("--steps", type=_positive_int, default=10, help="timed training steps per measurement")
    p.add_argument("--data", default=None, help="an ImageCAS folder to use instead of fresh phantoms")
    p.add_argument("--only", choices=("preprocess", "train", "inference", "tree"), default=None,
                   help="measure one part only (train includes preprocessing; tree: segvol tree and the centreline "
                        "metrics on a phantom label, the label with speckle, and noise)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")


def _run_bench(args: argparse.Namespace) -> int:
    from segvol.bench import format_table, run_bench
    from segvol.config import load_config
    from segvol.utils import pick_device

    cfg = load_config(args.config, args.overrides)
    results = run_bench(cfg=cfg, device=pick_device(args.device), cases=args.cases, size=args.size,
                        steps=args.steps, data=args.data, out_json=args.json, only=args.only)
    print(format_table(results))
    return 0


# ------------------------------------------------------------------------------------------------------------ app
def _add_app(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="start the web app (Streamlit) on localhost")
    p.add_argument("--port", type=_positive_int, default=8501)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes the app to "
                        "every network the machine is on, with no login; see README for an SSH tunnel instead)")
    p.add_argument("--model", default=None, help="ONNX model to preselect (sets MODEL_PATH)")
    p.add_argument("--data-dir", default=None, metavar="FOLDER",
                   help="let visitors type paths of scans and models inside FOLDER (default: uploads only)")


def _run_app(args: argparse.Namespace) -> int:
    import os

    from segvol.app.logic import DATA_DIR_ENV, MAX_UPLOAD_MB

    try:
        import streamlit  # noqa: F401
    except ImportError:
        raise SegvolError("the app needs Streamlit: pip install 'segvol[app]'") from None
    page = Path(__file__).parent / "app" / "streamlit_app.py"
    env = {k: v for k, v in os.environ.items() if k != DATA_DIR_ENV}  # server paths: only by --data-dir
    if args.model:
        env["MODEL_PATH"] = str(Path(args.model).resolve())
    if args.data_dir:
        if not Path(args.data_dir).is_dir():
            raise SegvolError(f"--data-dir {args.data_dir}: no such folder")
        env[DATA_DIR_ENV] = str(Path(args.data_dir).resolve())
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("the app listens on %s: anyone who can reach this machine on port %d can use it (no login)",
                    args.host, args.port)
    cmd = [sys.executable, "-m", "streamlit", "run", str(page), "--server.address", args.host,
           "--server.port", str(args.port), "--server.headless", "true",
           "--server.maxUploadSize", str(MAX_UPLOAD_MB), "--browser.gatherUsageStats", "false"]
    os.execve(sys.executable, cmd, env)  # streamlit takes over this process (signals reach it directly)
    return 0  # pragma: no cover


# ----------------------------------------------------------------------------------------------------------- tree
def _add_tree(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tree", help="artery tree of a vessel mask: centrelines, segments, radii (scanner mm)",
                       description="Centreline graph of each connected tree of a binary vessel mask: segment "
                                   "lengths, radii, tortuosity, generation and narrowing cues (geometric, not a "
                                   "diagnosis). Writes tree.json, segments.csv, centrelines.vtk, tree.png and "
                                   "radius_profiles.png. See docs/tree.md.")
    p.add_argument("mask", help="mask file, e.g. scan_seg.nii.gz (every non-zero voxel is vessel)")
    p.add_argument("-o", "--out-dir", default=None, help="output folder (default: <mask>_tree/ beside the mask)")
    p.add_argument("--label", type=int, default=None, help="only voxels with this label value are vessel")
    p.add_argument("--spur-factor", type=float, default=None,
                   help="prune end branches shorter than this times the radius where they leave (default 2)")
    p.add_argument("--narrowing", type=_fraction, default=None,
                   help="flag radius drops of more than this fraction against the neighbourhood (default 0.4)")
    p.add_argument("--trees", type=int, default=None, metavar="N",
                   help="analyse the N largest components as trees (default 2; 0: all); the rest are reported")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def _run_tree(args: argparse.Namespace) -> int:
    from segvol import api
    from segvol.tree.outputs import summary_line

    out = api.tree(mask=args.mask, out_dir=args.out_dir, label=args.label, spur_factor=args.spur_factor,
                   narrowing=args.narrowing, max_trees=args.trees, overwrite=args.overwrite)
    print(summary_line(out.analysis))
    print(f"wrote {', '.join(sorted(p.name for p in out.files.values()))} to {out.out_dir}")
    return 0


# --------------------------------------------------------------------------------------------------------- import
def _add_import(sub: argparse._SubParsersAction) -> None:
    from segvol.data.importers.command import add_import_parser

    add_import_parser(sub)


def _run_import(args: argparse.Namespace) -> int:
    from segvol.data.importers.command import run_import_command

    return run_import_command(args)


# ----------------------------------------------------------------------------------------------------- check-data
def _add_check(sub: argparse._SubParsersAction) -> None:
    from segvol.data.check_cli import add_check_parser

    add_check_parser(sub)


def _run_check(args: argparse.Namespace) -> int:
    from segvol.data.check_cli import run_check_command

    return run_check_command(args)


COMMANDS: dict[str, tuple[Callable, Callable]] = {
    "synth": (_add_synth, _run_synth),
    "train": (_add_train, _run_train),
    "export-onnx": (_add_export, _run_export),
    "infer": (_add_infer, _run_infer),
    "preprocess": (_add_preprocess, _run_preprocess),
    "bench": (_add_bench, _run_bench),
    "import": (_add_import, _run_import),
    "check-data": (_add_check, _run_check),
    "cache": (_add_cache, _run_cache),
    "evaluate": (evaluation_commands.add_evaluate, evaluation_commands.run_evaluate),
    "report": (evaluation_commands.add_report, evaluation_commands.run_report),
    "mesh": (evaluation_commands.add_mesh, evaluation_commands.run_mesh),
    "tree": (_add_tree, _run_tree),
    "app": (_add_app, _run_app),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segvol", description="3D medical image segmentation with MONAI.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    common = parser.add_argument_group("output")
    common.add_argument("-q", "--quiet", action="store_true", help="warnings and results only, no progress bars")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    common.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("segvol")
    except PackageNotFoundError:
        return "unknown"


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    logging.getLogger("segvol").setLevel(level)
    for noisy in ("monai", "torch", "onnxscript", "onnx_ir"):
        logging.getLogger(noisy).setLevel(max(level, logging.ERROR))
    if not verbose:  # library deprecation chatter is for developers, not users
        import warnings

        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(monai|torch)\.")


def _move_global_flags(argv: list[str]) -> list[str]:
    """Accept -q/-v/--debug after the command too (``segvol train --quiet``)."""
    flags = {"-q", "--quiet", "-v", "--verbose", "--debug"}
    return [a for a in argv if a in flags] + [a for a in argv if a not in flags]


def main(argv: Sequence[str] | None = None) -> int:
    argv = _move_global_flags(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _setup_logging(args.quiet, args.verbose)
    try:
        return COMMANDS[args.command][1](args)
    except SegvolError as exc:
        if args.debug:
            raise
        print(f"segvol {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"segvol {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        if args.debug:
            raise
        print(f"segvol {args.command}: error: out of memory (try a smaller --sw-batch-size or --device cpu)",
              file=sys.stderr)
        return 2
    except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
        if args.debug or "out of memory" not in str(exc).lower():
            raise
        print(f"segvol {args.command}: error: out of memory on the GPU ({first_line(exc, 100)}); try a "
              f"smaller --sw-batch-size, or --device cpu", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
