"""``segvol report``: one Markdown and one HTML page per run with training curves, the metrics table and a gallery.

The page is built from a list of blocks rendered twice: Markdown with images linked by paths relative to the run
folder, and one HTML file with the images embedded (``data:`` URIs), so ``report.html`` can be mailed or archived on
its own.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any

from segvol.errors import SegvolError
from segvol.utils import atomic_path

__all__ = ["write_report", "render_markdown", "render_html"]

Block = tuple  # ("h", level, text) | ("p", text) | ("img", path, alt) | ("table", header, rows)
TABLE_METRICS = ("dice", "iou", "hd95_mm", "asd_mm", "precision", "sensitivity", "vol_diff_pct", "cldice")
CENTRELINE_TABLE = ("cldice", "cl_cover_ref", "cl_cover_pred", "branches_detected", "branches_missed",
                    "tree_length_err_pct")  # vessel runs: a second table, beside clDice


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, str) and v in ("nan", "")):
        return "–"
    if isinstance(v, str):
        return v
    return "–" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.{digits}f}")


def _summary_table(summary: dict[str, Any], names: tuple[str, ...] = TABLE_METRICS) -> Block:
    header = ["class", *names]
    rows = []
    for cls, metrics in summary["metrics"].items():
        cells = [cls]
        for m in names:
            s = metrics.get(m)
            if not s or s["mean"] is None:
                cells.append("–")
                continue
            extra = f" ({s['n'] - s['n_finite']} n/a)" if s["n_finite"] < s["n"] else ""
            cells.append(f"{_num(s['mean'])} ± {_num(s['std'])}; median {_num(s['median'])} "
                         f"[IQR {_num(s['iqr'])}]{extra}")
        rows.append(cells)
    return ("table", header, rows)


def _case_table(rows: list[dict[str, Any]], limit: int = 200) -> Block:
    header = ["case", "class", *TABLE_METRICS, "ref_components", "pred_components"]
    body = [[r["case"], r["class"], *[_num(r[m]) for m in header[2:-2]], _num(r["ref_components"], 0),
             _num(r["pred_components"], 0)] for r in rows[:limit]]
    return ("table", header, body)


def _training_blocks(run_dir: Path) -> list[Block]:
    from segvol.viz.plots import read_training_log, training_curves

    log_path = run_dir / "metrics.csv"
    if not log_path.is_file():
        return [("p", "No training log (metrics.csv) in this run folder.")]
    training_curves(log_path, run_dir / "figures" / "training_curves.png")
    cols = read_training_log(log_path)
    vals = [(v, e) for v, e in zip(cols.get("val_dice", []), cols.get("epoch", [])) if not math.isnan(v)]
    best = max(vals) if vals else None
    text = f"{len(cols.get('epoch', []))} epoch(s); final loss {_num(cols['loss'][-1], 4)}"
    text += f"; best validation Dice {best[0]:.4f} at epoch {int(best[1])}." if best else "; never validated."
    return [("h", 2, "Training"), ("p", text), ("img", "figures/training_curves.png", "training curves")]


def _failure_blocks(failures: dict[str, Any], fig_rel: str) -> list[Block]:
    blocks: list[Block] = [("h", 2, "Worst cases")]
    for entry in failures.get("worst", []):
        blocks.append(("h", 3, f"Case {entry['case']} (mean Dice {entry['mean_dice']:.3f})"))
        for cls, found in entry["classes"].items():
            blocks.append(("p", f"**{cls}**: {found['reading']}. FP {found['fp_ml']:.3f} mL, FN "
                                f"{found['fn_ml']:.3f} mL; missed objects {found['missed_objects']}, spurious "
                                f"objects {found['spurious_objects']}."))
            comps = [("missed", c) for c in found["missed"][:3]] + [("spurious", c) for c in found["spurious"][:3]]
            if comps:
                blocks.append(("table", ["error", "volume mm³", "centroid (mm)", "extent (mm)", "detached"],
                               [[k, f"{c['volume_mm3']:.1f}", ", ".join(f"{x:.1f}" for x in c["centroid_mm"]),
                                 " × ".join(f"{x:.1f}" for x in c["extent_mm"]), str(c["detached"])]
                                for k, c in comps]))
            blocks.append(("img", f"{fig_rel}/{found['overlay']}", f"{entry['case']} {cls} overlay"))
        if entry.get("gif"):
            blocks.append(("img", f"{fig_rel}/{entry['gif']}", f"{entry['case']} slice sweep"))
    best = failures.get("best")
    if best:
        blocks.append(("h", 2, f"Best case: {best['case']} (mean Dice {best['mean_dice']:.3f})"))
        blocks += [("img", f"{fig_rel}/{f['overlay']}", f"{best['case']} {c}") for c, f in best["classes"].items()]
    return blocks


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SegvolError(f"{path}: unreadable ({type(exc).__name__}); run 'segvol evaluate' again") from exc


def _eval_blocks(eval_dir: Path, run_dir: Path) -> list[Block]:
    from segvol.evaluation.summary import read_metrics_csv

    summary, failures = _read_json(eval_dir / "summary.json"), _read_json(eval_dir / "failures.json")
    fig_rel = Path(os.path.relpath(eval_dir / "figures", run_dir)).as_posix()
    split = summary.get("split", "folder")
    blocks: list[Block] = [("h", 2, f"Evaluation ({split}, {summary['cases']} case(s), {summary['scheme']} labels)"),
                           ("p", "Mean ± std; median [IQR] over cases; distances in mm; non-finite values (one mask "
                                 "empty) are counted as n/a."),
                           _summary_table(summary), ("img", f"{fig_rel}/scores.png", "Dice and IoU per class")]
    if any((m.get("cl_cover_ref") or {}).get("n_finite") for m in summary["metrics"].values()):
        blocks += [("h", 3, "Centrelines"),
                   ("p", ("clDice beside the centreline metrics of the tree analysis: the fraction of the reference "
                          "centreline the prediction traces (cl_cover_ref) and of the predicted centreline lying on "
                          "the reference (cl_cover_pred), reference branch ends reached or missed, and the total "
                          "centreline length error in %. See docs/tree.md.")),
                   _summary_table(summary, CENTRELINE_TABLE)]
    blocks += _failure_blocks(failures, fig_rel)
    blocks += [("h", 2, "Every case"), _case_table(read_metrics_csv(eval_dir / "metrics.csv"))]
    return blocks


def render_markdown(blocks: list[Block]) -> str:
    """Blocks as Markdown (images as relative links)."""
    out = []
    for block in blocks:
        if block[0] == "h":
            out.append("#" * block[1] + " " + block[2])
        elif block[0] == "p":
            out.append(block[1])
        elif block[0] == "img":
            out.append(f"![{block[2]}]({Path(block[1]).as_posix()})")
        elif block[0] == "table":
            lines = ["| " + " | ".join(block[1]) + " |", "|" + "---|" * len(block[1])]
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in block[2]]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _embedded(src: str, root: Path | None) -> str:
    """A ``data:`` URI of the image ``root / src`` (the relative link when it is missing or ``root`` is None)."""
    import base64

    path = root / src if root is not None else None
    if path is None or not path.is_file():
        return src
    mime = {".png": "image/png", ".gif": "image/gif"}.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(blocks: list[Block], title: str, root: Path | None = None) -> str:
    """Blocks as one self-contained HTML page: inline CSS, images embedded from ``root`` (else relative links)."""
    def inline(text: str) -> str:
        parts = html.escape(text).split("**")
        return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))

    body = []
    for block in blocks:
        if block[0] == "h":
            body.append(f"<h{block[1]}>{inline(block[2])}</h{block[1]}>")
        elif block[0] == "p":
            body.append(f"<p>{inline(block[1])}</p>")
        elif block[0] == "img":
            src = html.escape(_embedded(Path(block[1]).as_posix(), root), quote=True)
            body.append(f'<figure><img src="{src}" alt="{html.escape(block[2])}"></figure>')
        elif block[0] == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    style = ("body{font-family:sans-serif;max-width:1300px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:3px 6px;text-align:right}th{background:#eee}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(run_dir: str | Path, eval_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``<run>/report.md`` and ``<run>/report.html``; the evaluation part needs ``segvol evaluate`` first.

    Args:
        run_dir: the run folder (``models/<run>``).
        eval_dir: the evaluation folder (default ``<run>/eval``, else ``<run>/eval-val``).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SegvolError(f"{run_dir}: no such run folder")
    candidates = [Path(eval_dir)] if eval_dir else [run_dir / "eval", run_dir / "eval-val"]
    found = next((d for d in candidates if (d / "summary.json").is_file()), None)
    if eval_dir and found is None:
        raise SegvolError(f"{eval_dir}: no summary.json; run 'segvol evaluate --run {run_dir}' first")
    blocks: list[Block] = [("h", 1, f"segvol run {run_dir.name}")]
    blocks += _training_blocks(run_dir)
    if found is None:
        blocks.append(("p", f"Not evaluated yet: run `segvol evaluate --run {run_dir}` and then this report again."))
    else:
        blocks += _eval_blocks(found, run_dir)
    md, page = run_dir / "report.md", run_dir / "report.html"
    html = render_html(blocks, f"segvol run {run_dir.name}", run_dir)
    for path, text in ((md, render_markdown(blocks)), (page, html)):
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return md, page
