"""``segvol train`` and ``segvol export-onnx``: parsing only; the work is in :mod:`segvol.api`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from segvol.cli.argtypes import DEVICE_HELP
from segvol.cli.argtypes import device as _device
from segvol.cli.argtypes import positive_int as _positive_int
from segvol.data.registry import describe_names

__all__ = ["COMMANDS"]

def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a 3D BasicUNet on a dataset")
    p.add_argument("--dataset", default=None, help=f"{describe_names()} (default: the config's)")
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
    how = p.add_mutually_exclusive_group()
    how.add_argument("--plan", dest="plan", action="store_true", default=None,
                     help="plan the dataset first (segvol plan) and train with the plan; the default for datasets "
                          "that plan by default (msd/nnunet) unless --config is given")
    how.add_argument("--no-plan", dest="plan", action="store_false", help="train with the dataset's preset instead")


def _default_preset() -> str:
    """The preset of the default dataset (the one the config names by default)."""
    from segvol.data.registry import DEFAULT_DATASET, get_adapter

    adapter = get_adapter(DEFAULT_DATASET)
    return adapter.preset or adapter.name


def _wants_plan(args: argparse.Namespace) -> bool:
    """``--plan``; or, without ``--config`` and ``--no-plan``, a dataset that plans by default (msd/nnunet)."""
    if args.plan is not None:
        return bool(args.plan)
    if args.config or not args.dataset:
        return False
    from segvol.data.registry import get_adapter

    return get_adapter(args.dataset).plans_by_default


def _planned_config(args: argparse.Namespace):  # noqa: ANN202
    """Plan the dataset (printed), then the planned config with ``--set`` on top."""
    import logging

    from segvol import api
    from segvol.data.registry import DEFAULT_DATASET
    from segvol.plan import plan_table, plan_to_config

    dataset = args.dataset or DEFAULT_DATASET
    data = args.data or f"data/{dataset}"
    plan = api.plan(dataset=dataset, data=data, device=args.device or "auto", base=args.config,
                    progress=not args.quiet)
    logging.getLogger("segvol").info("%s", plan_table(plan))
    return plan_to_config(plan, args.overrides)


def _load_train_config(args: argparse.Namespace):  # noqa: ANN202
    from segvol.config import load_config

    from segvol.data.registry import get_adapter

    if _wants_plan(args):
        return _planned_config(args)

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
    preset = preset or _default_preset()
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


COMMANDS: dict[str, tuple[Callable, Callable]] = {
    "train": (_add_train, _run_train),
    "export-onnx": (_add_export, _run_export),
}
