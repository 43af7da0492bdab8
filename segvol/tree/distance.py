"""Distance from skeleton voxels to the mask's surface, for pruning and root choice (not for the reported radii,
which come from cross-sections, :mod:`segvol.tree.sections`).

:func:`distance_to_background` gives what ``ndimage.distance_transform_edt(mask, sampling=spacing)`` gives at the
asked voxels only, from the background voxels that touch the mask: the nearest background voxel of a mask voxel
``p`` always has a mask voxel among its six face neighbours (were the one a step towards ``p`` background, it would
lie nearer), so a k-d tree over those voxels, in mm, finds it. A vessel mask fills a small part of its bounding box:
the transform of the whole box cost seconds, this tens of milliseconds.
"""

from __future__ import annotations

import numpy as np

__all__ = ["distance_to_background", "surface_voxels", "radius_from_edt", "runs_end_to_end"]


def runs_end_to_end(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of ``lengths`` elements laid end to end in one array: each run's first index, and for every element
    its run and its position within the run."""
    lengths = np.asarray(lengths, dtype=np.int64)
    first = np.cumsum(lengths) - lengths
    run = np.repeat(np.arange(len(lengths)), lengths)
    return first, run, np.arange(int(lengths.sum())) - first[run]


def radius_from_edt(edt: np.ndarray, step: float) -> np.ndarray:
    """A rough vessel radius (mm) from the distance (mm) of a centreline voxel to the nearest outside voxel:
    ``edt - step**2 / (2 * edt)``, half a voxel for a one-voxel-wide line, tending to ``edt`` for wide vessels.
    Used to prune spurs and choose roots only."""
    edt = np.maximum(np.asarray(edt, dtype=np.float64), step)
    return edt - step**2 / (2.0 * edt)


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """(n, 3) indices of the background voxels of ``mask`` with a mask voxel among their six face neighbours
    (within the array)."""
    mask = np.asarray(mask, dtype=bool)
    touching = np.zeros_like(mask)
    for ax in range(mask.ndim):
        lo = [slice(None)] * mask.ndim
        hi = [slice(None)] * mask.ndim
        lo[ax], hi[ax] = slice(None, -1), slice(1, None)
        touching[tuple(lo)] |= mask[tuple(hi)]
        touching[tuple(hi)] |= mask[tuple(lo)]
    return np.argwhere(touching & ~mask)


def distance_to_background(mask: np.ndarray, coords: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """``ndimage.distance_transform_edt(mask, sampling=spacing)[tuple(coords.T)]``: the distance (mm) from each of
    ``coords`` (n, 3 voxel indices) to the nearest background voxel of ``mask`` (0 at a background voxel, inf when
    the array holds none); see the module doc."""
    from scipy.spatial import cKDTree

    coords = np.asarray(coords, dtype=np.int64).reshape(-1, mask.ndim)
    spacing = np.asarray(spacing, dtype=np.float64)
    dist = np.zeros(len(coords))
    inside = np.flatnonzero(np.asarray(mask, bool)[tuple(coords.T)]) if len(coords) else np.zeros(0, np.int64)
    if not inside.size:
        return dist
    surface = surface_voxels(mask)
    if not len(surface):
        dist[inside] = np.inf
        return dist
    _, nearest = cKDTree(surface * spacing).query(coords[inside] * spacing)
    offsets = (surface[nearest] - coords[inside]).astype(np.float64) * spacing  # as scipy's transform works it out
    dist[inside] = np.sqrt(np.add.reduce(offsets * offsets, axis=1))
    return dist
