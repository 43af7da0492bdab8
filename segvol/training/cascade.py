"""Training a cascade (``locate.enabled``; docs/cascade.md) in one run: the coarse stage, then the fine stage.

The coarse stage learns, at ``locate.spacing`` on whole scans, where the target is: the label grown by
``locate.target_dilate_mm`` (thin vessels would vanish on a 3 mm grid otherwise). The fine stage learns the label at
``preprocess.spacing`` on crops around it: the label's box grown by what inference adds to the coarse stage's box
(``locate.margin_mm`` + ``locate.target_dilate_mm``), so it trains on what it will be shown, with the hard negatives
around the target, and its cache holds crops rather than whole scans. Both stage datasets are written once into
``<data>/.cache/cascade-<hash>/`` (reused while the settings and the source files are unchanged).

A crop must look to the fine stage as it would inside the whole scan. The CT normalisation of the presets
(``window``: clip, then a z-score over the voxels it is given) would take its statistics from the crop, so a wider
or narrower box, a stray find of the coarse stage or a different margin would shift every intensity the fine stage
sees. :func:`crop_invariant` replaces it, for both stages, with the same clip and fixed constants: the mean and
standard deviation of the clipped training scans, whole (``preprocess.channels``, scheme ``ct``, as nnU-Net
normalises CT), written into the run's config and checkpoints so that inference repeats them.

The coarse stage's run is ``<run>/locate/``; its weights, config and task are then written into the run's
``best.pt`` and ``last.pt``, so one checkpoint carries the cascade.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from segvol.checkpoint import load_checkpoint, save_checkpoint
from segvol.config import Config
from segvol.data.adapter import as_list
from segvol.data.records import Record
from segvol.labels import TaskSpec
from segvol.training.trainer import FitResult, fit
from segvol.utils import atomic_path

__all__ = ["fit_cascade", "locator_config", "locator_task", "stage_records", "crop_invariant"]

log = logging.getLogger(__name__)
LOCATOR_KEYS = ("config", "network", "task", "state_dict")


def locator_config(cfg: Config) -> Config:
    """The coarse stage's config: ``cfg`` at ``locate.spacing`` and ``locate.roi_size`` with the small
    ``locate.features`` BasicUNet, Dice + CE, no cascade of its own."""
    loc = cfg.locate
    return cfg.replace(preprocess={"spacing": list(loc.spacing), "roi_size": list(loc.roi_size)},
                       model={"name": "basic_unet", "features": list(loc.features), "kwargs": {}},
                       train={"epochs": loc.epochs or cfg.train.epochs,
                              "steps_per_epoch": loc.steps_per_epoch or cfg.train.steps_per_epoch,
                              "loss": "dicece"},
                       infer={"keep_largest": 0, "fill_holes": False},
                       locate={"enabled": False})


def locator_task(spec: TaskSpec, dataset: str) -> TaskSpec:
    """Where the target is: one foreground class, whatever the fine stage's classes."""
    return TaskSpec(in_channels=spec.in_channels, out_channels=2, activation="softmax", class_names=("target",),
                    modalities=spec.modalities, dataset=dataset)


STATS_STRIDE = 2  # every 2nd voxel per axis: the constants of a whole scan to four digits, at 1/8 of the work


def crop_invariant(cfg: Config, records: list[Record]) -> Config:
    """``cfg`` with a ``window`` normalisation (clip, then the z-score of whatever voxels it is given) replaced by
    the same clip and the constants of the whole clipped training scans (``records``): a crop then looks as it does
    in its scan (see the module doc). Other normalisations are returned unchanged."""
    import nibabel as nib

    pp = cfg.preprocess
    if pp.intensity_norm != "window" or not records or pp.intensity_window is None:
        return cfg
    lo, hi = (float(v) for v in pp.intensity_window)
    channels = len(as_list(records[0]["image"]))
    sums = np.zeros((channels, 3))  # per channel: voxels, sum, sum of squares
    step = (slice(None, None, STATS_STRIDE),) * 3
    for record in records:
        for c, path in enumerate(as_list(record["image"])):
            data = np.asanyarray(cast(Any, nib.load(str(path))).dataobj)
            x = np.clip(np.asarray(data[step], dtype=np.float64), lo, hi)
            sums[c] += (x.size, x.sum(), np.square(x).sum())
    means = sums[:, 1] / sums[:, 0]
    stds = np.sqrt(np.maximum(sums[:, 2] / sums[:, 0] - means**2, 0.0))
    entries = [{"name": f"channel {c}", "scheme": "ct", "clip": [lo, hi], "mean": round(float(m), 4),
                "std": round(max(float(s), 1e-3), 4)} for c, (m, s) in enumerate(zip(means, stds))]
    log.info("cascade: intensities clipped to [%g, %g] and normalised by the training scans' constants (%s), so a "
             "crop looks as it does in its scan", lo, hi,
             "; ".join(f"mean {e['mean']:g}, std {e['std']:g}" for e in entries))
    return cfg.replace(preprocess={"intensity_norm": "channels", "intensity_window": None, "channels": entries})


def _work_dir(cfg: Config) -> Path:
    settings = {"locate": [cfg.locate.target_dilate_mm, cfg.locate.margin_mm], "version": 1}
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cfg.data.root) / ".cache" / f"cascade-{digest}"


def _signature(record: Record) -> list[Any]:
    files = [*as_list(record["image"]), str(record["label"])]
    return [[f, Path(f).stat().st_size, Path(f).stat().st_mtime_ns] for f in files]


def _save(array: np.ndarray, like: Any, path: Path) -> None:
    import nibabel as nib

    from segvol.io.nifti import write_nifti

    with atomic_path(path) as tmp:
        write_nifti(nib.Nifti1Image(array, like.affine, header=like.header), tmp)


def _grown(label: np.ndarray, spacing: np.ndarray, mm: float) -> np.ndarray:
    """``label > 0`` grown by ``mm`` (exact Euclidean distance in mm, computed in the box that can change)."""
    from scipy.ndimage import distance_transform_edt

    from segvol.utils import union_box

    mask = label > 0
    box = union_box(mask, mask, margin=0)
    if box is None or mm <= 0:
        return mask.astype(np.uint8)
    pad = [int(np.ceil(mm / s)) + 1 for s in spacing]
    big = tuple(slice(max(b.start - p, 0), min(b.stop + p, n)) for b, p, n in zip(box, pad, mask.shape))
    out = np.zeros(mask.shape, np.uint8)
    out[big] = distance_transform_edt(~mask[big], sampling=spacing) <= mm
    return out


def _prepare_case(record: Record, work: Path, cfg: Config) -> tuple[Record, Record]:
    """Write one case's coarse target (the grown label on the scan's grid) and fine crop (image channels and label
    in the box around the label); returns the coarse and the fine record."""
    import nibabel as nib

    from segvol.inference.cascade import crop_scan, located_box

    case = str(record["id"])
    target, label_crop = work / f"{case}.locate.nii.gz", work / f"{case}.label.nii.gz"
    images = as_list(record["image"])
    crops = [work / f"{case}.img{c}.nii.gz" for c in range(len(images))]
    stamp = work / f"{case}.json"
    signature = json.dumps(_signature(record))
    coarse: Record = {**record, "label": str(target)}
    fine: Record = {**record, "image": [str(p) for p in crops] if len(crops) > 1 else str(crops[0]),
                    "label": str(label_crop)}
    if stamp.is_file() and stamp.read_text() == signature:
        return coarse, fine
    label_img = cast(Any, nib.load(str(record["label"])))
    label = np.asanyarray(label_img.dataobj)
    spacing = np.linalg.norm(np.asarray(label_img.affine)[:3, :3], axis=0)
    _save(_grown(label, spacing, cfg.locate.target_dilate_mm), label_img, target)
    box = located_box(label, label_img.affine, cfg.locate.margin_mm + cfg.locate.target_dilate_mm)
    if box is None:  # no target in this case: the fine stage sees the whole scan (all negatives)
        box = tuple(slice(0, n) for n in label.shape[:3])
    part = crop_scan(label_img, box)
    _save(np.asanyarray(part.dataobj), part, label_crop)
    for source, crop in zip(images, crops):
        img = crop_scan(nib.load(source), box)
        _save(np.asanyarray(img.dataobj), img, crop)
    with atomic_path(stamp) as tmp:
        tmp.write_text(signature)
    return coarse, fine


def stage_records(cfg: Config, groups: dict[str, list[Record]], progress: bool = True
                  ) -> tuple[dict[str, list[Record]], dict[str, list[Record]]]:
    """The coarse and the fine stage's records for every split, written once into the cascade cache."""
    from tqdm.auto import tqdm

    work = _work_dir(cfg)
    work.mkdir(parents=True, exist_ok=True)
    coarse: dict[str, list[Record]] = {}
    fine: dict[str, list[Record]] = {}
    cases = sum(len(part) for part in groups.values())
    bar = tqdm(total=cases, desc="cascade data", unit="case", disable=not progress)
    for name, part in groups.items():
        pairs = []
        for record in part:
            pairs.append(_prepare_case(record, work, cfg))
            bar.update()
        coarse[name], fine[name] = [c for c, _ in pairs], [f for _, f in pairs]
    bar.close()
    log.info("cascade data: %d case(s) in %s (coarse targets and fine crops)", cases, work)
    return coarse, fine


def _embed_locator(run_dir: Path) -> None:
    """Write the coarse stage (``<run>/locate/best.pt``) into the run's ``best.pt`` and ``last.pt``."""
    locator = load_checkpoint(run_dir / "locate" / "best.pt")
    part = {k: locator[k] for k in LOCATOR_KEYS}  # type: ignore[literal-required]
    for name in ("best.pt", "last.pt"):
        path = run_dir / name
        if path.is_file():
            ckpt = dict(load_checkpoint(path))
            ckpt["locator"] = part
            save_checkpoint(path, ckpt)


def fit_cascade(cfg: Config, spec: TaskSpec, groups: dict[str, list[Record]], run_dir: Path, device: Any,
                progress: bool = True, resume: dict[str, Any] | None = None, logger: Any = None) -> FitResult:
    """Train the coarse stage into ``<run>/locate/`` (unless a resumed run finished it), then the fine stage into
    ``run_dir``, and embed the first into the second's checkpoints."""
    coarse_groups, fine_groups = stage_records(cfg, groups, progress)
    done = run_dir / "locate" / "last.pt"
    if resume is None or not (done.is_file() and load_checkpoint(done).get("finished")):
        coarse_cfg = locator_config(cfg)
        log.info("cascade: coarse stage at %s mm -> %s", "x".join(f"{s:g}" for s in coarse_cfg.preprocess.spacing),
                 run_dir / "locate")
        (run_dir / "locate").mkdir(parents=True, exist_ok=True)
        fit(coarse_cfg, locator_task(spec, cfg.data.dataset), coarse_groups, run_dir / "locate", device,
            progress=progress)
    log.info("cascade: fine stage at %s mm on crops -> %s",
             "x".join(f"{s:g}" for s in cfg.preprocess.spacing), run_dir)
    result = fit(cfg, replace(spec, dataset=spec.dataset or cfg.data.dataset), fine_groups, run_dir, device,
                 progress=progress, resume=resume, logger=logger)
    _embed_locator(run_dir)
    return result
