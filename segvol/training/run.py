"""A training run: records and split for a config, the run folder, and resuming a run where it stopped.

:func:`train_run` and :func:`resume_run` are what ``segvol train`` does; :func:`resolve_records` is the adapter's
records grouped by split, for anything that needs the training data as training sees it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segvol.config import Config, config_to_dict
from segvol.errors import SegvolError
from segvol.labels import TaskSpec
from segvol.training.trainer import FitResult

if TYPE_CHECKING:
    from segvol.data.adapter import DatasetAdapter

__all__ = ["resolve_records", "new_run_dir", "train_run", "resume_run"]

log = logging.getLogger(__name__)


def resolve_records(cfg: Config) -> tuple[DatasetAdapter, TaskSpec, dict[str, list[dict]], dict[str, list[str]]]:
    """Adapter, task spec, records grouped by split, and the split itself, for ``cfg.data``."""
    from segvol.data.records import apply_split, seeded_split
    from segvol.data.registry import get_adapter

    adapter = get_adapter(cfg.data.dataset)
    spec = adapter.task_spec(cfg)
    records = adapter.find_records(cfg.data.root, cfg.data.modalities)
    split = adapter.official_split(cfg.data.root)
    if split is None:
        split = seeded_split([r["id"] for r in records], cfg.data.val_fraction, cfg.data.test_fraction,
                             cfg.data.split_seed)
        log.info("split: seeded (seed %d): train %d, val %d, test %d", cfg.data.split_seed, len(split["train"]),
                 len(split["val"]), len(split["test"]))
    return adapter, spec, apply_split(records, split), split


def new_run_dir(models_dir: Path, name: str | None, dataset: str) -> Path:
    name = name or f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if "/" in name or name.startswith("."):
        raise SegvolError(f"--name {name!r}: a run name is a plain folder name")
    run_dir = models_dir / name
    if run_dir.exists():
        raise SegvolError(f"{run_dir}: run folder already exists; pick another --name")
    run_dir.mkdir(parents=True)
    return run_dir


def train_run(cfg: Config, *, models_dir: str | Path = "models", name: str | None = None,
              device: str | None = None, progress: bool = True) -> FitResult:
    """Train on ``cfg.data`` and write a run folder (config, split, metrics.csv, best.pt, last.pt)."""
    from segvol.data.check import require_trainable  # headers only: a broken case stops training here
    from segvol.data.registry import get_adapter
    from segvol.distributed import init_distributed
    from segvol.training.trainer import fit
    from segvol.utils import pick_device

    cfg = get_adapter(cfg.data.dataset).configure(cfg)  # e.g. the intensity scheme dataset.json's modality asks for
    adapter, spec, groups, split = resolve_records(cfg)
    if not groups["train"]:
        raise SegvolError(f"{cfg.data.root}: no training cases after the split")
    require_trainable([r for part in groups.values() for r in part], dataset=adapter, root=cfg.data.root,
                      channels=spec.in_channels)
    if cfg.locate.enabled:  # the fine stage's crops normalised as their scans are (before the config is written)
        from segvol.training.cascade import crop_invariant

        cfg = crop_invariant(cfg, groups["train"])
    info, torch_device = init_distributed(pick_device(device or cfg.train.device))  # under torchrun: join now
    run_dir = _prepare_run(cfg, split, Path(models_dir), name, info)
    log.info("run folder: %s (%d train, %d val, %d test cases)", run_dir, len(groups["train"]), len(groups["val"]),
             len(groups["test"]))
    train = _fit_cascade if cfg.locate.enabled else fit
    return train(cfg, spec, groups, run_dir, torch_device, progress=progress, logger=_train_logger(run_dir))


def _prepare_run(cfg: Config, split: dict[str, list[str]], models_dir: Path, name: str | None, info: Any) -> Path:
    """Rank 0 names and creates the run folder with the resolved config and split, and shares the name (or its
    error); the other ranks wait at a barrier and reuse the folder."""
    import yaml

    from segvol.data.records import write_split
    from segvol.distributed import barrier, broadcast_object
    from segvol.utils import atomic_path

    outcome: str | SegvolError = ""
    if info.is_main:
        try:
            run_dir = new_run_dir(models_dir, name, cfg.data.dataset)
            with atomic_path(run_dir / "config.yaml") as tmp:
                tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
            write_split(split, run_dir / "split.json")
            outcome = run_dir.name
        except SegvolError as exc:
            outcome = exc
    outcome = broadcast_object(outcome, info)
    if isinstance(outcome, SegvolError):
        raise outcome
    barrier(info)
    return models_dir / outcome


def _train_logger(run_dir: Path, purge_step: int | None = None) -> Any:
    """TensorBoard event files next to metrics.csv (rank 0 only); ``purge_step`` on resume (see TrainLogger)."""
    from segvol.config import distributed_env

    if distributed_env()[0] != 0:
        return None
    try:
        from segvol.training.tensorboard import TrainLogger

        return TrainLogger(run_dir, purge_step=purge_step)
    except ImportError:  # tensorboard missing: metrics.csv still has everything
        log.warning("tensorboard is not installed; training curves go to metrics.csv only")
        return None


def resume_run(run_dir: str | Path, *, device: str | None = None, progress: bool = True,
               epochs: int | None = None) -> FitResult:
    """Continue ``run_dir`` from its ``last.pt`` (same config and split; ``epochs`` may extend it). A finished run is
    reported, not trained further."""
    from segvol.config import config_from_dict
    from segvol.data.records import apply_split, read_split
    from segvol.data.registry import get_adapter
    from segvol.checkpoint import load_checkpoint
    from segvol.training.trainer import fit
    from segvol.utils import pick_device

    run_dir = Path(run_dir)
    ckpt = load_checkpoint(run_dir / "last.pt")
    cfg = config_from_dict(ckpt["config"], saved=True)
    if epochs is not None:
        cfg = cfg.replace(train={"epochs": epochs})
    done = int(ckpt["epoch"]) >= cfg.train.epochs or (ckpt.get("finished") and epochs is None)
    if done:
        log.warning("%s: run already finished at epoch %d (best val Dice %.4f at epoch %d); nothing to do "
                    "(pass --epochs N to extend it)", run_dir, ckpt["epoch"], ckpt["best_metric"], ckpt["best_epoch"])
        return FitResult(run_dir, float(ckpt["best_metric"]), int(ckpt["best_epoch"]), epochs=int(ckpt["epoch"]))
    ckpt["finished"] = False
    adapter = get_adapter(cfg.data.dataset)
    spec = adapter.task_spec(cfg)
    groups = apply_split(adapter.find_records(cfg.data.root, cfg.data.modalities), read_split(run_dir / "split.json"))
    log.info("resuming %s after epoch %d of %d", run_dir, ckpt["epoch"], cfg.train.epochs)
    train = _fit_cascade if cfg.locate.enabled else fit
    return train(cfg, spec, groups, run_dir, pick_device(device or cfg.train.device), progress=progress,
                 resume=dict(ckpt), logger=_train_logger(run_dir, purge_step=int(ckpt["epoch"]) + 1))


def _fit_cascade(*args: Any, **kwargs: Any) -> FitResult:
    """:func:`segvol.training.cascade.fit_cascade`: the coarse stage, then the fine stage (``locate.enabled``)."""
    from segvol.training.cascade import fit_cascade

    return fit_cascade(*args, **kwargs)
