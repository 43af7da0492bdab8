"""Matplotlib (Agg) figures: box-and-strip plots of scores per class, and training curves from ``metrics.csv``."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segvol.errors import SegvolError
from segvol.utils import atomic_path

__all__ = ["pyplot", "save_figure", "fewer_ticks", "make_ahead", "made_ahead", "ready_ticks", "box_strip_plot",
           "training_curves", "read_training_log"]


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed); imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_AHEAD: dict[str, list[Any]] = {}  # figures made ahead, by kind (in a picture process, before its jobs are known)


def make_ahead(kind: str, make: Callable[[], Any], count: int = 1) -> None:
    """Make ``count`` figures of ``kind`` now (``make()``) for :func:`made_ahead` to hand out later: a picture
    process started before its pictures' data are known builds their figures, axes and ticks meanwhile."""
    _AHEAD.setdefault(kind, []).extend(make() for _ in range(count))


def made_ahead(kind: str, make: Callable[[], Any]) -> Any:
    """A figure of ``kind`` made ahead (:func:`make_ahead`), else ``make()`` now."""
    stock = _AHEAD.get(kind)
    return stock.pop() if stock else make()


def ready_ticks(axes: Any, count: int = 8) -> None:
    """Create ``count`` major ticks on both axes of each of ``axes`` now (a tick is three lines and two texts, a
    millisecond or two to make; a draw makes those it lacks, reuses these and leaves the rest unused). Call it
    after the axes' tick settings (``tick_params``), which later ticks copy from the first."""
    for ax in np.ravel(axes):
        ax.xaxis.get_major_ticks(count)
        ax.yaxis.get_major_ticks(count)


def fewer_ticks(axes: Any, bins: int = 5, axis: str = "x") -> None:
    """At most ``bins`` intervals between the numbered ticks along ``axis`` ("x", "y" or "both") of each of
    ``axes`` (matplotlib fills a wide axis with up to ten; each tick is a line and a text to lay out and draw, a good
    part of a figure's time). Leave short axes alone: there ``bins`` would add ticks."""
    for ax in np.ravel(axes):
        ax.locator_params(axis=axis, nbins=bins)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG atomically (nothing half-written on failure), close it, and return ``path``. The
    fastest zlib level: a third less time to encode than the default, files a few per cent larger."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, pil_kwargs={"compress_level": 1})
    pyplot().close(fig)
    return Path(path)


def box_strip_plot(rows: Sequence[dict[str, Any]], path: str | Path, metrics: Sequence[str] = ("dice", "iou"),
                   seed: int = 0) -> Path:
    """One panel per metric: a box per class with every case drawn as a jittered point (non-finite values are
    left out and counted in the axis label)."""
    plt = pyplot()
    classes = list(dict.fromkeys(r["class"] for r in rows))
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        data = [np.array([float(r[metric]) for r in rows if r["class"] == c], float) for c in classes]
        finite = [d[np.isfinite(d)] for d in data]
        ax.boxplot(finite, showfliers=False, widths=0.5)
        ax.set_xticks(range(1, len(classes) + 1), classes)
        for i, values in enumerate(finite, start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, values.size), values, s=14, alpha=0.7, color="tab:blue", zorder=3)
        dropped = sum(int((~np.isfinite(d)).sum()) for d in data)
        ax.set_ylabel(metric + (f" ({dropped} non-finite left out)" if dropped else ""))
        ax.set_ylim(-0.02, 1.02) if metric in ("dice", "iou", "cldice", "precision", "sensitivity") else None
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"{metric} per class (n={max((len(d) for d in data), default=0)} cases)")
    fig.tight_layout()
    return save_figure(fig, path)


def read_training_log(path: str | Path) -> dict[str, list[float]]:
    """Columns of a run's ``metrics.csv`` as float lists (empty cells are NaN)."""
    path = Path(path)
    if not path.is_file():
        raise SegvolError(f"{path}: no training log (metrics.csv) in this run folder")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise SegvolError(f"{path}: training log has no epochs yet")
    cols: dict[str, list[float]] = {}
    for key in rows[0]:
        try:
            cols[key] = [float(r[key]) if r[key] not in ("", None) else math.nan for r in rows]
        except ValueError:
            continue
    return cols


def training_curves(metrics_csv: str | Path, path: str | Path) -> Path:
    """Loss, validation Dice (mean and per class) and learning rate per epoch, from a run's ``metrics.csv``."""
    plt = pyplot()
    cols = read_training_log(metrics_csv)
    epochs = cols.get("epoch") or list(range(1, len(next(iter(cols.values()))) + 1))
    fig, (ax_loss, ax_dice, ax_lr) = plt.subplots(1, 3, figsize=(13, 3.8))
    ax_loss.plot(epochs, cols.get("loss", []), marker=".", color="tab:blue")
    ax_loss.set_title("training loss")
    for key in ["val_dice", *[k for k in cols if k.startswith("dice_")]]:
        values = np.array(cols.get(key, []), float)
        keep = np.isfinite(values)
        if keep.any():
            ax_dice.plot(np.array(epochs)[keep], values[keep], marker="o", lw=2 if key == "val_dice" else 1,
                         label=key)
    ax_dice.set_title("validation Dice")
    ax_dice.set_ylim(-0.02, 1.02)
    if ax_dice.lines:
        ax_dice.legend(fontsize=8)
    lr = np.array(cols.get("lr", []), float)
    ax_lr.plot(epochs, lr, marker=".", color="tab:green")
    if lr.size and np.all(lr > 0) and lr.max() / lr.min() > 10:
        ax_lr.set_yscale("log")
    ax_lr.set_title("learning rate")
    for ax in (ax_loss, ax_dice, ax_lr):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
