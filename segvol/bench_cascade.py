"""``segvol bench --only cascade``: what locating costs and saves, on one full-size scan, in one run.

Full-size networks (speed does not depend on their weights: they are untrained) run under ONNX Runtime on the CPU,
as ``segvol infer`` runs them there: the 1 mm recipe (``imagecas``) over the whole scan and with locating, the fine
cascade (``imagecas-fine``, 0.7 mm) and the same fine stage over the whole scan (``--no-locate``); the plain MONAI
recipe (the 1 mm network, MONAI's reader, ``Invertd``) on the same scan for reference. The coarse stage is a trained
one (the ``locator`` of a cascade checkpoint, ``--locator``): where it looks decides how much the fine stage does.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, cast

import torch

from segvol.config import Config, config_to_dict, load_config
from segvol.errors import SegvolError

__all__ = ["cascade", "cascade_table", "cascade_windows", "windows_table"]

log = logging.getLogger(__name__)


def _model(cfg: Config, spec: Any, workdir: Path, name: str, locator: dict[str, Any] | None) -> tuple[Path, Path]:
    """An untrained checkpoint of ``cfg``'s network (with ``locator`` inside for a cascade) and its ONNX export."""
    from segvol import api
    from segvol.checkpoint import save_checkpoint
    from segvol.networks import build_network, network_args

    args = network_args(cfg, spec.in_channels, spec.out_channels)
    torch.manual_seed(0)
    payload: dict[str, Any] = {"config": config_to_dict(cfg), "network": args, "task": spec.as_dict(),
                               "state_dict": build_network(args).state_dict()}
    if locator is not None:
        payload["locator"] = locator
    ckpt = workdir / f"{name}.pt"
    save_checkpoint(ckpt, payload)
    return ckpt, api.export_onnx(checkpoint=ckpt, out=workdir / f"{name}.onnx").path


def _infer(model: Path, image: Path, out: Path, locate: bool = True) -> tuple[float, Any]:
    from segvol import api

    start = time.perf_counter()
    (pred,) = api.infer(inputs=[image], model=model, out=out, device="cpu", overwrite=True, locate=locate)
    return time.perf_counter() - start, pred


def cascade(image_path: Path, locator_ckpt: Path, workdir: Path, plain_monai_infer: Any, fine: Config | None = None
            ) -> dict[str, Any]:
    """The timings and ratios of the module doc, for the scan ``image_path`` (``plain_monai_infer``: the plain
    recipe of :mod:`segvol.bench`; ``fine``: the cascade's config, default ``imagecas-fine``)."""
    from segvol.checkpoint import load_checkpoint
    from segvol.data.registry import get_adapter
    from segvol.inference.backends import load_model

    ckpt = load_checkpoint(locator_ckpt)
    if "locator" not in ckpt:
        raise SegvolError(f"{locator_ckpt}: not a cascade checkpoint (no coarse stage inside); train one with "
                          f"'segvol train --config tiny-fine'")
    locator = dict(ckpt["locator"])
    one_mm, fine = load_config("imagecas"), fine if fine is not None else load_config("imagecas-fine")
    located_1mm = one_mm.replace(locate={**config_to_dict(fine)["locate"], "enabled": True})
    spec = get_adapter("imagecas").task_spec(one_mm)
    _, onnx_1mm = _model(one_mm, spec, workdir, "recipe-1mm", None)
    _, onnx_1mm_located = _model(located_1mm, spec, workdir, "recipe-1mm-located", locator)
    _, onnx_fine = _model(fine, spec, workdir, "cascade-fine", locator)
    out: dict[str, Any] = {"locator": str(locator_ckpt),
                          "locator_features": locator["network"].get("kwargs", {}).get("features"),
                          "fine_spacing": list(fine.preprocess.spacing)}
    runs = {"recipe_1mm": (onnx_1mm, True), "recipe_1mm_located": (onnx_1mm_located, True),
            "cascade_fine": (onnx_fine, True), "cascade_fine_no_locate": (onnx_fine, False)}
    for name, (model, locate) in runs.items():
        log.info("bench cascade: %s", name)
        seconds, pred = _infer(model, image_path, workdir / f"{name}_seg.nii.gz", locate)
        out[f"{name}_s"] = seconds
        out[f"{name}_stages"] = {k: round(v, 2) for k, v in pred.timings.items()}
        if pred.located is not None:
            out[f"{name}_box"] = [[b.start, b.stop] for b in pred.located]
    log.info("bench cascade: plain MONAI recipe")
    ckpt_1mm = workdir / "recipe-1mm.pt"
    out["plain_monai_s"] = plain_monai_infer(load_model(ckpt_1mm, torch.device("cpu")), image_path, workdir / "plain")
    out["fine_cascade_vs_recipe_1mm"] = out["recipe_1mm_s"] / out["cascade_fine_s"]
    out["no_locate_vs_fine_cascade"] = out["cascade_fine_no_locate_s"] / out["cascade_fine_s"]
    out["recipe_1mm_located_vs_plain_monai"] = out["plain_monai_s"] / out["recipe_1mm_located_s"]
    return out


def cascade_table(results: dict[str, Any]) -> str:
    """Seconds per run and the three ratios the cascade is held to."""
    fine_mm = min(results.get("fine_spacing", [0.5]))
    rows = [("plain MONAI recipe (1 mm)", "plain_monai_s"), ("segvol 1 mm, whole scan", "recipe_1mm_s"),
            ("segvol 1 mm, located", "recipe_1mm_located_s"), (f"fine cascade ({fine_mm:g} mm)", "cascade_fine_s"),
            ("fine stage, whole scan (--no-locate)", "cascade_fine_no_locate_s")]
    lines = [f"{'run (ONNX Runtime, CPU)':<40}{'seconds':>10}"]
    lines += [f"{name:<40}{results[key]:>10.1f}" for name, key in rows if key in results]
    lines.append(f"1 mm recipe / fine cascade {results['fine_cascade_vs_recipe_1mm']:.2f}x (>= 1); --no-locate / "
                 f"fine cascade {results['no_locate_vs_fine_cascade']:.2f}x (>= 2); plain MONAI / 1 mm located "
                 f"{results['recipe_1mm_located_vs_plain_monai']:.2f}x (>= 5)")
    return "\n".join(lines)


def _windows(extent_mm: Any, spacing: float, cfg: Config) -> int:
    """Sliding windows (``cfg``'s patch, ``infer.overlap: auto``) over a box of ``extent_mm`` resampled to
    ``spacing`` mm and padded to at least one patch, as inference places them."""
    from segvol.inference.core import window_count

    roi = cfg.preprocess.roi_size
    sizes = [max(int(round(float(e) / spacing)), int(r)) for e, r in zip(extent_mm, roi)]
    return math.prod(window_count(n, int(r), cfg.infer.min_overlap) for n, r in zip(sizes, roi))


def cascade_windows(records: list[dict[str, Any]], locator_ckpt: Path, spacings: tuple[float, ...] = (0.5, 0.7)
                    ) -> dict[str, Any]:
    """What the fine cascade costs against the whole scan at 1 mm, counted in full-size windows (the same network
    runs both, so a window costs the same; docs/benchmarks.md), on each scan of ``records``: the whole scan at
    1 mm, the box the coarse stage of ``locator_ckpt`` finds (``imagecas-fine``'s margin and ``keep_largest``) and
    the box a perfect find would give (the label grown by ``target_dilate_mm + margin_mm``) at each fine spacing,
    and the share of the label inside the found box."""
    import nibabel as nib
    import numpy as np

    from segvol.inference.backends import load_model
    from segvol.inference.cascade import located_box, scan_in_memory
    from segvol.inference.predictor import coarse_stage, predict_scan

    fine = load_config("imagecas-fine")
    one_mm = load_config("imagecas")
    model = load_model(locator_ckpt, torch.device("cpu"))
    if model.locator is None:
        raise SegvolError(f"{locator_ckpt}: not a cascade checkpoint (no coarse stage inside)")
    locate = fine.locate
    locator = coarse_stage(model.locator, locate.keep_largest)
    rows = []
    for record in records:
        scan = scan_in_memory(Path(record["image"]))
        spacing = np.linalg.norm(np.asarray(scan.affine)[:3, :3], axis=0)
        label = np.asanyarray(cast(Any, nib.load(str(record["label"]))).dataobj) > 0
        found, _ = predict_scan(locator, scan, None, None, locate=False)
        boxes = {"found": located_box(found.labels, scan.affine, locate.margin_mm),
                 "perfect": located_box(label, scan.affine, locate.margin_mm + locate.target_dilate_mm)}
        whole_mm = [n * s for n, s in zip(scan.shape[:3], spacing)]
        row: dict[str, Any] = {"case": str(record["id"]), "scan_mm": [round(x) for x in whole_mm],
                               "whole_1mm": _windows(whole_mm, 1.0, one_mm)}
        for name, box in boxes.items():
            extent = [(b.stop - b.start) * s for b, s in zip(box or (), spacing)] if box is not None else whole_mm
            row[f"{name}_box_mm"] = [round(x) for x in extent]
            for fine_mm in spacings:
                row[f"{name}_{fine_mm:g}mm"] = _windows(extent, fine_mm, fine)
        inside = np.zeros(label.shape, bool)
        if boxes["found"] is not None:
            inside[boxes["found"]] = True
        row["label_in_found_box"] = float((label & inside).sum() / max(int(label.sum()), 1))
        log.info("bench cascade-windows: %s", row)
        rows.append(row)
    totals = {key: sum(r[key] for r in rows) for key in rows[0] if isinstance(rows[0][key], int)}
    return {"cascade_windows": rows, "cascade_windows_total": totals}


def windows_table(results: dict[str, Any]) -> str:
    """Per scan: full-size windows of the whole scan at 1 mm and of the fine boxes, and the label kept."""
    rows, totals = results["cascade_windows"], results["cascade_windows_total"]
    keys = [k for k in totals if k != "whole_1mm"]
    head = f"{'case':<8}{'scan (mm)':<18}{'whole 1 mm':>11}" + "".join(f"{k.replace('_', ' '):>17}" for k in keys)
    lines = [head + f"{'label in box':>14}"]
    for r in rows:
        lines.append(f"{r['case']:<8}{'x'.join(map(str, r['scan_mm'])):<18}{r['whole_1mm']:>11}"
                     + "".join(f"{r[k]:>17}" for k in keys) + f"{r['label_in_found_box']:>14.4f}")
    lines.append(f"{'total':<26}{totals['whole_1mm']:>11}" + "".join(f"{totals[k]:>17}" for k in keys))
    return "\n".join(lines)


def _truth(case_seed: int, size: str = "full") -> list[Any]:
    """The known centrelines of the ImageCAS phantom of ``case_seed`` (generated again)."""
    import numpy as np

    from segvol.data.phantoms.imagecas import make_imagecas_phantom, sample_geometry

    found: list[Any] = []
    make_imagecas_phantom(sample_geometry(size, np.random.default_rng(case_seed)), case_seed, centrelines=found)
    return found


def _against_truth(mask_path: Path, lines: list[Any]) -> dict[str, float]:
    """Share of the true centreline inside the mask, and ``segvol tree``'s radii against the true radii where its
    centreline runs within 1 mm of the true one (relative error, signed and absolute, clear of junctions)."""
    import nibabel as nib
    import numpy as np
    from scipy.spatial import cKDTree

    from segvol.tree import analyse_mask

    img = cast(Any, nib.load(str(mask_path)))
    mask = np.asanyarray(img.dataobj) > 0
    points = np.concatenate([c.points_mm for c in lines])
    radii = np.concatenate([c.radii_mm for c in lines])
    vox = np.rint(nib.affines.apply_affine(np.linalg.inv(img.affine), points)).astype(int)
    inside = np.all((vox >= 0) & (vox < mask.shape), axis=1)
    covered = np.zeros(len(points), bool)
    covered[inside] = mask[tuple(vox[inside].T)]
    out = {"truth_centreline_covered": float(covered.mean())}
    segments = [s for _, s in analyse_mask(mask, img.affine).segments] if mask.any() else []
    keep = [s.valid if s.valid.size == len(s.radii_mm) else np.ones(len(s.radii_mm), bool) for s in segments]
    measured = np.concatenate([s.points_mm[k] for s, k in zip(segments, keep)]) if segments else np.zeros((0, 3))
    measured_r = np.concatenate([s.radii_mm[k] for s, k in zip(segments, keep)]) if segments else np.zeros(0)
    if len(measured):
        dist, nearest = cKDTree(measured).query(points, distance_upper_bound=1.0)
        hit = np.isfinite(dist)
        error = (measured_r[nearest[hit]] - radii[hit]) / radii[hit]
        out.update(radius_matched=float(hit.mean()), radius_error_signed=float(error.mean()),
                   radius_error_abs=float(np.abs(error).mean()))
    return out


def quality(train_root: Path, workdir: Path, test_cases: int = 2, seed: int = 1, fine: Config | None = None
            ) -> dict[str, Any]:
    """The fine cascade (``fine``, default ``tiny-fine``) against the 1 mm recipe (``tiny``) trained for the same
    minutes on the phantoms in ``train_root``, judged on ``test_cases`` unseen full-size phantoms (seed ``seed``):
    Dice, clDice, centreline coverage and branches missed (``segvol evaluate``), the share of the true centreline
    inside the mask, and ``segvol tree``'s radii against the phantoms' true radii (the reference label measured the
    same way is the ceiling)."""
    from segvol import api

    test = workdir / "unseen"
    api.synth(dataset="imagecas", out=test, cases=test_cases, size="full", seed=seed, progress=False)
    out: dict[str, Any] = {}
    start = time.perf_counter()
    fine = fine if fine is not None else load_config("tiny-fine")
    out["fine_spacing"] = list(fine.preprocess.spacing)
    api.train(cfg=fine.replace(data={"root": str(train_root)}), models_dir=workdir / "runs",
              name="fine", device="cpu", progress=False)
    minutes = (time.perf_counter() - start) / 60.0
    out["train_minutes_fine_cascade"] = minutes
    start = time.perf_counter()
    api.train(cfg=load_config("tiny", ["train.epochs=10000", f"train.max_minutes={minutes:.3f}"]).replace(
        data={"root": str(train_root)}), models_dir=workdir / "runs", name="recipe", device="cpu", progress=False)
    out["train_minutes_recipe_1mm"] = (time.perf_counter() - start) / 60.0
    scans = sorted(test.glob("*.img.nii.gz"))
    truths = {scan: _truth(seed * 100_003 + int(scan.name.split(".")[0])) for scan in scans}
    masks = {"label": {scan: test / scan.name.replace(".img.", ".label.") for scan in scans}}
    for name in ("fine", "recipe"):
        preds = workdir / f"pred-{name}"
        api.infer(inputs=scans, model=workdir / "runs" / name / "best.pt", out_dir=preds, device="cpu")
        summary = api.evaluate(pred=preds, ref=test, out=workdir / f"eval-{name}", gif=False, progress=False).summary
        for metric in ("dice", "cldice", "cl_cover_ref", "branches_missed"):
            out[f"{name}_{metric}"] = summary["metrics"]["foreground"][metric]["mean"]
        masks[name] = {scan: preds / scan.name.replace(".nii.gz", "_seg.nii.gz") for scan in scans}
    for name, found in masks.items():
        rows = [_against_truth(found[scan], truths[scan]) for scan in scans]
        for key in rows[0]:
            out[f"{name}_{key}"] = float(sum(r.get(key, float("nan")) for r in rows) / len(rows))
    return out
