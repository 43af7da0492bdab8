"""``segvol bench`` and ``segvol app``: the benchmarks and the web app's server."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from segvol.cli.argtypes import DEVICE_HELP
from segvol.cli.argtypes import device as _device
from segvol.cli.argtypes import positive_int as _positive_int
from segvol.errors import SegvolError

log = logging.getLogger("segvol")

__all__ = ["COMMANDS"]

def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure training and inference speed on phantoms")
    p.add_argument("--config", default="tiny", help="preset or YAML (tiny on the CPU, imagecas on a GPU)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--device", type=_device, default="auto", help=DEVICE_HELP)
    p.add_argument("--cases", type=_positive_int, default=4, help="phantom volumes to use")
    p.add_argument("--size", choices=("small", "full"), default="small", help="phantom size")
    p.add_argument("--steps", type=_positive_int, default=10, help="timed training steps per measurement")
    p.add_argument("--data", default=None, help="an ImageCAS folder to use instead of fresh phantoms")
    p.add_argument("--only", choices=("preprocess", "train", "inference", "tree", "cascade", "cascade-quality",
                                      "cascade-windows"), default=None,
                   help="measure one part only (train includes preprocessing; tree: segvol tree and the centreline "
                        "metrics on a phantom label, the label with speckle, and noise; cascade: the 1 mm recipe, "
                        "the fine cascade (imagecas-fine, or --config when a cascade) and --no-locate with full-size "
                        "networks on one scan; cascade-quality: tiny-fine (or --config when a cascade) against tiny "
                        "trained for the same minutes on the phantoms, judged on two unseen ones; cascade-windows: "
                        "the fine box's windows against the whole scan's at 1 mm, per scan; docs/cascade.md)")
    p.add_argument("--locator", default=None, metavar="RUN/best.pt",
                   help="with --only cascade or cascade-windows: a cascade checkpoint whose trained coarse stage "
                        "does the locating")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")


def _run_bench(args: argparse.Namespace) -> int:
    from segvol.bench import format_table, run_bench
    from segvol.config import load_config
    from segvol.utils import pick_device

    cfg = load_config(args.config, args.overrides)
    results = run_bench(cfg=cfg, device=pick_device(args.device), cases=args.cases, size=args.size,
                        steps=args.steps, data=args.data, out_json=args.json, only=args.only,
                        locator=args.locator)
    print(format_table(results))
    return 0

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
    page = Path(__file__).parent.parent / "app" / "streamlit_app.py"
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


COMMANDS: dict[str, tuple[Callable, Callable]] = {
    "bench": (_add_bench, _run_bench),
    "app": (_add_app, _run_app),
}
