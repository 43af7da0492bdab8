"""``segvol plan``: parsing and the plan's table; the work is in :mod:`segvol.api` (:mod:`segvol.plan`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from segvol.cli.argtypes import DEVICE_HELP
from segvol.cli.argtypes import device as _device
from segvol.data.registry import describe_names

__all__ = ["COMMANDS"]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value}: must be positive")
    return value


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="plan a dataset's spacing, normalisation, patch and network from its data",
                       description="Takes a fingerprint of the dataset (spacings, shapes, foreground intensities, "
                                   "structure sizes), then applies nnU-Net's rules for target spacing, cropping, "
                                   "normalisation, patch and network within a memory budget. Prints the plan and "
                                   "where it departs from the preset; -o writes it as a config to train with "
                                   "(segvol train --config plan.yaml). See docs/plan.md.")
    p.add_argument("--dataset", required=True, help=describe_names())
    p.add_argument("--data", required=True, help="the dataset folder")
    p.add_argument("--device", type=_device, default="auto", help=f"whose memory is the budget: {DEVICE_HELP}")
    p.add_argument("--memory-gb", type=_positive_float, default=None, metavar="N",
                   help="the memory budget in GB instead of the device's (the patch and batch follow from it)")
    p.add_argument("-o", "--out", default=None, metavar="PLAN.yaml", help="write the plan as a config (base: preset)")
    p.add_argument("--json", default=None, metavar="PLAN.json", help="write the plan as JSON for tools")
    p.add_argument("--base", default=None, help="the preset under the plan (default: the dataset's)")
    p.add_argument("--no-cache", action="store_true", help="take the fingerprint afresh (it is cached beside the data)")
    p.add_argument("--overwrite", action="store_true", help="replace existing -o/--json files")


def _run_plan(args: argparse.Namespace) -> int:
    from segvol import api
    from segvol.plan import plan_table

    plan = api.plan(dataset=args.dataset, data=args.data, device=args.device, memory_gb=args.memory_gb,
                    out_yaml=args.out, out_json=args.json, base=args.base, overwrite=args.overwrite,
                    progress=not args.quiet, cache=not args.no_cache)
    print(plan_table(plan))
    written = [p for p in (args.out, args.json) if p]
    if written:
        hint = f"; train with: segvol train --config {args.out}" if args.out else ""
        print(f"wrote {' and '.join(written)}{hint}")
    return 0


COMMANDS: dict[str, tuple[Callable, Callable]] = {
    "plan": (_add_plan, _run_plan),
}
