"""Pictures of a tree analysis: the mask's projection with centrelines coloured by radius, and radius profiles.

``tree.png``: two panels, coronal (viewed from the front: x across, superior up) and axial (x across, anterior up),
both in scanner millimetres. The mask is projected along the viewing axis from its voxels' scanner coordinates (a
maximum-intensity projection of the binary mask, valid for any voxel orientation); centrelines are drawn on top,
coloured by radius, with flagged narrowings circled in red and the trees named at their roots.

``radius_profiles.png``: one panel per tree, the radius along every segment against the distance from the root
(each segment starts where its parent ends), flagged narrowings marked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from segvol.tree.core import TreeAnalysis
from segvol.tree.records import Segment, Tree

__all__ = ["save_tree_picture", "save_radius_profiles", "tree_figure", "profiles_figure", "figures_ahead",
           "mask_views", "projection", "aligned_projection"]

_VIEWS = (("coronal (from the front)", 0, 2, "x (mm, patient right →)", "z (mm, superior ↑)"),
          ("axial (from the feet)", 0, 1, "x (mm, patient right →)", "y (mm, anterior ↑)"))


def projection(points_mm: np.ndarray, a: int, b: int, pixel: float) -> tuple[np.ndarray, tuple[float, ...]]:
    """Occupancy image of ``points_mm`` projected on scanner axes ``a`` (columns) and ``b`` (rows), and its
    extent ``(left, right, bottom, top)`` for ``imshow(origin="lower")``."""
    lo = points_mm[:, [a, b]].min(axis=0) - 2 * pixel
    hi = points_mm[:, [a, b]].max(axis=0) + 2 * pixel
    bins = np.maximum(np.ceil((hi - lo) / pixel).astype(int), 1)
    hist, _, _ = np.histogram2d(points_mm[:, a], points_mm[:, b], bins=bins, range=[[lo[0], hi[0]], [lo[1], hi[1]]])
    return (hist.T > 0).astype(np.float32), (lo[0], hi[0], lo[1], hi[1])


def aligned_projection(mask: np.ndarray, affine: np.ndarray, a: int, b: int
                       ) -> tuple[np.ndarray, tuple[float, ...]] | None:
    """:func:`projection` of a mask whose voxel axes run along the scanner axes (any order, any sign), worked out
    on the voxel grid (``mask.any`` along the viewing axis); None for any other affine."""
    lin = np.asarray(affine, dtype=np.float64)[:3, :3]
    if np.count_nonzero(np.abs(lin) > 1e-9 * np.abs(lin).max()) != 3:
        return None
    axis_of = np.argmax(np.abs(lin), axis=1)  # scanner axis -> voxel axis
    if len(set(axis_of.tolist())) != 3:
        return None
    ia, ib = int(axis_of[a]), int(axis_of[b])
    image = np.asarray(mask, bool).any(axis=3 - ia - ib)
    image = image if ia < ib else image.T  # (voxel a, voxel b)
    bounds = []
    for scanner, vox, n in ((a, ia, image.shape[0]), (b, ib, image.shape[1])):
        step = lin[scanner, vox]
        ends = affine[scanner, 3] + step * np.array([0, n - 1])
        if step < 0:
            image = np.flip(image, axis=0 if scanner == a else 1)
        bounds += [float(ends.min() - abs(step) / 2), float(ends.max() + abs(step) / 2)]
    return image.T.astype(np.float32), tuple(bounds)


def _mask_points(mask: np.ndarray, affine: np.ndarray, limit: int = 3_000_000) -> np.ndarray:
    idx = np.argwhere(mask)
    if len(idx) > limit:
        idx = idx[np.linspace(0, len(idx) - 1, limit).astype(int)]
    return idx @ affine[:3, :3].T + affine[:3, 3]


def _narrowing_sample(seg: Segment) -> list[int]:
    """The index of the sample nearest a flagged narrowing of ``seg``, or none."""
    if not seg.narrowing or seg.narrowing_mm is None:
        return []
    return [int(np.argmin(np.abs(seg.arclength_mm - seg.narrowing_mm)))]


def mask_views(mask: np.ndarray, affine: np.ndarray) -> list[tuple[np.ndarray, tuple[float, ...]]]:
    """The mask's projections (image, extent) shown by the views of ``tree.png``, in their order."""
    mask = np.asarray(mask)
    mask = mask if mask.dtype == bool else mask != 0
    affine = np.asarray(affine, dtype=np.float64)
    out = []
    for _, a, b, _, _ in _VIEWS:
        found = aligned_projection(mask, affine, a, b)
        if found is None:
            pixel = float(np.linalg.norm(affine[:3, :3], axis=0).max())  # no empty rows between the finer axes' voxels
            found = projection(_mask_points(mask, affine), a, b, pixel)
        out.append(found)
    return out


def _draw_view(ax: Any, result: TreeAnalysis, found: tuple[np.ndarray, tuple[float, ...]], view: tuple, norm: Any,
               cmap: Any) -> Any:
    from matplotlib.collections import LineCollection

    title, a, b, xlabel, ylabel = view
    image, extent = found
    ax.imshow(image, origin="lower", extent=extent, cmap="Greys", vmin=0, vmax=2.5, interpolation="nearest")
    coll = None
    if result.segments:  # one collection for every segment: thousands of segments draw in a second
        lines = [np.stack([s.points_mm[:-1, [a, b]], s.points_mm[1:, [a, b]]], axis=1) for _, s in result.segments]
        coll = LineCollection(list(np.concatenate(lines)), cmap=cmap, norm=norm, linewidths=1.6)
        coll.set_array(np.concatenate([0.5 * (s.radii_mm[:-1] + s.radii_mm[1:]) for _, s in result.segments]))
        ax.add_collection(coll)
    marks = [s.points_mm[i] for _, s in result.segments for i in _narrowing_sample(s)]
    if marks:
        ax.plot([m[a] for m in marks], [m[b] for m in marks], "o", mfc="none", mec="red", ms=10, mew=1.5)
    for tree in result.trees:
        if tree.root is not None:
            p = tree.nodes[tree.root].point_mm
            ax.annotate(tree.name, (p[a], p[b]), color="tab:blue", fontsize=9, xytext=(4, 4),
                        textcoords="offset points")
    ax.set_title(title, y=1.0)  # placed, not fitted above the tick labels (a second layout of every tick)
    ax.set(xlabel=xlabel, ylabel=ylabel, aspect="equal")
    return coll


def tree_figure() -> tuple[Any, np.ndarray]:
    """The empty figure of ``tree.png``: its two views side by side."""
    from segvol.viz.plots import pyplot, ready_ticks

    fig, axes = pyplot().subplots(1, 2, figsize=(13, 6.5))
    ready_ticks(axes)
    return fig, axes


def profiles_figure(n: int) -> tuple[Any, np.ndarray]:
    """The empty figure of ``radius_profiles.png`` for ``n`` trees: one panel each, (n, 1) axes."""
    from segvol.viz.plots import pyplot, ready_ticks

    fig, axes = pyplot().subplots(n, 1, figsize=(11, 3.6 * n), squeeze=False)
    height = 3.6 * n  # a fixed layout in inches (tight_layout draws the figure twice): title, ticks and labels
    fig.subplots_adjust(left=0.07, right=0.98, top=1 - 0.4 / height, bottom=0.6 / height,
                        hspace=0.85 / ((height - 1.0 - 0.85 * (n - 1)) / n))
    ready_ticks(axes)
    return fig, axes


def figures_ahead(role: int = 0, trees: int = 2, data: Sequence[Callable[[], Any]] = ()) -> list[Callable[[], Any]]:
    """Steps that each make one figure ahead (:func:`segvol.viz.plots.make_ahead`) for the pictures to come, or work
    out a ``data`` step (a cached callable: ``data[0]`` what the CPRs sample, ``data[1]`` the views of
    ``tree.png``). A picture process started before the analysis ends runs them meanwhile
    (:class:`segvol.viz.workers.Helper`), for the pictures it will likely draw: the ``role`` 0 helper ``tree.png``
    and every other CPR, the ``role`` 1 helper ``radius_profiles.png`` (for ``trees`` trees) and the CPRs between
    (the order of ``segvol.tree.outputs``'s jobs, drawn in turn)."""
    from segvol.tree.cpr import cpr_figure
    from segvol.viz.plots import make_ahead

    cpr: Callable[[], Any] = partial(make_ahead, "cpr", cpr_figure)
    steps: list[Callable[[], Any]] = [cpr]
    if role == 0:
        steps += [partial(make_ahead, "tree", tree_figure), *data[1:2], *data[:1]]
    else:
        steps += [partial(make_ahead, f"profiles{trees}", partial(profiles_figure, trees)), *data[:1]]
    return [*steps, cpr]


def save_tree_picture(result: TreeAnalysis, mask: np.ndarray, path: str | Path, title: str = "", *,
                      views: Callable[[], list[tuple[np.ndarray, tuple[float, ...]]]] | None = None) -> Path:
    """``tree.png`` (see the module doc); ``views``: gives :func:`mask_views` of ``mask`` when worked out ahead."""
    from matplotlib.colors import Normalize

    from segvol.viz.plots import fewer_ticks, made_ahead, save_figure

    found = views() if views is not None else mask_views(mask, result.affine)
    radii = np.concatenate([s.radii_mm for _, s in result.segments]) if result.segments else np.ones(1)
    norm = Normalize(vmin=0.0, vmax=float(np.percentile(radii, 99)) or 1.0)
    fig, axes = made_ahead("tree", tree_figure)
    coll = None
    for ax, view, projected in zip(axes, _VIEWS, found):
        coll = _draw_view(ax, result, projected, view, norm, "plasma") or coll
    if coll is not None:
        fig.colorbar(coll, ax=axes, shrink=0.8, label="radius (mm)")
    flagged = sum(s.narrowing for _, s in result.segments)
    fig.suptitle(title or f"{len(result.trees)} tree(s), {len(result.segments)} segments, "
                 f"{sum(t.length_mm for t in result.trees):.0f} mm of centreline"
                 + (f"; {flagged} narrowing cue(s) circled (geometric, not a diagnosis)" if flagged else ""))
    fewer_ticks(axes, axis="both")  # the views, not the colour bar
    return save_figure(fig, path)


def _starts(tree: Tree) -> dict[int, float]:
    start: dict[int, float] = {}
    for seg in sorted(tree.segments, key=lambda s: s.generation):
        parent = seg.parent
        start[seg.id] = 0.0 if parent is None else start.get(parent, 0.0) + tree.segments[parent].length_mm
    return start


def save_radius_profiles(result: TreeAnalysis, path: str | Path) -> Path:
    """``radius_profiles.png`` (see the module doc)."""
    from matplotlib.collections import LineCollection

    from segvol.viz.plots import fewer_ticks, made_ahead, pyplot, save_figure

    plt = pyplot()
    n = max(len(result.trees), 1)
    fig, axes = made_ahead(f"profiles{n}", partial(profiles_figure, n))
    for ax, tree in zip(axes[:, 0], result.trees):
        start = _starts(tree)
        cmap = plt.get_cmap("tab20")
        for seg in tree.segments[:20]:  # the first twenty named in the legend
            ax.plot([], [], lw=1.2, color=cmap(seg.id % 20), label=f"{seg.id}")
        ax.add_collection(LineCollection([np.column_stack([start[s.id] + s.arclength_mm, s.radii_mm])
                                          for s in tree.segments], colors=[cmap(s.id % 20) for s in tree.segments],
                                         linewidths=1.2))
        ax.autoscale_view()
        marks = [(start[s.id] + s.arclength_mm[i], s.radii_mm[i]) for s in tree.segments
                 for i in _narrowing_sample(s)]
        if marks:
            ax.plot(*zip(*marks), "o", mfc="none", mec="red", ms=9, mew=1.5)
        ax.set_title(f"{tree.name}: {len(tree.segments)} segments, {tree.length_mm:.0f} mm", y=1.0)
        ax.set(xlabel="distance from the root along the tree (mm)", ylabel="radius (mm)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if tree.segments:
            ax.legend(title="segment", fontsize=7, ncol=10, loc="upper right")
    if not result.trees:
        axes[0, 0].text(0.5, 0.5, "no tree", ha="center", va="center")
    fewer_ticks(axes, axis="both")
    return save_figure(fig, path)
