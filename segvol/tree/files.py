"""Writing a :class:`~segvol.tree.core.TreeAnalysis`: ``tree.json``, ``segments.csv`` and ``centrelines.vtk``.

``centrelines.vtk`` is legacy VTK ASCII POLYDATA (the format 3D Slicer and ParaView open directly): one polyline
per segment, points in scanner millimetres, point data ``radius_mm`` and cell data ``tree``, ``segment``,
``generation`` and ``narrowing``. It is written by hand (no VTK dependency); :func:`read_vtk_polylines` reads it
back. Coordinates are NIfTI scanner coordinates (RAS+); 3D Slicer shows models in RAS, so the file lines up with
the mask loaded into Slicer.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from segvol.errors import SegvolError
from segvol.tree.core import TreeAnalysis
from segvol.tree.records import Lesion, Segment
from segvol.utils import atomic_path

__all__ = ["tree_dict", "write_json", "write_segments_csv", "write_lesions_csv", "write_vtk", "read_vtk_polylines",
           "CSV_COLUMNS", "LESION_COLUMNS", "NARROWING_NOTE"]

NARROWING_NOTE = ("stenosis grades and narrowing flags are geometric cues (the lumen's diameter against a reference "
                  "fitted to the healthy vessel around it), not a diagnosis: look at the scan")
MAX_PIECES_LISTED = 200  # the largest detached pieces listed one by one in tree.json (all are counted)
CSV_COLUMNS = ("tree", "segment", "parent", "generation", "start_node", "end_node", "end_kind", "length_mm",
               "mean_radius_mm", "min_radius_mm", "tortuosity", "narrowing", "narrowing_pct", "narrowing_at_mm",
               "grade", "loop")
LESION_COLUMNS = ("tree", "path", "segment", "at_mm", "x_mm", "y_mm", "z_mm", "stenosis_pct", "band", "length_mm",
                  "reference_diameter_mm", "minimum_diameter_mm", "flagged")


def _num(x: float | None, digits: int = 3) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), digits)


def _pts(a: np.ndarray) -> list[list[float]]:
    return np.round(np.asarray(a, dtype=np.float64), 3).tolist()


def _values(a: np.ndarray) -> list[float | None]:
    return [_num(x) for x in np.asarray(a, dtype=np.float64)]


def _segment_dict(s: Segment) -> dict[str, Any]:
    return {"id": s.id, "start": s.start, "end": s.end, "parent": s.parent, "generation": s.generation,
            "length_mm": _num(s.length_mm), "mean_radius_mm": _num(s.mean_radius_mm),
            "min_radius_mm": _num(s.min_radius_mm), "tortuosity": _num(s.tortuosity, 4),
            "narrowing": bool(s.narrowing), "narrowing_pct": _num(s.narrowing_pct, 1),
            "narrowing_at_mm": _num(s.narrowing_mm, 2), "grade": s.grade, "loop": bool(s.loop),
            "points_mm": _pts(s.points_mm), "radii_mm": np.round(s.radii_mm, 3).tolist(),
            "diameter_min_mm": _values(s.diameter_min_mm), "diameter_max_mm": _values(s.diameter_max_mm),
            "reference_mm": _values(s.reference_mm), "junction": s.junction.astype(int).tolist()}


def _lesion_dict(les: Lesion) -> dict[str, Any]:
    return {"path": les.path, "segment": les.segment, "at_mm": _num(les.at_mm, 2), "point_mm": _pts(les.point_mm),
            "stenosis_pct": _num(les.pct, 1), "band": les.band, "length_mm": _num(les.length_mm, 2),
            "reference_diameter_mm": _num(les.reference_mm), "minimum_diameter_mm": _num(les.minimum_mm),
            "flagged": les.flagged}


def tree_dict(result: TreeAnalysis, source: str = "") -> dict[str, Any]:
    """Everything in ``tree.json`` (see docs/tree.md)."""
    trees = []
    for t in result.trees:
        trees.append({
            "name": t.name, "voxels": t.voxels, "volume_mm3": _num(t.volume_mm3, 2), "length_mm": _num(t.length_mm, 2),
            "centroid_mm": _pts(t.centroid_mm), "root": t.root, "loops": t.loops,
            "nodes": [{"id": n.id, "kind": n.kind, "degree": n.degree, "point_mm": _pts(n.point_mm),
                       "radius_mm": _num(n.radius_mm)} for n in t.nodes],
            "segments": [_segment_dict(s) for s in t.segments], "paths": t.paths,
            "lesions": [_lesion_dict(les) for les in t.lesions],
            "not_assessable": [{"segment": sp.segment, "from_mm": _num(sp.from_mm, 2), "to_mm": _num(sp.to_mm, 2),
                                "reason": sp.reason} for sp in t.not_assessable]})
    st = result.settings
    return {
        "source": source, "units": "mm", "coordinates": "scanner (NIfTI RAS+), the mask's affine",
        "shape": list(result.shape), "spacing_mm": _pts(result.spacing), "affine": _pts(result.affine),
        "settings": {k: getattr(st, k) for k in st.__dataclass_fields__},
        "note": NARROWING_NOTE, "spurs_removed": result.spurs_removed,
        "trees": trees,
        "pieces_total": len(result.pieces),
        "pieces_volume_mm3": _num(sum(p.volume_mm3 for p in result.pieces), 2),
        "pieces": [{"voxels": p.voxels, "volume_mm3": _num(p.volume_mm3, 2), "centroid_mm": _pts(p.centroid_mm),
                    "extent_mm": _pts(p.extent_mm)} for p in result.pieces[:MAX_PIECES_LISTED]],
    }


def write_json(result: TreeAnalysis, path: str | Path, source: str = "") -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(tree_dict(result, source), indent=1) + "\n", encoding="utf-8")
    return Path(path)


def _csv_row(tree: Any, s: Any) -> list[Any]:
    fmt = lambda x: "" if x is None or not math.isfinite(float(x)) else f"{float(x):.4g}"  # noqa: E731
    return [tree.name, s.id, "" if s.parent is None else s.parent, s.generation, s.start, s.end,
            tree.nodes[s.end].kind, fmt(s.length_mm), fmt(s.mean_radius_mm), fmt(s.min_radius_mm), fmt(s.tortuosity),
            int(s.narrowing), fmt(s.narrowing_pct), fmt(s.narrowing_mm), s.grade, int(s.loop)]


def write_segments_csv(result: TreeAnalysis, path: str | Path) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for tree, seg in result.segments:
        writer.writerow(_csv_row(tree, seg))
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())
    return Path(path)


def write_lesions_csv(result: TreeAnalysis, path: str | Path) -> Path:
    """One row per graded lesion (at least 25 %), flagged or not (``LESION_COLUMNS``)."""
    fmt = lambda x: f"{float(x):.4g}"  # noqa: E731
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(LESION_COLUMNS)
    for t in result.trees:
        for les in t.lesions:
            writer.writerow([t.name, les.path, les.segment, fmt(les.at_mm), *(fmt(x) for x in les.point_mm),
                             fmt(les.pct), les.band, fmt(les.length_mm), fmt(les.reference_mm), fmt(les.minimum_mm),
                             int(les.flagged)])
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())
    return Path(path)


def write_vtk(result: TreeAnalysis, path: str | Path) -> Path:
    """Legacy VTK ASCII POLYDATA: one polyline per segment (see the module doc)."""
    segs = result.segments
    points = np.concatenate([s.points_mm for _, s in segs]) if segs else np.zeros((0, 3))
    radii = np.concatenate([s.radii_mm for _, s in segs]) if segs else np.zeros(0)
    lines, start = [], 0
    for _, s in segs:
        n = len(s.points_mm)
        lines.append(f"{n} " + " ".join(str(i) for i in range(start, start + n)))
        start += n
    tree_index = {t.name: i for i, t in enumerate(result.trees)}
    out = ["# vtk DataFile Version 3.0", "segvol centrelines (mm, scanner RAS+)", "ASCII", "DATASET POLYDATA",
           f"POINTS {len(points)} float"]
    out += [f"{x:.4f} {y:.4f} {z:.4f}" for x, y, z in points]
    out.append(f"LINES {len(segs)} {sum(len(s.points_mm) + 1 for _, s in segs)}")
    out += lines
    out += [f"CELL_DATA {len(segs)}", "FIELD cells 4"]
    for name, values in (("tree", [tree_index[t.name] for t, _ in segs]), ("segment", [s.id for _, s in segs]),
                         ("generation", [s.generation for _, s in segs]),
                         ("narrowing", [int(s.narrowing) for _, s in segs])):
        out.append(f"{name} 1 {len(segs)} int")
        out.append(" ".join(str(v) for v in values))
    out += [f"POINT_DATA {len(points)}", "SCALARS radius_mm float 1", "LOOKUP_TABLE default"]
    out += [f"{r:.4f}" for r in radii]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(out) + "\n", encoding="ascii")
    return Path(path)


def read_vtk_polylines(path: str | Path) -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
    """Points (N, 3), the polylines as index arrays, and the point/cell arrays of a file from :func:`write_vtk`."""
    tokens = Path(path).read_text(encoding="ascii").split("\n")
    if not tokens[0].startswith("# vtk DataFile") or tokens[3].strip() != "DATASET POLYDATA":
        raise SegvolError(f"{path}: not a legacy VTK POLYDATA file")
    words = " ".join(tokens[4:]).split()
    pos = 0

    def take(n: int) -> list[str]:
        nonlocal pos
        pos += n
        return words[pos - n:pos]

    arrays: dict[str, np.ndarray] = {}
    points, lines = np.zeros((0, 3)), []
    while pos < len(words):
        key = take(1)[0]
        if key == "POINTS":
            n = int(take(2)[0])
            points = np.array(take(3 * n), dtype=np.float64).reshape(n, 3)
        elif key == "LINES":
            n, _ = (int(x) for x in take(2))
            for _ in range(n):
                k = int(take(1)[0])
                lines.append(np.array(take(k), dtype=np.int64))
        elif key == "CELL_DATA" or key == "POINT_DATA":
            take(1)
        elif key == "FIELD":
            _, count = take(2)
            for _ in range(int(count)):
                name, comps, count_, _ = take(4)
                arrays[name] = np.array(take(int(comps) * int(count_)), dtype=np.float64)
        elif key == "SCALARS":
            name, _, _ = take(3)
            take(2)  # LOOKUP_TABLE default
            arrays[name] = np.array(take(len(points)), dtype=np.float64)
        else:
            raise SegvolError(f"{path}: unexpected VTK keyword {key!r}")
    return points, lines, arrays
