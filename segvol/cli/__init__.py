"""Command line: parse, load the config, call one API function. Heavy imports happen inside the commands so
that ``segvol --help`` stays instant.

Each module of this package registers its commands in its ``COMMANDS``; this one gathers them, sets up logging and
turns errors into one line. Nothing else in segvol imports this package.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from segvol.cli import data, evaluate, infer, plan, train, tools, tree
from segvol.errors import SegvolError, first_line

__all__ = ["main", "build_parser", "COMMANDS"]

log = logging.getLogger("segvol")


# argparse only (no torch): the command order of ``segvol --help``
COMMANDS: dict[str, tuple[Callable, Callable]] = {
    **data.COMMANDS, **plan.COMMANDS, **train.COMMANDS, **infer.COMMANDS, **evaluate.COMMANDS, **tree.COMMANDS,
    **tools.COMMANDS,
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
    # segvol's own logger speaks at ``level``; other libraries' loggers (MONAI's LoadImage announces every reader
    # that fails before segvol's one-line error, pydicom and highdicom warn about header values) only at warnings
    # and above, and only with --verbose below errors
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("segvol").setLevel(level)
    for noisy in ("monai", "torch", "onnxscript", "onnx_ir", "LoadImage", "LoadImaged", "pydicom", "highdicom",
                  "dicomweb_client", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else max(level, logging.ERROR))
    if not verbose:  # library deprecation chatter is for developers, not users
        import warnings

        logging.captureWarnings(True)  # library warnings go to "py.warnings", shown with --verbose
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
