"""segvol's Python API: one keyword-only function per command. The CLI is a thin wrapper over these."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from segvol.config import Config, config_to_dict
from segvol.errors import SegvolError

if TYPE_CHECKING:  # torch-importing modules stay lazy: `segvol --help` must not import torch
    from segvol.inference.export import ExportResult
    from segvol.training.trainer import FitResult

__all__ = ["synth", "train", "export_onnx", "infer", "newest_run", "default_output", "expand_inputs",
           "check_targets", "resolve_records", "import_data", "caches"]

log = logging.getLogger(__name__)


def synth(*, dataset: str, out: str | Path, cases: int = 8, size: str = "small", seed: int = 0,
          overwrite: bool = False, progress: bool = True, dicom: bool = False) -> list[Path]:
    """Write phantom cases of ``dataset`` in its real layout (see :mod:`segvol.data.phantoms`); with ``dicom``
    (CT only) each scan also as a DICOM series folder ``<out>/dicom/<case>/``."""
    from segvol.data.registry import write_phantoms
    from segvol.data.registry import get_adapter

    adapter = get_adapter(dataset)
    if dicom and adapter.modality != "CT":
        raise SegvolError(f"--dicom: only CT phantoms are written as DICOM series, not {dataset}")
    written = write_phantoms(dataset, out, cases, size=size, seed=seed, overwrite=overwrite, progress=progress)
    if dicom:
        import nibabel as nib
        import numpy as np
        from nibabel.spatialimages import SpatialImage
        from tqdm.auto import tqdm

        from segvol.io.dicom import write_series

        scans = adapter.phantom_scans(Path(out))
        for i, (case, scan) in enumerate(tqdm(scans, desc="dicom", unit="series", disable=not progress)):
            img = cast(SpatialImage, nib.load(str(scan)))
            written.append(write_series(np.asanyarray(img.dataobj), img.affine, Path(out) / "dicom" / case,
                                        seed=seed * 1000 + i, overwrite=overwrite))
    return written


def resolve_records(cfg: Config) -> tuple[Any, Any, dict[str, list[dict]], dict[str, list[str]]]:
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


def _new_run_dir(models_dir: Path, name: str | None, dataset: str) -> Path:
    name = name or f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if "/" in name or name.startswith("."):
        raise SegvolError(f"--name {name!r}: a run name is a plain folder name")
    run_dir = models_dir / name
    if run_dir.exists():
        raise SegvolError(f"{run_dir}: run folder already exists; pick another --name")
    run_dir.mkdir(parents=True)
    return run_dir


def train(*, cfg: Config | None = None, models_dir: str | Path = "models", name: str | None = None,
          device: str | None = None, progress: bool = True, resume: str | Path | None = None,
          epochs: int | None = None) -> FitResult:
    """Train on ``cfg.data`` and write a run folder (config, split, metrics.csv, best.pt, last.pt).

    With ``resume=<run folder>``, continue that run from its ``last.pt`` (same config and split; ``epochs`` may
    extend it). A finished run is reported, not trained further.
    """
    from segvol.training.trainer import fit
    from segvol.utils import pick_device

    if resume is not None:
        return _resume(Path(resume), device=device, progress=progress, epochs=epochs)
    if cfg is None:
        raise SegvolError("train needs a config (or resume=<run folder>)")
    from segvol.data.registry import get_adapter

    cfg = get_adapter(cfg.data.dataset).configure(cfg)  # e.g. the intensity scheme dataset.json's modality asks for
    adapter, spec, groups, split = resolve_records(cfg)
    if not groups["train"]:
        raise SegvolError(f"{cfg.data.root}: no training cases after the split")
    from segvol.data.check import require_trainable  # headers only: a broken case stops training here

    require_trainable([r for part in groups.values() for r in part], dataset=adapter, root=cfg.data.root,
                      channels=spec.in_channels)
    from segvol.training.distributed import init_distributed

    info, torch_device = init_distributed(pick_device(device or cfg.train.device))  # under torchrun: join now
    run_dir = _prepare_run(cfg, split, Path(models_dir), name, info)
    log.info("run folder: %s (%d train, %d val, %d test cases)", run_dir, len(groups["train"]), len(groups["val"]),
             len(groups["test"]))
    return fit(cfg, spec, groups, run_dir, torch_device, progress=progress, logger=_train_logger(run_dir))


def _prepare_run(cfg: Config, split: dict[str, list[str]], models_dir: Path, name: str | None, info: Any) -> Path:
    """Rank 0 names and creates the run folder with the resolved config and split, and shares the name (or its
    error); the other ranks wait at a barrier and reuse the folder."""
    import yaml

    from segvol.data.records import write_split
    from segvol.training.distributed import barrier, broadcast_object
    from segvol.utils import atomic_path

    outcome: str | SegvolError = ""
    if info.is_main:
        try:
            run_dir = _new_run_dir(models_dir, name, cfg.data.dataset)
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


def _resume(run_dir: Path, device: str | None, progress: bool, epochs: int | None) -> FitResult:
    from segvol.config import config_from_dict
    from segvol.data.records import apply_split, read_split
    from segvol.data.registry import get_adapter
    from segvol.checkpoint import load_checkpoint
    from segvol.training.trainer import FitResult, fit
    from segvol.utils import pick_device

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
    return fit(cfg, spec, groups, run_dir, pick_device(device or cfg.train.device), progress=progress,
               resume=ckpt, logger=_train_logger(run_dir, purge_step=int(ckpt["epoch"]) + 1))


def newest_run(models_dir: str | Path = "models", checkpoint: str = "best.pt") -> Path:
    """The most recently written ``<models_dir>/<run>/<checkpoint>``."""
    found = sorted(Path(models_dir).glob(f"*/{checkpoint}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SegvolError(f"{models_dir}: no run with a {checkpoint} yet; train one with "
                          f"'segvol train --dataset imagecas'")
    return found[-1]


def export_onnx(*, checkpoint: str | Path | None = None, out: str | Path = "models/model.onnx",
                models_dir: str | Path = "models", overwrite: bool = False) -> ExportResult:
    """Export a checkpoint (default: the newest run's ``best.pt``) to ONNX and check it under ONNX Runtime."""
    from segvol.inference.export import export_onnx_file
    from segvol.checkpoint import load_checkpoint
    from segvol.utils import check_writable_target

    ckpt_path = Path(checkpoint) if checkpoint else newest_run(models_dir)
    check_writable_target(out, overwrite)
    log.info("exporting %s -> %s", ckpt_path, out)
    return export_onnx_file(load_checkpoint(ckpt_path), out)


def default_output(image: Any, out_dir: str | Path | None = None) -> Path | None:
    """``scan.nii.gz`` -> ``scan_seg.nii.gz`` beside the input (or in ``out_dir``); a folder (case folder, DICOM
    series) -> ``<folder>_seg.nii.gz`` beside it; the sequences of one scan are named after the first; an in-memory
    scan -> None (nothing is written)."""
    from segvol.io.nifti import is_in_memory
    from segvol.inference.outputs import mask_path_for

    if _as_array_input(image) is not None or is_in_memory(image):
        return None
    return mask_path_for(image[0] if isinstance(image, (list, tuple)) else image, out_dir)


def _default_model(models_dir: str | Path) -> Path:
    onnx_path = Path(models_dir) / "model.onnx"
    return onnx_path if onnx_path.is_file() else newest_run(models_dir)


def _as_array_input(item: Any) -> tuple[Any, Any] | None:
    """``(array, affine)`` when ``item`` is an in-memory scan given as a numpy array and its 4x4 affine."""
    if isinstance(item, tuple) and len(item) == 2 and type(item[0]).__module__ == "numpy" \
            and hasattr(item[0], "ndim"):
        return item
    return None


def _is_case_folder(folder: Path, modalities: Sequence[str]) -> bool:
    """Whether ``folder`` is one case of the model's dataset (its sequences side by side, BraTS naming) rather than a
    folder of scans: for a model of several channels, when any file names a sequence; for one channel, when a file
    names that sequence (a BraTS case read by a FLAIR-only model)."""
    from segvol.data.brats import ALIASES, scan_case

    try:
        found = set(scan_case(folder).files) - {"seg"}
    except SegvolError:  # two files of one sequence: one case for a multi-channel model (resolve_input says so)
        return len(modalities) > 1
    if len(modalities) > 1:
        return bool(found)
    wanted = {ALIASES.get(str(m).lower()) for m in modalities} - {None, "seg"}
    return bool(modalities) and len(wanted) == len(modalities) and wanted <= found


def _expand_folder(folder: Path, modalities: Sequence[str], is_scan: Any) -> list[Any]:
    from segvol.io.dicom import is_series_folder

    if is_series_folder(folder):
        return [folder]  # one DICOM series
    if _is_case_folder(folder, modalities):
        return [folder]  # one case: read in the model's sequences by resolve_input
    scans = sorted(p for p in folder.iterdir() if (p.is_file() and is_scan(p)) or (  # scans, series, cases
        p.is_dir() and not p.name.startswith(".") and (is_series_folder(p) or _is_case_folder(p, modalities))))
    if not scans and len(modalities) > 1:
        return [folder]  # a case folder lacking sequences: resolve_input names what is missing
    if not scans:
        raise SegvolError(f"{folder}: folder holds no .nii/.nii.gz scans and no DICOM series")
    return scans


def expand_inputs(inputs: list[Any], modalities: Sequence[str] = ()) -> list[Any]:
    """Globs -> matching files; a folder -> its scans, unless it is one scan itself: a DICOM series, or a case of
    the model's dataset (``modalities``: the model's channels, e.g. ``("flair",)``; see :func:`_is_case_folder`).

    A folder is a DICOM series when it holds DICOM files; otherwise each of its scans and each of its series (or
    case) subfolders is one input. Masks segvol wrote earlier (``*_seg.nii.gz``) and ImageCAS labels
    (``*.label.nii.gz``) are not inputs. In-memory scans (nibabel images, ``(array, affine)``) pass through.
    """
    import glob

    from segvol.io.nifti import NIFTI_SUFFIXES, is_in_memory

    def is_scan(p: Path) -> bool:
        name = p.name.lower()
        return name.endswith(NIFTI_SUFFIXES) and "_seg." not in name and ".label." not in name

    expanded: list[Any] = []
    for item in inputs:
        if isinstance(item, (list, tuple)) or is_in_memory(item):
            expanded.append(item)
            continue
        text = str(item)
        if any(c in text for c in "*?[") and not Path(text).exists():
            matches = sorted(Path(m) for m in glob.glob(text))
            if not matches:
                raise SegvolError(f"{text}: no files match this pattern")
            expanded += [m for m in matches if m.is_dir() or is_scan(m)]
        elif Path(text).is_dir():
            expanded += _expand_folder(Path(text), modalities, is_scan)
        else:
            expanded.append(Path(text))
    return expanded


def _input_files(item: Any) -> list[Path]:
    """The files and folders an input reads (for the never-replace-an-input check)."""
    from segvol.io.nifti import is_in_memory

    if _as_array_input(item) is not None or is_in_memory(item):
        return []
    items = list(item) if isinstance(item, (list, tuple)) else [item]
    return [Path(p).resolve() for p in items]


def check_targets(inputs: list[Any], targets: list[dict[str, Path]], overwrite: bool,
                  folders: frozenset[str] = frozenset()) -> None:
    """Refuse, before any work, a batch whose outputs would collide or replace what must stay.

    Two inputs naming one output (``a/scan.nii.gz`` and ``b/scan.nii.gz`` with one ``--out-dir``; ``scan.nii``
    beside ``scan.nii.gz``; a DICOM folder ``case7/`` beside ``case7.nii.gz``), an output that is an input or lies
    inside an input folder (``--overwrite`` or not), an output that is a folder, and an existing output without
    ``overwrite`` are one-line errors naming the files. ``targets`` maps output names to paths per input;
    the outputs named in ``folders`` are folders by design.
    """
    from segvol.utils import check_writable_target

    owner: dict[Path, Any] = {}
    protected = {p: item for item in inputs for p in _input_files(item)}
    for item, files in zip(inputs, targets):
        for name, target in files.items():
            key = target.resolve()
            if key in owner:
                raise SegvolError(f"{_input_name(item)} and {_input_name(owner[key])} would both write {target}; "
                                  f"give them different --out-dir folders or names")
            owner[key] = item
            if key in protected:
                raise SegvolError(f"{target}: is an input ({_input_name(protected[key])}); an output never "
                                  f"replaces an input")
            inside = next((p for p in protected if p.is_dir() and p in key.parents), None)
            if inside is not None:
                raise SegvolError(f"{target}: would be written inside the input folder {inside}; write it elsewhere")
            if target.is_dir() and name not in folders:
                raise SegvolError(f"{target}: is a folder; the output must be a file name")
            check_writable_target(target, overwrite)


def _input_name(item: Any) -> str:
    if isinstance(item, (list, tuple)) and _as_array_input(item) is None:
        return str(item[0]) if item else "?"
    return str(item) if _as_array_input(item) is None else "<in-memory array>"


def _output_paths(inputs: list[Any], out: str | Path | None, out_dir: str | Path | None) -> list[Path | None]:
    if out is not None:
        if len(inputs) > 1:
            raise SegvolError("-o/--out names one file; use --out-dir for several inputs")
        if Path(out).is_dir():
            raise SegvolError(f"-o {out}: is a folder; -o names the mask file (use --out-dir for a folder)")
        return [Path(out)]
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise SegvolError(f"--out-dir {out_dir}: is a file, not a folder")
    if out_dir is not None and any(default_output(p) is None for p in inputs):
        raise SegvolError("--out-dir: in-memory scans have no file name to write under; give out= for one scan")
    return [default_output(p, out_dir) for p in inputs]


def infer(*, inputs: list[Any], model: str | Path | None = None, out: str | Path | None = None,
          out_dir: str | Path | None = None, device: str = "auto", sw_batch_size: int | None = None,
          overlap: float | str | None = None, overwrite: bool = False, models_dir: str | Path = "models",
          progress: bool = False, tta: bool = False, amp: bool = False,
          outputs: str | Sequence[str] | None = None) -> list[Any]:
    """Segment each input scan and write its outputs on the scan's own grid. Returns one Prediction per input.

    An input is a scan file, a glob, a folder of scans, a DICOM series folder (or a folder of them), a list of files
    (the sequences of one multi-channel scan), a case folder of the model's dataset (read in the model's sequences,
    however many), or a scan in memory: a ``nibabel.Nifti1Image`` (or a list of them), or ``(array, affine)``.
    ``Prediction.mask`` is the mask in the input's kind: the written path, a ``Nifti1Image``, or a uint8 array; in
    memory nothing is written unless ``out`` is given. Masks of folders go beside them as ``<folder>_seg.nii.gz``.

    ``outputs`` names the output formats (``"seg,overlay,stl"``; see :mod:`segvol.inference.outputs`; default
    ``seg``). Outputs that would collide, replace an input or (without ``overwrite``) an existing file are refused
    before any work. ``tta`` averages the predictions over three axis flips; ``amp`` runs PyTorch models in bf16 on
    CUDA.
    """
    from tqdm.auto import tqdm

    from segvol.data.brats import resolve_input
    from segvol.inference.backends import load_model, require_device
    from segvol.io.nifti import as_image
    from segvol.inference.outputs import OutputPlan
    from segvol.inference.predictor import infer_file
    from segvol.training.distributed import barrier, gather_shards, init_distributed, shard, shutdown
    from segvol.utils import pick_device, torch_flags

    if not inputs:
        raise SegvolError("no input scans given")
    plan = OutputPlan.of(outputs)
    info, torch_device = init_distributed(pick_device(device))  # under torchrun: each rank takes a share
    loaded = load_model(model or _default_model(models_dir), torch_device)
    if device != "auto":
        require_device(loaded, torch_device)
    log.info("model: %s (%s on %s)", loaded.path, loaded.backend, loaded.provider or loaded.device)
    if amp and not (loaded.backend == "pytorch" and loaded.device.type == "cuda"):
        log.warning("--amp applies to PyTorch models on CUDA; running in float32")
    modalities = loaded.task.modalities
    inputs = expand_inputs(list(inputs), modalities)
    masks = _output_paths(inputs, out, out_dir)
    for item, mask in zip(inputs, masks):
        reason = plan.refusal(item) if mask is not None else None
        if reason:
            raise SegvolError(reason)
    check_targets(inputs, [plan.targets(m) if m is not None else {} for m in masks], overwrite, plan.folders)
    barrier(info)  # every rank has checked every target before any rank writes one
    results = []
    mine = shard(list(zip(inputs, masks)), info)  # every output written once, by the rank that computes it
    bar = tqdm(mine, desc="infer", unit="scan", disable=not progress or len(inputs) < 2 or not info.is_main)
    with torch_flags(benchmark=True):  # every window has the ROI's shape; the caller's flags come back after
        for item, mask in bar:
            array_input = _as_array_input(item)
            image = as_image(*array_input) if array_input is not None else resolve_input(item, modalities)
            pred = infer_file(loaded, image, mask, sw_batch_size=sw_batch_size, overlap=overlap,
                              progress=progress and len(inputs) == 1, tta=tta, amp=amp, outputs=plan,
                              overwrite=overwrite)
            if array_input is not None:
                pred.mask = pred.labels
            results.append(pred)
    results = gather_shards(results, info)  # rank 0: every rank's, in input order; other ranks: none
    shutdown(info)
    return results


def import_data(*, fmt: str, src: str | Path, out: str | Path, overwrite: bool = False, **options: Any) -> Any:
    """Convert ``src`` (``brats-h5``, ``lgg-tiff`` or ``msd``) into BraTS-layout case folders under ``out``.

    Returns an :class:`segvol.data.importers.ImportReport` (volumes written, volumes skipped with reasons).
    """
    from segvol.data.importers import run_import

    return run_import(fmt, src, out, overwrite=overwrite, **options)


# ------------------------------------------------------------------------------------- evaluation, report, mesh
__all__ += ["evaluate", "report", "mesh"]


def evaluate(*, run: str | Path | None = None, split: str | None = None, data: str | Path | None = None,
             pred: str | Path | None = None, ref: str | Path | None = None, images: str | Path | None = None,
             labels: str = "auto", cldice: bool | None = None, out: str | Path | None = None, worst: int = 3,
             gif: bool = True, device: str = "auto", progress: bool = True) -> Any:
    """Score segmentations; returns a :class:`segvol.evaluation.evaluate.EvalResult`.

    With ``run``: predict the run's ``split`` (default test, else val) with its ``best.pt`` and score against the
    labels on the original grids (``data`` overrides the dataset folder). With ``pred`` and ``ref``: score two
    folders of masks matched by case id (``images``: scans for the overlays; ``labels``: the label scheme).
    ``cldice``: centreline Dice on/off (None: ImageCAS runs, binary masks). See docs/evaluation.md.
    """
    from segvol.evaluation.run import evaluate_folders, evaluate_run

    if run is not None:
        if pred is not None or ref is not None:
            raise SegvolError("give either run=..., or pred=... and ref=..., not both")
        return evaluate_run(run, split=split, out=out, device=device, data_root=data, worst=worst, gif=gif,
                            progress=progress)
    if pred is None or ref is None:
        raise SegvolError("evaluate needs run=<run folder>, or both pred=<folder> and ref=<folder>")
    return evaluate_folders(pred, ref, out=out, images=images, scheme=labels, vessel=cldice, worst=worst, gif=gif,
                            progress=progress)


def report(*, run: str | Path, eval_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``<run>/report.md`` and ``<run>/report.html`` (training curves, metrics, gallery)."""
    from segvol.evaluation.report import write_report

    return write_report(run, eval_dir)


def mesh(*, seg: str | Path, out: str | Path, smooth: int = 0, label: int | None = None, labels: str = "multi",
         overwrite: bool = False) -> list[Any]:
    """Surface mesh(es) of a mask in scanner mm, STL or PLY by ``out``'s suffix; one per label or region."""
    from segvol.mesh import mesh_file

    return mesh_file(seg, out, smooth=smooth, label=label, labels=labels, overwrite=overwrite)


# ------------------------------------------------------------------------------------------------------------- tree
__all__ += ["tree"]


def tree(*, mask: str | Path, out_dir: str | Path | None = None, label: int | None = None,
         spur_factor: float | None = None, narrowing: float | None = None, max_trees: int | None = None,
         overwrite: bool = False) -> Any:
    """Artery tree of a vessel mask file: centrelines, segments, radii and pictures in ``out_dir`` (default
    ``<mask>_tree/``); returns a :class:`segvol.tree.outputs.TreeOutput`. ``spur_factor``, ``narrowing`` (a
    fraction) and ``max_trees`` override :class:`segvol.tree.TreeSettings` (``max_trees=0``: every component).
    See docs/tree.md."""
    from dataclasses import replace

    from segvol.tree import TreeSettings
    from segvol.tree.outputs import tree_file

    settings = TreeSettings()
    if spur_factor is not None:
        settings = replace(settings, spur_factor=float(spur_factor))
    if narrowing is not None:
        if not 0.0 < narrowing < 1.0:
            raise SegvolError(f"--narrowing {narrowing}: expected a fraction between 0 and 1, e.g. 0.4")
        settings = replace(settings, narrowing_fraction=float(narrowing))
    if max_trees is not None:
        settings = replace(settings, max_trees=int(max_trees) or None)
    return tree_file(mask, out_dir, label=label, settings=settings, overwrite=overwrite)


# ------------------------------------------------------------------------------------------------------- preprocess
__all__ += ["preprocess"]


def preprocess(*, scan: Any, out: str | Path, config: str | None = None, model: str | Path | None = None,
               models_dir: str | Path = "models", overwrite: bool = False) -> Path:
    """Write what the network sees for ``scan`` (after orientation, 1 mm resampling, intensity normalisation and
    padding) to ``out`` as float32 NIfTI on the 1 mm grid. The pipeline is ``model``'s (the config stored in a
    ``.pt``/``.onnx``, so exactly what inference does) or the preset/YAML ``config``; neither: the default model.

    ``scan``: a file, a DICOM series folder, a case folder of a multi-channel dataset, or the sequence files of one
    multi-channel scan (a list).
    """
    from segvol.data.brats import resolve_input
    from segvol.inference.preprocess import preprocess_file

    if config is not None and model is not None:
        raise SegvolError("give --config or --model, not both")
    if config is not None:
        from segvol.config import load_config
        from segvol.data.registry import get_adapter

        cfg = load_config(config)
        modalities = tuple(get_adapter(cfg.data.dataset).task_spec(cfg).modalities)
    else:
        import torch

        from segvol.inference.backends import load_model

        loaded = load_model(model or _default_model(models_dir), torch.device("cpu"))
        cfg, modalities = loaded.cfg, loaded.task.modalities
    if isinstance(scan, (list, tuple)) and len(scan) == 1:
        scan = scan[0]
    return preprocess_file(cfg, resolve_input(scan, modalities), out, overwrite=overwrite)


def caches(*, data: str | Path, clean: bool = False, remove_all: bool = False) -> tuple[list[Any], int]:
    """The preprocessing caches in ``<data>/.cache/`` (most recently used first) and the bytes removed: with
    ``clean``, every cache but the most recently used one (those of earlier settings); with ``remove_all``, all.
    Returns ``(caches left, bytes freed)``."""
    from segvol.training.caches import list_caches, remove_caches

    found = list_caches(data)
    if not (clean or remove_all):
        return found, 0
    keep = [] if remove_all else found[:1]
    return keep, remove_caches([c for c in found if c not in keep])
