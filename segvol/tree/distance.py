"""Distance from skeleton voxels to the mask's surface, for pruning and root choice (not for the reported radii,
which come from cross-sections, :mod:`segvol.tree.sections`).

:func:`distance_in_windows` is the one path: the voxels are grouped by component (a tree is one group, the
speckle of a noisy mask thousands), each group's box grown by ``margin`` voxels (an eighth of its extent for large
groups, up to 24), boxes of one cross-section stacked along the first axis and transformed together. A distance
smaller than the room to its box's faces is exact; the others are worked out again in one box around them, and at
last over the whole mask.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["distance_in_windows", "edt_at", "radius_from_edt", "runs_end_to_end", "WINDOW_MARGIN"]

WINDOW_MARGIN = 2  # voxels around each group's skeleton for its distance transform


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


def edt_at(mask: np.ndarray, coords: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """``ndimage.distance_transform_edt(mask, sampling=spacing)[tuple(coords.T)]``, from the feature transform:
    the distances are worked out at ``coords`` only, not over the whole array."""
    feature = ndimage.distance_transform_edt(mask, sampling=spacing, return_distances=False, return_indices=True)
    offsets = (feature[(slice(None),) + tuple(coords.T)] - coords.T).astype(np.float64)
    offsets *= np.asarray(spacing, dtype=np.float64)[:, None]
    return np.sqrt(np.add.reduce(offsets * offsets, axis=0))


def _room(coords: np.ndarray, lo: np.ndarray, hi: np.ndarray, shape: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance (mm) from each of ``coords`` to the faces of its box ``[lo, hi)`` that lie inside the array."""
    room = np.full(len(coords), np.inf)
    for ax in range(3):
        below = (coords[:, ax] - lo[:, ax] + 1) * spacing[ax]
        above = (hi[:, ax] - coords[:, ax]) * spacing[ax]
        room = np.where(lo[:, ax] > 0, np.minimum(room, below), room)
        room = np.where(hi[:, ax] < shape[ax], np.minimum(room, above), room)
    return room


def _stacked(mask: np.ndarray, coords: np.ndarray, box_of: np.ndarray, lo: np.ndarray, hi: np.ndarray,
             spacing: np.ndarray) -> np.ndarray:
    """Distances of ``coords`` within their boxes (``box_of``), boxes of one cross-section stacked along axis 0;
    NaN where a distance reaches its box's faces (including those towards its neighbours in the stack)."""
    dist = np.full(len(coords), np.nan)
    keys, which = np.unique((hi - lo)[:, 1:], axis=0, return_inverse=True)
    for g, (ny, nz) in enumerate(keys.tolist()):
        boxes = np.flatnonzero(which.ravel() == g)
        first_row, window, row = runs_end_to_end(hi[boxes, 0] - lo[boxes, 0])
        packed = mask[(lo[boxes, 0][window] + row)[:, None, None],
                      (lo[boxes, 1][window][:, None] + np.arange(ny))[:, :, None],
                      (lo[boxes, 2][window][:, None] + np.arange(nz))[:, None, :]]
        slot = np.full(len(lo), -1)
        slot[boxes] = np.arange(len(boxes))
        mine = np.flatnonzero(slot[box_of] >= 0)
        b = box_of[mine]
        at = coords[mine] - lo[b]
        at[:, 0] += first_row[slot[b]]
        d = edt_at(packed, at, spacing)
        room = _room(coords[mine], lo[b], hi[b], np.array(mask.shape), spacing)
        room = np.minimum(room, (coords[mine, 0] - lo[b, 0] + 1) * spacing[0])  # the neighbours in the stack
        room = np.minimum(room, (hi[b, 0] - coords[mine, 0]) * spacing[0])
        dist[mine] = np.where(d < room, d, np.nan)
    return dist


def distance_in_windows(mask: np.ndarray, coords: np.ndarray, group: np.ndarray, spacing: np.ndarray,
                        margin: int = WINDOW_MARGIN) -> np.ndarray:
    """``ndimage.distance_transform_edt(mask, sampling=spacing)[tuple(coords.T)]`` for ``coords`` in groups
    (``group``: the component of each; see the module doc)."""
    shape = np.array(mask.shape)
    spacing = np.asarray(spacing, dtype=np.float64)
    if len(coords) == 0:
        return np.zeros(0)
    order = np.argsort(group, kind="stable")
    starts = np.concatenate([[0], np.flatnonzero(np.diff(group[order])) + 1])
    first, last = np.minimum.reduceat(coords[order], starts), np.maximum.reduceat(coords[order], starts)
    grow = np.maximum(margin, np.minimum((last - first).max(axis=1) // 8, 24))[:, None]  # a tree's vessels are wide
    lo = np.maximum(first - grow, 0)
    hi = np.minimum(last + 1 + grow, shape)
    box_of = np.empty(len(coords), np.int64)
    box_of[order] = np.repeat(np.arange(len(starts)), np.diff(np.concatenate([starts, [len(coords)]])))
    dist = _stacked(mask, coords, box_of, lo, hi, spacing)
    again = np.flatnonzero(np.isnan(dist))
    if again.size:  # one box around them, grown by 8 voxels, then the whole mask
        lo1 = np.maximum(coords[again].min(axis=0) - 8, 0)[None]
        hi1 = np.minimum(coords[again].max(axis=0) + 9, shape)[None]
        d = edt_at(mask[tuple(slice(a, b) for a, b in zip(lo1[0], hi1[0]))], coords[again] - lo1, spacing)
        room = _room(coords[again], np.repeat(lo1, len(again), 0), np.repeat(hi1, len(again), 0), shape, spacing)
        far = d > room
        if far.any():
            d[far] = edt_at(mask, coords[again][far], spacing)
        dist[again] = d
    return dist
