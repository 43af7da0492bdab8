"""Curved planar reformations (CPR) of the main arteries: the view cardiologists read, one PNG per artery.

For each main artery (the first vessel path of each tree, and the other paths at least :data:`MIN_LENGTH_MM` long
and :data:`MIN_DIAMETER_MM` wide, :data:`PER_TREE` at most) the volume (the scan when given, else the probability
map, else the mask) is resampled along the centreline:

* **curved view**: a slab of :data:`SLAB_MM` around the plane that fits the artery best (principal axes), its
  maximum shown, the centreline drawn on it;
* **straightened views**: at every centreline sample a line across the vessel, in a frame carried along the
  centreline without twisting (parallel transport), at 0° and 90°; the lumen's contour (the 0.5 level of the
  interpolated mask or probability) is drawn over them;
* **diameter profile** underneath: the equivalent diameter, the minimum and maximum widths, the reference, graded
  lesions shaded and labelled with their band, stretches that are not assessable shaded grey.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from segvol.tree.records import Tree
from segvol.tree.sections import plane_axes, tangents

__all__ = ["save_cpr", "cpr_figure", "main_paths", "straightened", "frames", "Volume"]

log = logging.getLogger(__name__)
MIN_LENGTH_MM = 40.0
MIN_DIAMETER_MM = 2.0
PER_TREE = 2
PIXEL_MM = 0.2
SLAB_MM = 3.0


def main_paths(tree: Tree) -> list[int]:
    """Indices into ``tree.paths`` of its main arteries (see the module doc)."""
    out = []
    for i, path in enumerate(tree.paths):
        segs = [tree.segments[k] for k in path]
        length = sum(s.length_mm for s in segs)
        diameter = 2 * float(np.median(np.concatenate([s.radii_mm for s in segs])))
        if i == 0 or (length >= MIN_LENGTH_MM and diameter >= MIN_DIAMETER_MM):
            out.append(i)
    return out[:PER_TREE]


def frames(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tangents and two normals (n, 3) carried along ``points`` without twisting (parallel transport)."""
    t = tangents(points, 1.0)
    u = np.empty_like(t)
    u[0] = plane_axes(t[:1])[0][0]
    for i in range(1, len(t)):
        w = u[i - 1] - np.dot(u[i - 1], t[i]) * t[i]
        norm = np.linalg.norm(w)
        u[i] = w / norm if norm > 1e-9 else plane_axes(t[i:i + 1])[0][0]
    return t, u, np.cross(t, u)


def _sample(field: np.ndarray, to_index: np.ndarray, pts: np.ndarray, mode: str) -> np.ndarray:
    idx = pts.reshape(-1, 3) @ to_index[:3, :3].T + to_index[:3, 3]
    out = ndimage.map_coordinates(field, idx.T, output=np.float32, order=1, mode=mode, cval=0.0, prefilter=False)
    return out.reshape(pts.shape[:-1])


def straightened(field: np.ndarray, to_index: np.ndarray, points: np.ndarray, across: np.ndarray, half_mm: float,
                 mode: str = "constant") -> np.ndarray:
    """(rows across, samples along) image: ``field`` at ``points + h * across`` for ``h`` in ``[-half_mm,
    half_mm]``."""
    h = np.arange(-half_mm, half_mm + 1e-9, PIXEL_MM)
    return _sample(field, to_index, points[None] + h[:, None, None] * across[None], mode)


def _near(support: np.ndarray, centre: np.ndarray, axes: np.ndarray, depth: float, lo: np.ndarray,
          shape: tuple[int, int], reach: float) -> np.ndarray:
    """(rows, columns) of the curved view: True at the pixels within ``reach`` mm of a ``support`` point (scanner
    mm) that lies within ``reach`` of the slab (``depth`` mm either side of the plane)."""
    rel = support - centre
    rel = rel[np.abs(rel @ axes[2]) <= depth + reach]
    r = int(np.ceil(reach / (2 * PIXEL_MM) + 0.5))
    col = np.rint((rel @ axes[0] - lo[0]) / (2 * PIXEL_MM)).astype(np.int64) + r
    row = np.rint((rel @ axes[1] - lo[1]) / (2 * PIXEL_MM)).astype(np.int64) + r
    hit = np.zeros((shape[0] + 2 * r, shape[1] + 2 * r), bool)
    ok = (row >= 0) & (row < hit.shape[0]) & (col >= 0) & (col < hit.shape[1])
    hit[row[ok], col[ok]] = True
    return ndimage.maximum_filter(hit, size=2 * r + 1)[r:r + shape[0], r:r + shape[1]]


def _curved(field: np.ndarray, to_index: np.ndarray, points: np.ndarray, mode: str, support: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    """Slab maximum on the artery's best-fitting plane, the centreline in that plane's coordinates, and the extent.
    With ``support`` (the scanner mm of the voxels where ``field`` is non-zero; zero elsewhere and beyond, mode
    ``constant``), only the pixels that can see one of them are sampled: the same image, a fraction of the work."""
    centre = points.mean(axis=0)
    _, _, axes = np.linalg.svd(points - centre, full_matrices=False)
    a, b, normal = axes[0], axes[1], axes[2]
    xy = (points - centre) @ np.stack([a, b], axis=1)
    lo, hi = xy.min(axis=0) - 4.0, xy.max(axis=0) + 4.0
    gx, gy = np.arange(lo[0], hi[0], 2 * PIXEL_MM), np.arange(lo[1], hi[1], 2 * PIXEL_MM)
    depth = np.abs((points - centre) @ normal).max() + SLAB_MM
    slab = np.arange(-depth, depth + 1e-9, 2 * PIXEL_MM)
    image = np.zeros((len(gy), len(gx)), np.float32)
    plane = centre + gx[None, :, None] * a + gy[:, None, None] * b
    seen = np.ones(image.shape, bool)
    if support is not None:  # trilinear interpolation reaches one voxel: the sum of the voxel's edges bounds it
        reach = float(np.linalg.norm(np.linalg.inv(to_index[:3, :3]), axis=0).sum())
        seen = _near(support, centre, axes, depth, lo, image.shape, reach)
    plane, values = plane[seen], image[seen]
    for d in slab:  # one layer at a time keeps the memory small
        values = np.maximum(values, _sample(field, to_index, plane + d * normal, mode))
    image[seen] = values
    return image, xy, (float(lo[0]), float(gx[-1]), float(lo[1]), float(gy[-1]))


def _profile_axes(ax: Any, tree: Tree, path: list[int], index: int) -> None:
    """The diameter profile along the artery: one line per quantity, NaN between segments (each drawn apart), the
    stretches not assessable in one collection, the graded lesions shaded and labelled."""
    from matplotlib.collections import PolyCollection

    segs = [tree.segments[k] for k in path]
    offsets = np.cumsum([0.0] + [s.length_mm for s in segs])
    gap = np.full(1, np.nan)
    joined = {name: np.concatenate([part for s, o in zip(segs, offsets) for part in (get(s, o), gap)])
              for name, get in (("x", lambda s, o: o + s.arclength_mm), ("d", lambda s, o: 2 * s.radii_mm),
                                ("lo", lambda s, o: s.diameter_min_mm), ("hi", lambda s, o: s.diameter_max_mm),
                                ("ref", lambda s, o: s.reference_mm))}
    ax.plot(joined["x"], joined["d"], color="black", lw=1.2, label="diameter")
    ax.fill_between(joined["x"], joined["lo"], joined["hi"], color="tab:blue", alpha=0.2, lw=0, label="min-max width")
    ax.plot(joined["x"], joined["ref"], "--", color="tab:green", lw=1.0, label="reference")
    at = dict(zip(path, offsets.tolist()))
    grey = [(at[sp.segment] + sp.from_mm, at[sp.segment] + sp.to_mm) for sp in tree.not_assessable if sp.segment in at]
    if grey:  # full height, in the axes' y coordinates
        ax.add_collection(PolyCollection([[(a, 0), (a, 1), (b, 1), (b, 0)] for a, b in grey], facecolors="0.85",
                                         linewidths=0, zorder=0, transform=ax.get_xaxis_transform()), autolim=False)
    for les in (les for les in tree.lesions if les.segment in at and les.path == index):
        x = at[les.segment] + les.at_mm
        ax.axvspan(x - les.length_mm / 2, x + les.length_mm / 2, color="red" if les.flagged else "orange", alpha=0.3,
                   lw=0)
        ax.annotate(f"{les.pct:.0f} % ({les.band})", (x, les.minimum_mm), xytext=(0, -14), textcoords="offset points",
                    ha="center", fontsize=8, color="darkred")
    ax.set(xlabel="distance along the artery (mm); grey: not assessable", ylabel="diameter (mm)",
           xlim=(0, float(offsets[-1])))
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)


def _path_points(tree: Tree, path: list[int]) -> tuple[np.ndarray, np.ndarray]:
    segs = [tree.segments[k] for k in path]
    offsets = np.cumsum([0.0] + [s.length_mm for s in segs[:-1]])
    pts = np.concatenate([s.points_mm[1:] if i else s.points_mm for i, s in enumerate(segs)])
    arc = np.concatenate([(o + s.arclength_mm)[1:] if i else o + s.arclength_mm
                          for i, (o, s) in enumerate(zip(offsets, segs))])
    return pts, arc


Volume = tuple[np.ndarray, np.ndarray, str]  # an array, scanner mm -> its index, map_coordinates' mode beyond it


def save_cpr(tree: Tree, index: int, lumen: Volume, path: str | Path, *, show: Volume | None = None,
             title: str = "", support: np.ndarray | None = None) -> Path:
    """The CPR picture of ``tree.paths[index]`` (see the module doc): ``show`` (default ``lumen``) is drawn, the 0.5
    level of ``lumen`` (the mask or probability) outlined. ``support``: the scanner mm of the voxels where ``show``
    is non-zero, when it is zero elsewhere (a mask, mode ``constant``): the curved view is sampled near them only."""
    from segvol.viz.plots import fewer_ticks, made_ahead, save_figure

    show = show or lumen
    pts, arc = _path_points(tree, tree.paths[index])
    _, u, v = frames(pts)
    widths = np.concatenate([2 * tree.segments[k].radii_mm for k in tree.paths[index]])
    half = max(3.0, 1.5 * float(np.percentile(widths, 95)))
    fig, axes = made_ahead("cpr", cpr_figure)
    curved, xy, extent = _curved(show[0], show[1], pts, show[2], support)
    axes[0].imshow(curved, origin="lower", extent=extent, cmap="gray")
    axes[0].plot(xy[:, 0], xy[:, 1], color="yellow", lw=0.8)
    axes[0].plot(*xy[0], "o", color="cyan", ms=5)
    axes[0].set_title("curved view (slab on the artery's plane; cyan: ostium side)", y=1.0)  # placed, not fitted
    axes[0].set(aspect="equal")
    rows = np.arange(-half, half + 1e-9, PIXEL_MM)
    for ax, across, name in ((axes[1], u, "0°"), (axes[2], v, "90°")):
        image = straightened(show[0], show[1], pts, across, half, show[2])
        ax.imshow(image, origin="lower", extent=(0.0, float(arc[-1]), -half, half), aspect="auto", cmap="gray")
        edge = image if show is lumen else straightened(lumen[0], lumen[1], pts, across, half, lumen[2])
        if edge.min() < 0.5 < edge.max():
            ax.contour(arc, rows[: edge.shape[0]], edge, [0.5], colors="tab:orange", linewidths=0.8)
        ax.axhline(0.0, color="yellow", lw=0.4, ls=":")
        ax.set(ylabel=f"across {name} (mm)")
    axes[1].set_title("straightened views (orange: lumen contour)", fontsize=9, y=1.0)
    _profile_axes(axes[3], tree, tree.paths[index], index)
    fig.suptitle(title or f"{tree.name}, artery {index + 1}: {arc[-1]:.0f} mm; graded narrowings are geometric "
                 "cues, not a diagnosis", fontsize=10)
    fewer_ticks(axes[[0, 3]], axis="both")  # the straightened views share the profile's ticks along
    return save_figure(fig, path)


def cpr_figure() -> tuple[Any, np.ndarray]:
    """The empty figure of a CPR picture: the curved view, the two straightened views (their distance along the
    artery shared with, and numbered by, the profile underneath) and the diameter profile."""
    from segvol.viz.plots import pyplot, ready_ticks

    fig, axes = pyplot().subplots(4, 1, figsize=(10, 8.5), gridspec_kw={"height_ratios": [2.2, 1, 1, 1.4]})
    fig.subplots_adjust(left=0.08, right=0.98, top=0.93, bottom=0.06, hspace=0.45)
    for ax in axes[1:3]:
        ax.sharex(axes[3])
        ax.tick_params(labelbottom=False)
    ready_ticks(axes)
    return fig, axes
