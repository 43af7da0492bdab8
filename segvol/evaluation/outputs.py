"""Writing an evaluation's files: metrics.csv, summary.json, failures.json and the figures (layout in
:mod:`segvol.evaluation.evaluate`)."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from segvol.labels import class_mask
from segvol.evaluation.failures import analyse_errors
from segvol.io.masks import load_pair, load_scan, spacing_of
from segvol.viz.overlays import save_gif, save_overlay
from segvol.viz.plots import box_strip_plot, training_curves
from segvol.evaluation.summary import summarise, write_json, write_metrics_csv

__all__ = ["write_outputs", "rank_worst", "safe_name"]

log = logging.getLogger(__name__)


def safe_name(text: str) -> str:
    """A file-name-safe version of a case or class name."""
    return re.sub(r"[^\w.-]+", "_", str(text)).strip("._") or "case"


def rank_worst(rows: list[dict[str, Any]], n: int) -> list[str]:
    """Case ids ordered worst first: lowest mean Dice over classes, ties broken by the larger mean HD95 (a case
    with an infinite HD95, one side empty, counts as the largest)."""
    cases = list(dict.fromkeys(r["case"] for r in rows))

    def key(case: str) -> tuple[float, float]:
        mine = [r for r in rows if r["case"] == case]
        dice = float(np.mean([r["dice"] for r in mine]))
        hd = [r["hd95_mm"] for r in mine]
        worst_hd = math.inf if any(math.isinf(h) for h in hd) else float(np.mean(hd))
        return dice, -worst_hd

    return sorted(cases, key=key)[:n]


def _image_for(case: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if case.image is None:
        return None
    image = load_scan(case.image)
    if image.shape != shape:
        log.warning("%s: scan shape %s differs from the masks %s; overlays drawn without it", case.id, image.shape,
                    shape)
        return None
    return image


def _analyse_case(case: Any, rows: list[dict[str, Any]], ctx: dict[str, Any], fig_dir: Path, gif: bool
                  ) -> tuple[dict[str, Any], list[Path]]:
    """Failure analysis and overlays of one case, per class; a GIF of its whole foreground when ``gif``."""
    pred, ref, affine = load_pair(case.pred, case.ref)
    image = _image_for(case, ref.shape)
    spacing, figures, classes = spacing_of(affine), [], {}
    mine = {r["class"]: r for r in rows if r["case"] == case.id}
    for cls in ctx["class_defs"]:
        if cls.name not in mine:
            continue
        p, r = class_mask(pred, cls), class_mask(ref, cls)
        sub = ref if cls.values is None or len(cls.values) > 1 else None
        found = analyse_errors(p, r, affine, spacing, ctx["readable"].get(cls.name, cls.name), image=image,
                               vessel=ctx["vessel"], ref_labels=sub, label_names=ctx["label_names"])
        found.update(dice=mine[cls.name]["dice"], hd95_mm=mine[cls.name]["hd95_mm"])
        png = fig_dir / f"{safe_name(case.id)}_{safe_name(cls.name)}.png"
        title = f"case {case.id}, {cls.name}: Dice {mine[cls.name]['dice']:.3f}: {found['reading']}"
        figures.append(save_overlay(png, image, r, p, affine, title=title))
        found["overlay"] = png.name
        classes[cls.name] = found
    entry = {"case": case.id, "mean_dice": float(np.mean([r["dice"] for r in mine.values()])), "classes": classes}
    if gif:
        path = save_gif(fig_dir / f"{safe_name(case.id)}.gif", image, ref != 0, pred != 0, affine)
        entry["gif"] = path.name
        figures.append(path)
    return entry, figures


def write_outputs(cases: list[Any], rows: list[dict[str, Any]], out_dir: Path, ctx: dict[str, Any], *,
                  worst: int = 3, gif: bool = True, training_log: str | Path | None = None,
                  meta: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]], list[Path]]:
    """Write every output of an evaluation; returns ``(summary, worst cases, figure paths)``."""
    from tqdm.auto import tqdm

    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    write_metrics_csv(rows, out_dir / "metrics.csv")
    figures = [box_strip_plot(rows, fig_dir / "scores.png")]
    if training_log is not None and Path(training_log).is_file():
        figures.append(training_curves(training_log, fig_dir / "training_curves.png"))
    by_id = {c.id: c for c in cases}
    order = rank_worst(rows, len(by_id))
    worst_ids = order[:worst]
    analysed = []
    for i, cid in enumerate(tqdm(worst_ids, desc="failure analysis", unit="case", disable=len(worst_ids) < 2)):
        entry, figs = _analyse_case(by_id[cid], rows, ctx, fig_dir, gif=gif and i == 0)
        analysed.append(entry)
        figures += figs
    best = None
    if order and order[-1] not in worst_ids:
        best, figs = _analyse_case(by_id[order[-1]], rows, ctx, fig_dir, gif=False)
        figures += figs
    summary = {**(meta or {}), "cases": len(by_id), "scheme": ctx["scheme"], "classes": ctx["classes"],
               "cldice": ctx["vessel"], "metrics": summarise(rows),
               "worst": [{"case": e["case"], "mean_dice": e["mean_dice"],
                          "readings": {k: v["reading"] for k, v in e["classes"].items()}} for e in analysed],
               "best": {"case": best["case"], "mean_dice": best["mean_dice"]} if best else None}
    write_json(summary, out_dir / "summary.json")
    write_json({"worst": analysed, "best": best}, out_dir / "failures.json")
    log.info("evaluation written to %s (%d cases, %d figures)", out_dir, len(by_id), len(figures))
    return summary, analysed, figures
