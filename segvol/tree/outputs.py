"""The file layer of ``segvol tree``: a mask (file, NIfTI image or array) in, an output folder out.

Output folder (written to a temporary folder and renamed into place, so nothing half-written is ever left)::

    tree.json             trees, nodes, segments with polylines, radii, diameters and references, vessel paths,
                          graded lesions, stretches not assessable (with the reason), detached pieces, settings
    segments.csv          one row per segment (segvol.tree.files.CSV_COLUMNS)
    lesions.csv           one row per graded lesion (segvol.tree.files.LESION_COLUMNS)
    centrelines.vtk       legacy VTK polylines in scanner mm (3D Slicer, ParaView)
    tree.png              mask projection with centrelines coloured by radius
    radius_profiles.png   radius along every segment
    cpr_<tree>_<n>.png    curved planar reformation of each main artery (segvol.tree.cpr)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np

from segvol.errors import SegvolError
from segvol.tree.core import TreeAnalysis, analyse_mask
from segvol.tree.records import TreeSettings

__all__ = ["TreeOutput", "write_tree", "tree_file", "default_tree_dir", "FILES", "summary_line"]

log = logging.getLogger(__name__)
MAX_HELPERS = 2  # picture processes started with the analysis (more CPUs: more are forked once it ends)
FILES = ("tree.json", "segments.csv", "lesions.csv", "centrelines.vtk", "tree.png", "radius_profiles.png")


@dataclass
class TreeOutput:
    out_dir: Path
    analysis: TreeAnalysis
    files: dict[str, Path]


def _as_array(mask_img_or_array: Any, affine: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(mask_img_or_array, "dataobj"):  # a nibabel image
        data = np.asanyarray(mask_img_or_array.dataobj)
        affine = np.asarray(mask_img_or_array.affine if affine is None else affine, dtype=np.float64)
    else:
        data = np.asarray(mask_img_or_array)
    if affine is None:
        raise ValueError("an array mask needs its affine")
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    return data, np.asarray(affine, dtype=np.float64)


def _on_grid(volume: Any, shape: tuple[int, ...], source: str, what: str) -> np.ndarray | None:
    """``volume`` (array or nibabel image) as a float32 array of the mask's ``shape``; None stays None."""
    if volume is None:
        return None
    data = np.asarray(volume.dataobj if hasattr(volume, "dataobj") else volume, dtype=np.float32)
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.shape != tuple(shape):
        raise SegvolError(f"{source}: the {what} has shape {data.shape}, the mask {tuple(shape)}; give it on its grid")
    return data


def summary_line(result: TreeAnalysis) -> str:
    """One line: trees with their segment counts and lengths, detached pieces, flagged narrowings."""
    if not result.trees:
        return "no tree"
    parts = [f"{t.name}: {len(t.segments)} segments, {t.length_mm:.0f} mm" for t in result.trees]
    flagged = [les for t in result.trees for les in t.lesions if les.flagged]
    text = "; ".join(parts) + f"; {len(result.pieces)} detached piece(s)"
    worst = ", ".join(f"{les.pct:.0f} %" for les in sorted(flagged, key=lambda x: -x.pct)[:3])
    return text + (f"; {len(flagged)} narrowing cue(s) ({worst}; geometric, not a diagnosis)" if flagged else "")


def _volumes(mask: np.ndarray, affine: np.ndarray, prob: np.ndarray | None, image: np.ndarray | None
             ) -> tuple[Any, Any, np.ndarray | None]:
    """What the CPR pictures outline (the probability map, else the mask) and show (the scan, else that), and where
    the mask shows anything (scanner mm of its voxels) when it is shown. The mask is read as bytes in place
    (``map_coordinates`` takes any memory order; a copy of the volume cost 0.4 s)."""
    inverse = np.linalg.inv(affine)
    lumen = (np.asarray(prob, np.float32), inverse, "nearest") if prob is not None else \
        (np.asarray(mask, bool).view(np.uint8), inverse, "constant")
    show = (np.asarray(image, np.float32), inverse, "nearest") if image is not None else None
    if prob is not None or image is not None:
        return lumen, show, None
    if mask.flags.f_contiguous:  # NIfTI data: read in memory order, without a copy
        idx = np.unravel_index(np.flatnonzero(mask.ravel(order="F")), mask.shape, order="F")
    else:
        idx = np.nonzero(mask)
    return lumen, show, np.stack(idx, axis=1) @ affine[:3, :3].T + affine[:3, 3]


Ahead = tuple[Callable[[], tuple[Any, Any, Any]], Callable[[], list[Any]]]  # what the CPRs sample; tree.png's views


def _ahead(mask: np.ndarray, affine: np.ndarray, prob: np.ndarray | None, image: np.ndarray | None) -> Ahead:
    """What the pictures need of the volumes alone, each worked out once when first asked for (in a picture process
    started early, before the analysis ends): the CPRs' volumes (:func:`_volumes`), ``tree.png``'s views."""
    from segvol.tree.figures import mask_views

    return cache(partial(_volumes, mask, affine, prob, image)), cache(partial(mask_views, mask, affine))


def _picture_jobs(mask: np.ndarray, ahead: Ahead, result: TreeAnalysis, tmp: Path
                  ) -> list[tuple[Callable[[], Path], float]]:
    """The pictures of the output folder (``tree.png``, ``radius_profiles.png``, the CPRs of
    :func:`segvol.tree.cpr.main_paths`), in this order (picture processes started early make their figures ahead
    by it, :func:`segvol.tree.figures.figures_ahead`), to be drawn into ``tmp``, with their rough costs."""
    from segvol.tree.cpr import main_paths
    from segvol.tree.figures import save_radius_profiles, save_tree_picture

    volumes, views = ahead
    jobs: list[tuple[Callable[[], Path], float]] = [
        (partial(save_tree_picture, result, mask, tmp / "tree.png", views=views), 1.0),
        (partial(save_radius_profiles, result, tmp / "radius_profiles.png"), 1.0)]
    return jobs + [(partial(_cpr, volumes, tree, index, tmp / f"cpr_{tree.name}_{index + 1}.png"), 1.2)
                   for tree in result.trees for index in main_paths(tree)]


def _cpr(volumes: Callable[[], tuple[Any, Any, Any]], tree: Any, index: int, path: Path) -> Path:
    from segvol.tree.cpr import save_cpr

    lumen, show, support = volumes()
    return save_cpr(tree, index, lumen, path, show=show, support=support)


def _write_files(result: TreeAnalysis, tmp: Path, source: str,
                 pictures: Callable[[TreeAnalysis, Path], Sequence[tuple[Callable[[], Path], float]]] | None,
                 processes: int | None, helpers: Sequence[Any] = ()) -> dict[str, Path]:
    """The files of the output folder, in ``tmp``; the pictures too when ``pictures`` (which makes their jobs,
    :func:`_picture_jobs`) is given, drawn beside the other files, in parallel where CPUs allow
    (:func:`segvol.viz.workers.draw_all`; ``helpers``: :class:`segvol.viz.workers.Helper` processes started with
    ``pictures``)."""
    from segvol.tree.files import write_json, write_lesions_csv, write_segments_csv, write_vtk
    from segvol.viz.workers import draw_all

    files: dict[str, Path] = {}

    def write_files() -> None:
        files.update({"tree.json": write_json(result, tmp / "tree.json", source),
                      "segments.csv": write_segments_csv(result, tmp / "segments.csv"),
                      "lesions.csv": write_lesions_csv(result, tmp / "lesions.csv"),
                      "centrelines.vtk": write_vtk(result, tmp / "centrelines.vtk")})

    if pictures is None:
        write_files()
        return files
    jobs = list(pictures(result, tmp))
    for helper in helpers:
        helper.jobs(result, tmp)  # the same jobs, made again by the helper from these arguments
    files.update({p.name: p for p in draw_all(jobs, processes, before=write_files, before_cost=0.3, helpers=helpers)})
    return files


def write_tree(mask_img_or_array: Any, affine: np.ndarray | None, out_dir: str | Path, *,
               label: int | None = None, settings: TreeSettings | None = None, overwrite: bool = False,
               source: str = "mask", figures: bool = True, prob: Any = None, image: Any = None,
               processes: int | None = None) -> TreeOutput:
    """Analyse a vessel mask and write the output folder (see the module doc).

    Args:
        mask_img_or_array: a label map (array or nibabel image); with ``label`` only that value is vessel, else
            every non-zero voxel.
        affine: voxel -> scanner mm (None: the image's own).
        out_dir: the folder to create (refused when it exists, unless ``overwrite``).
        settings: analysis settings (:class:`TreeSettings`).
        source: names the mask in messages and in ``tree.json``.
        figures: also draw ``tree.png``, ``radius_profiles.png`` and the ``cpr_*.png`` pictures.
        prob: the vessel probability (0-1; array or nibabel image on the mask's grid): the cross-sections and the
            CPR lumen contours are cut through it instead of the mask.
        image: the scan (array or nibabel image on the mask's grid), shown in the CPR pictures instead of the mask.
        processes: how many processes analyse (at most two, :func:`analyse_mask`) and draw the pictures
            (:func:`segvol.viz.workers.draw_all`), this one included; 1: all here, one after the other; None: two
            analyse when a CPU is idle now (and a picture process makes the pictures' figures meanwhile), and one
            per CPU left idle during the analysis draws.
    """
    from segvol.utils import atomic_dir, check_writable_target
    from segvol.tree.figures import figures_ahead
    from segvol.viz.workers import Helper, available_cpus, cpu_times

    data, affine = _as_array(mask_img_or_array, affine)
    if data.ndim != 3:
        raise SegvolError(f"{source}: expected a 3D mask, got shape {data.shape}")
    out_dir = Path(out_dir)
    check_writable_target(out_dir, overwrite)
    if label is not None:
        present = sorted({int(v) for v in np.unique(data)} - {0})
        if label not in present:
            raise SegvolError(f"{source}: holds no voxel labelled {label} (labels present: {present or 'none'})")
        mask = data == label
    else:
        mask = data != 0
    if not mask.any():
        raise SegvolError(f"{source}: the mask is empty; there is no vessel tree to trace")
    prob = _on_grid(prob, data.shape, source, "probability map")
    image = _on_grid(image, data.shape, source, "image")
    cpus = available_cpus() if processes is None else processes
    since = cpu_times()  # the CPUs left idle while this one analyses decide how many draw
    ahead = _ahead(mask, affine, prob, image)
    pictures = partial(_picture_jobs, mask, ahead) if figures else None
    # picture processes (one per CPU, two at most) started now make the pictures' figures while this one analyses
    helpers = []
    if pictures is not None and cpus > 1:
        helpers = [Helper(pictures, partial(figures_ahead, role, data=ahead)) for role in range(min(cpus, MAX_HELPERS))]
    try:
        result = analyse_mask(mask, affine, settings, prob=prob, processes=min(cpus, 2))
        drawing = processes or available_cpus(since, sum(h.cpu_ticks() for h in helpers))
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            files = _write_files(result, tmp, source, pictures, drawing, helpers)
    finally:
        for helper in helpers:
            helper.close()
    log.debug("%s: %s", source, summary_line(result))
    return TreeOutput(out_dir, result, {name: out_dir / name for name in files})


def default_tree_dir(mask_path: str | Path) -> Path:
    """``scan_seg_tree/`` beside ``scan_seg.nii.gz``."""
    from segvol.io.nifti import strip_nifti_suffix

    mask_path = Path(mask_path)
    return mask_path.parent / f"{strip_nifti_suffix(mask_path.name)}_tree"


def tree_file(mask: str | Path, out_dir: str | Path | None = None, *, label: int | None = None,
              settings: TreeSettings | None = None, overwrite: bool = False, prob: str | Path | None = None,
              image: str | Path | None = None) -> TreeOutput:
    """:func:`write_tree` for a mask file (``segvol tree``); ``out_dir`` defaults to :func:`default_tree_dir`;
    ``prob`` and ``image`` are NIfTI files on the mask's grid (a probability map to cut, a scan to show)."""
    import nibabel as nib

    from segvol.io.masks import load_mask

    data, affine = load_mask(mask)
    return write_tree(data, affine, out_dir or default_tree_dir(mask), label=label, settings=settings,
                      overwrite=overwrite, source=str(mask), prob=None if prob is None else nib.load(str(prob)),
                      image=None if image is None else nib.load(str(image)))
