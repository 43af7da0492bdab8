"""segvol's Python API: one keyword-only, typed function per command. The CLI is a thin wrapper over these; each
function hands the work to the stage that owns it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segvol.config import Config
from segvol.errors import SegvolError

if TYPE_CHECKING:  # torch-importing modules stay lazy: `segvol --help` must not import torch
    from segvol.data.adapter import DatasetAdapter
    from segvol.data.importers import ImportReport
    from segvol.evaluation.evaluate import EvalResult
    from segvol.inference.export import ExportResult
    from segvol.inference.predictor import Prediction
    from segvol.io.dicom_series import DicomSeries
    from segvol.labels import TaskSpec
    from segvol.mesh import Mesh
    from segvol.plan import Plan
    from segvol.training.caches import CacheInfo
    from segvol.training.trainer import FitResult
    from segvol.tree.outputs import TreeOutput

__all__ = ["synth", "plan", "train", "export_onnx", "infer", "default_output", "import_data", "caches", "evaluate",
           "report", "mesh", "tree", "preprocess", "resolve_records", "list_series"]

log = logging.getLogger(__name__)


def synth(*, dataset: str, out: str | Path, cases: int = 8, size: str = "small", seed: int = 0,
          overwrite: bool = False, progress: bool = True, dicom: bool = False) -> list[Path]:
    """Write phantom cases of ``dataset`` in its real layout; with ``dicom`` (CT only) each scan also as a DICOM
    series folder ``<out>/dicom/<case>/``."""
    from segvol.data.synth import synth as write

    return write(dataset, out, cases=cases, size=size, seed=seed, overwrite=overwrite, progress=progress, dicom=dicom)


def plan(*, dataset: str, data: str | Path, device: str = "auto", memory_gb: float | None = None,
         out_yaml: str | Path | None = None, out_json: str | Path | None = None, base: str | None = None,
         overwrite: bool = False, progress: bool = True, cache: bool = True) -> Plan:
    """Fingerprint the dataset in ``data`` and plan its spacing, cropping, normalisation, patch and network
    (docs/plan.md); write the plan as a config (``out_yaml``, ``base:`` + the planned sections) and as JSON when
    asked. ``memory_gb`` is the budget (default: ``device``'s memory); ``base`` the preset under the plan."""
    from segvol.plan import run_plan
    from segvol.utils import check_writable_target

    for target in (out_yaml, out_json):
        if target is not None:
            check_writable_target(target, overwrite)
    return run_plan(dataset, data, device=device, memory_gb=memory_gb, out_yaml=out_yaml, out_json=out_json,
                    base=base, progress=progress, cache=cache)


def resolve_records(cfg: Config) -> tuple[DatasetAdapter, TaskSpec, dict[str, list[dict]], dict[str, list[str]]]:
    """Adapter, task spec, records grouped by split, and the split itself, for ``cfg.data``
    (:func:`segvol.training.run.resolve_records`)."""
    from segvol.training.run import resolve_records as resolve

    return resolve(cfg)


def train(*, cfg: Config | None = None, models_dir: str | Path = "models", name: str | None = None,
          device: str | None = None, progress: bool = True, resume: str | Path | None = None,
          epochs: int | None = None) -> FitResult:
    """Train on ``cfg.data`` and write a run folder (config, split, metrics.csv, best.pt, last.pt).

    With ``resume=<run folder>``, continue that run from its ``last.pt`` (same config and split; ``epochs`` may
    extend it). A finished run is reported, not trained further.
    """
    from segvol.training.run import resume_run, train_run

    if resume is not None:
        return resume_run(resume, device=device, progress=progress, epochs=epochs)
    if cfg is None:
        raise SegvolError("train needs a config (or resume=<run folder>)")
    return train_run(cfg, models_dir=models_dir, name=name, device=device, progress=progress)


def export_onnx(*, checkpoint: str | Path | None = None, out: str | Path = "models/model.onnx",
                models_dir: str | Path = "models", overwrite: bool = False) -> ExportResult:
    """Export a checkpoint (default: the newest run's ``best.pt``) to ONNX and check it under ONNX Runtime."""
    from segvol.checkpoint import load_checkpoint, newest_run
    from segvol.inference.export import export_onnx_file, locator_path
    from segvol.utils import check_writable_target

    ckpt_path = Path(checkpoint) if checkpoint else newest_run(models_dir)
    check_writable_target(out, overwrite)
    ckpt = load_checkpoint(ckpt_path)
    if "locator" in ckpt:  # a cascade: its coarse stage goes beside ``out``
        check_writable_target(locator_path(out), overwrite)
    log.info("exporting %s -> %s", ckpt_path, out)
    return export_onnx_file(dict(ckpt), out)


def default_output(image: Any, out_dir: str | Path | None = None) -> Path | None:
    """Where ``segvol infer`` writes the mask of ``image`` (:func:`segvol.inference.batch.default_output`)."""
    from segvol.inference.batch import default_output as where

    return where(image, out_dir)


def infer(*, inputs: list[Any], model: str | Path | None = None, out: str | Path | None = None,
          out_dir: str | Path | None = None, device: str = "auto", sw_batch_size: int | None = None,
          overlap: float | str | None = None, overwrite: bool = False, models_dir: str | Path = "models",
          progress: bool = False, tta: bool = False, amp: bool = False,
          outputs: str | Sequence[str] | None = None, series: str | None = None,
          store: bool = False, locate: bool = True) -> list[Prediction]:
    """Segment each input scan and write its outputs on the scan's own grid; one Prediction per input.

    Inputs, outputs and their options are those of :func:`segvol.inference.batch.infer_batch` (files, globs,
    folders, DICOM series, case folders, DICOMweb URLs, scans in memory). The model defaults to
    ``<models_dir>/model.onnx``, else the newest run's ``best.pt``.
    """
    from segvol.checkpoint import default_model
    from segvol.inference.batch import infer_batch

    if not inputs:
        raise SegvolError("no input scans given")
    return infer_batch(list(inputs), model or default_model(models_dir), out=out, out_dir=out_dir, device=device,
                       sw_batch_size=sw_batch_size, overlap=overlap, overwrite=overwrite, progress=progress, tta=tta,
                       amp=amp, outputs=outputs, series=series, store=store, locate=locate)


def list_series(*, inputs: Sequence[str | Path]) -> list[tuple[Path, list[DicomSeries]]]:
    """The series of each DICOM folder in ``inputs``, largest first (headers only): what ``infer``'s ``series``
    chooses from (docs/dicom.md)."""
    from segvol.io.dicom import is_series_folder
    from segvol.io.dicom_series import find_series

    if not inputs:
        raise SegvolError("--list-series: name the DICOM folder(s) to list")
    found = []
    for item in inputs:
        if not is_series_folder(item):
            raise SegvolError(f"{item}: --list-series lists DICOM folders; this is not one")
        found.append((Path(item), find_series(item)))
    return found


def import_data(*, fmt: str, src: str | Path, out: str | Path, overwrite: bool = False,
                **options: Any) -> ImportReport:
    """Convert ``src`` (``brats-h5``, ``lgg-tiff`` or ``msd``) into BraTS-layout case folders under ``out``.

    Returns an :class:`segvol.data.importers.ImportReport` (volumes written, volumes skipped with reasons).
    """
    from segvol.data.importers import run_import

    return run_import(fmt, src, out, overwrite=overwrite, **options)


def evaluate(*, run: str | Path | None = None, split: str | None = None, data: str | Path | None = None,
             pred: str | Path | None = None, ref: str | Path | None = None, images: str | Path | None = None,
             labels: str = "auto", cldice: bool | None = None, out: str | Path | None = None, worst: int = 3,
             gif: bool = True, device: str = "auto", progress: bool = True) -> EvalResult:
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
         overwrite: bool = False) -> list[tuple[Path, Mesh]]:
    """Surface mesh(es) of a mask in scanner mm, STL or PLY by ``out``'s suffix; one per label or region."""
    from segvol.mesh import mesh_file

    return mesh_file(seg, out, smooth=smooth, label=label, labels=labels, overwrite=overwrite)


def tree(*, mask: str | Path, out_dir: str | Path | None = None, label: int | None = None,
         spur_factor: float | None = None, narrowing: float | None = None, max_trees: int | None = None,
         overwrite: bool = False, prob: str | Path | None = None, image: str | Path | None = None) -> TreeOutput:
    """Artery tree of a vessel mask file: centrelines, cross-section radii, graded narrowings (CAD-RADS bands),
    curved planar reformations and pictures in ``out_dir`` (default ``<mask>_tree/``); returns a
    :class:`segvol.tree.outputs.TreeOutput`. ``spur_factor``, ``narrowing`` (the least diameter reduction flagged,
    a fraction) and ``max_trees`` override :class:`segvol.tree.TreeSettings` (``max_trees=0``: every component).
    ``prob``: a probability map on the mask's grid (``segvol infer --output prob``), cut instead of the mask for
    sub-voxel sections; ``image``: the scan, shown in the reformations. See docs/tree.md."""
    from dataclasses import replace

    from segvol.io.grid import grid_mismatch
    from segvol.io.nifti import check_volume
    from segvol.tree import TreeSettings
    from segvol.tree.outputs import tree_file

    reference = check_volume(mask, load_data=False)
    for what, path in (("--prob", prob), ("--image", image)):
        if path is not None:
            reason = grid_mismatch(reference, check_volume(path, load_data=False))
            if reason:
                raise SegvolError(f"{path}: {what} must lie on the mask's grid ({reason})")

    settings = TreeSettings()
    if spur_factor is not None:
        settings = replace(settings, spur_factor=float(spur_factor))
    if narrowing is not None:
        if not 0.0 < narrowing < 1.0:
            raise SegvolError(f"--narrowing {narrowing}: expected a fraction between 0 and 1, e.g. 0.45")
        settings = replace(settings, narrowing_fraction=float(narrowing))
    if max_trees is not None:
        settings = replace(settings, max_trees=int(max_trees) or None)
    return tree_file(mask, out_dir, label=label, settings=settings, overwrite=overwrite, prob=prob, image=image)


def preprocess(*, scan: Any, out: str | Path, config: str | None = None, model: str | Path | None = None,
               models_dir: str | Path = "models", overwrite: bool = False) -> Path:
    """Write what the network sees for ``scan`` (after orientation, 1 mm resampling, intensity normalisation and
    padding) to ``out`` as float32 NIfTI on the 1 mm grid. The pipeline is ``model``'s (the config stored in a
    ``.pt``/``.onnx``, so exactly what inference does) or the preset/YAML ``config``; neither: the default model.

    ``scan``: a file, a DICOM series folder, a case folder of a multi-channel dataset, or the sequence files of one
    multi-channel scan (a list).
    """
    from segvol.inference.preprocess import preprocess_scan

    if config is not None and model is not None:
        raise SegvolError("give --config or --model, not both")
    return preprocess_scan(scan, out, config=config, model=model, models_dir=models_dir, overwrite=overwrite)


def caches(*, data: str | Path, clean: bool = False, remove_all: bool = False) -> tuple[list[CacheInfo], int]:
    """The preprocessing caches in ``<data>/.cache/`` (most recently used first) and the bytes removed: with
    ``clean``, every cache but the most recently used one (those of earlier settings); with ``remove_all``, all.
    Returns ``(caches left, bytes freed)``."""
    from segvol.training.caches import list_caches, remove_caches

    found = list_caches(data)
    if not (clean or remove_all):
        return found, 0
    keep = [] if remove_all else found[:1]
    return keep, remove_caches([c for c in found if c not in keep])
