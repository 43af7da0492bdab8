"""The two ways ``segvol evaluate`` finds its cases: a trained run's split (inference with its ``best.pt`` first),
or two folders of masks matched by case id."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from segvol.errors import SegvolError
from segvol.evaluation.evaluate import CaseInput, EvalResult, evaluate_cases
from segvol.io.masks import index_folder, match_folders

__all__ = ["evaluate_run", "evaluate_folders", "run_cases", "pick_split"]

log = logging.getLogger(__name__)


def pick_split(split: dict[str, list[str]], name: str | None, run_dir: Path) -> str:
    """``test`` when the run held one out, else ``val``; an explicitly asked-for empty split is an error."""
    if name is None:
        name = "test" if split.get("test") else "val"
        log.info("split: %s (%d cases)", name, len(split.get(name, [])))
    if name not in ("train", "val", "test"):
        raise SegvolError(f"--split {name!r}: expected test, val or train")
    if not split.get(name):
        hint = " (train with --set data.test_fraction=0.15 to hold out a test split)" if name == "test" else ""
        raise SegvolError(f"{run_dir / 'split.json'}: the run has no {name} cases{hint}")
    return name


def run_cases(run_dir: str | Path, split: str | None = None, data_root: str | Path | None = None
              ) -> tuple[Any, str, list[dict[str, Any]]]:
    """The run's config, the chosen split's name and its records (ids from the run's ``split.json``)."""
    from segvol.config import load_config
    from segvol.data.records import apply_split, read_split
    from segvol.data.registry import get_adapter

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise SegvolError(f"{run_dir}: not a run folder (no config.yaml); runs live under models/<run>")
    sections: dict[str, Any] = {"data": {"root": str(data_root)}} if data_root else {}
    cfg = load_config(str(run_dir / "config.yaml"), saved=True, **sections)
    stored = read_split(run_dir / "split.json")
    name = pick_split(stored, split, run_dir)
    records = get_adapter(cfg.data.dataset).find_records(cfg.data.root, cfg.data.modalities)
    chosen = apply_split(records, {name: stored[name]})[name]
    unlabelled = [r["id"] for r in chosen if not r.get("label")]
    if unlabelled:
        raise SegvolError(f"{cfg.data.root}: case(s) {', '.join(unlabelled[:5])} have no label to score against")
    return cfg, name, chosen


def _predict(model: Any, records: list[dict[str, Any]], pred_dir: Path, progress: bool) -> list[CaseInput]:
    from tqdm.auto import tqdm

    from segvol.inference.predictor import infer_file

    cases = []
    for rec in tqdm(records, desc="infer", unit="case", disable=not progress):
        target = pred_dir / f"{rec['id']}_seg.nii.gz"
        infer_file(model, rec["image"], target, overwrite=True)  # the evaluation refreshes its own predictions
        cases.append(CaseInput(str(rec["id"]), target, Path(rec["label"]), rec["image"]))
    return cases


def evaluate_run(run_dir: str | Path, *, split: str | None = None, out: str | Path | None = None,
                 device: str = "auto", data_root: str | Path | None = None, checkpoint: str = "best.pt",
                 worst: int = 3, gif: bool = True, progress: bool = True) -> EvalResult:
    """Predict the run's ``split`` cases with its checkpoint, then score them on their original grids.

    Predictions go to ``<out>/predictions/<id>_seg.nii.gz``; ``out`` defaults to ``<run>/eval`` (``eval-val``
    etc. for splits other than test).
    """
    from segvol.data.registry import get_adapter, region_schemes
    from segvol.labels import scheme_for_task
    from segvol.inference.backends import load_model
    from segvol.utils import pick_device, torch_flags

    run_dir = Path(run_dir)
    cfg, name, records = run_cases(run_dir, split, data_root)
    out_dir = Path(out) if out else run_dir / ("eval" if name == "test" else f"eval-{name}")
    model = load_model(run_dir / checkpoint, pick_device(device))
    scheme, names = scheme_for_task(model.task, region_schemes())
    log.info("evaluating %s on %d %s case(s) -> %s", run_dir / checkpoint, len(records), name, out_dir)
    defaults = get_adapter(cfg.data.dataset).evaluation_defaults()
    with torch_flags(benchmark=True):  # ROI-shaped windows, as in ``segvol infer``; the caller's flags come back
        cases = _predict(model, records, out_dir / "predictions", progress)
    meta = {"run": str(run_dir), "checkpoint": str(run_dir / checkpoint), "split": name,
            "dataset": cfg.data.dataset}
    return evaluate_cases(cases, out_dir, scheme=scheme, names=names, vessel=defaults.vessel, worst=worst, gif=gif,
                          training_log=run_dir / "metrics.csv", label_names=defaults.label_names, progress=progress,
                          meta=meta)


def evaluate_folders(pred: str | Path, ref: str | Path, *, out: str | Path | None = None,
                     images: str | Path | None = None, scheme: str = "auto", vessel: bool | None = None,
                     worst: int = 3, gif: bool = True, progress: bool = True) -> EvalResult:
    """Score every prediction in ``pred`` against the reference of the same case id in ``ref``.

    ``images`` (optional) is a folder of scans matched the same way, drawn under the overlays. ``out`` defaults
    to ``<pred>/eval``. File names are matched with every registered dataset's markers.
    """
    from segvol.data.registry import file_markers

    markers = file_markers()
    pairs = match_folders(pred, ref, markers)
    scans = index_folder(images, masks=False, markers=markers) if images else {}
    unmatched = len(index_folder(pred, markers=markers)) - len(pairs)
    if unmatched:
        log.warning("%s: %d prediction(s) without a reference in %s are not scored", pred, unmatched, ref)
    cases = [CaseInput(cid, p, r, scans.get(cid)) for cid, p, r in pairs]
    out_dir = Path(out) if out else Path(pred) / "eval"
    meta = {"pred": str(pred), "ref": str(ref)}
    return evaluate_cases(cases, out_dir, scheme=scheme, vessel=vessel, worst=worst, gif=gif, progress=progress,
                          meta=meta)
