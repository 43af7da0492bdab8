"""Thinning a binary mask to a one-voxel skeleton: crop, fill, pad, Lee's 3D thinning, repair.

1. :func:`prepare` crops the mask to its bounding box, fills enclosed cavities, and pads it. Where the mask touches
   the volume border the last slice is repeated outwards (a vessel cut by the field of view continues), so that
   the skeleton reaches the border and the distance transform sees no false wall there; elsewhere one zero voxel.
2. :func:`skeleton_of_components`: scikit-image's Lee 3D thinning of the trees of that array, each in its own box;
   :func:`keep_inside` keeps it inside the original volume.
3. :func:`repair_skeleton`: components whose skeleton vanished or fell apart (scikit-image issue #3757) are thinned
   again with a one-voxel layer added on one side; all of them in one batch (:func:`_rethin`), windows of one
   cross-section stacked along the first axis, a large component being a batch of one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from segvol.tree.graph import neighbour_links

__all__ = ["Work", "prepare", "fill_holes", "skeleton_of_components", "keep_inside", "repair_skeleton",
           "MAX_BORDER_PAD"]

MAX_BORDER_PAD = 48  # voxels repeated beyond a border the mask touches (enough for vessels up to ~45 voxels wide)

@dataclass
class Work:
    """The cropped, padded mask and how its indices map back: ``original = work index + offset``."""

    mask: np.ndarray  # bool, padded
    offset: np.ndarray  # (3,) int
    inside: tuple[slice, ...]  # the part of ``mask`` that lies in the original volume


def _border_pad(face: np.ndarray, spacing_face: list[float], step: float) -> int:
    """Voxels to repeat beyond a border face: the widest in-plane radius on the face, in voxels along the normal."""
    if not face.any():
        return 0
    radius = float(ndimage.distance_transform_edt(np.pad(face, 1), sampling=spacing_face).max())
    return int(min(np.ceil(radius / step) + 3, MAX_BORDER_PAD))


def _sandwiched(mask: np.ndarray) -> np.ndarray:
    """Background voxels with a mask voxel on both sides along every axis: the only ones a cavity can hold (from
    any other a straight line of background leads to a face of the array). The first and last mask voxel of every
    line come from the mask's voxels, not from a pass along each axis."""
    at = np.nonzero(mask)
    inner = ~mask
    for ax in range(mask.ndim):
        plane = [mask.shape[a] for a in range(mask.ndim) if a != ax]
        line = tuple(at[a] for a in range(mask.ndim) if a != ax)
        first = np.full(plane, mask.shape[ax], np.int32)  # no mask voxel on the line: nothing lies between
        last = np.full(plane, -1, np.int32)
        np.minimum.at(first, line, at[ax])
        np.maximum.at(last, line, at[ax])
        along = np.arange(mask.shape[ax], dtype=np.int32).reshape([-1 if a == ax else 1 for a in range(mask.ndim)])
        inner &= (along > np.expand_dims(first, ax)) & (along < np.expand_dims(last, ax))
    return inner


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes(mask)``: the background parts (6-connected) that reach no face of the array are
    filled. Only the background held between mask voxels along every axis (:func:`_sandwiched`, a small part of a
    vessel mask's box) is labelled; a part of it that touches other background reaches a face."""
    mask = np.asarray(mask, dtype=bool)
    inner = _sandwiched(mask)
    filled = mask.copy()
    idx = np.argwhere(inner)
    if not len(idx):
        return filled
    box = tuple(slice(a - 1, b + 2) for a, b in zip(idx.min(axis=0), idx.max(axis=0)))  # never on a face
    inner_box = inner[box]
    parts, n = ndimage.label(inner_box)
    outside = ~mask[box] & ~inner_box
    leaks = np.zeros(n + 1, bool)
    for ax in range(mask.ndim):
        lo = [slice(None)] * mask.ndim
        hi = [slice(None)] * mask.ndim
        lo[ax], hi[ax] = slice(None, -1), slice(1, None)
        leaks[parts[tuple(lo)][outside[tuple(hi)]]] = True
        leaks[parts[tuple(hi)][outside[tuple(lo)]]] = True
    leaks[0] = True
    filled[box] |= ~leaks[parts]
    return filled


def prepare(mask: np.ndarray, spacing: np.ndarray) -> Work | None:
    """Crop to the bounding box, fill cavities, pad (see the module doc); None for an empty mask."""
    coords = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(c.size == 0 for c in coords):
        return None
    lo = np.array([c[0] for c in coords])
    hi = np.array([c[-1] + 1 for c in coords])
    arr = fill_holes(np.ascontiguousarray(mask[tuple(slice(a, b) for a, b in zip(lo, hi))]))  # C order is faster
    pads = []
    for ax in range(3):
        plane = [s for a, s in enumerate(spacing) if a != ax]
        before = _border_pad(np.take(arr, 0, axis=ax), plane, spacing[ax]) if lo[ax] == 0 else 0
        after = _border_pad(np.take(arr, -1, axis=ax), plane, spacing[ax]) if hi[ax] == mask.shape[ax] else 0
        pads.append((before, after))
    if any(any(p) for p in pads):
        arr = np.pad(arr, pads, mode="edge")
    arr = np.pad(arr, 1)
    inside = tuple(slice(1 + b, 1 + b + (h - lo_)) for (b, _), lo_, h in zip(pads, lo, hi))
    offset = lo - np.array([1 + b for b, _ in pads])
    return Work(np.ascontiguousarray(arr), offset.astype(np.int64), inside)


def _groups(boxes: list[tuple[slice, ...] | None], which: list[int], alone: int
            ) -> list[tuple[list[int], tuple[slice, ...]]]:
    """The thinning batches of :func:`skeleton_of_components`: (labels, their common box)."""
    out = []
    for group in [[lab] for lab in which[:alone]] + ([which[alone:]] if len(which) > alone else []):
        found = [b for b in (boxes[lab - 1] for lab in group) if b is not None]
        if found:
            out.append((group, tuple(slice(min(b[ax].start for b in found), max(b[ax].stop for b in found))
                                     for ax in range(3))))
    return out


def _thin_groups(labels: np.ndarray, groups: list[tuple[list[int], tuple[slice, ...]]], n: int) -> list[np.ndarray]:
    """Per batch, the flat indices (within its box) of its skeleton's voxels (``n``: the largest label)."""
    from skimage.morphology import skeletonize

    keep = np.zeros(n + 1, bool)
    out = []
    for group, box in groups:
        keep[:] = False
        keep[group] = True
        out.append(np.flatnonzero(skeletonize(keep[labels[box]])).astype(np.int64))
    return out


def _split(costs: list[float]) -> tuple[list[int], list[int]]:
    """Indices for two processes, costs balanced (largest first, each to the less loaded; a tie to the first)."""
    load = [0.0, 0.0]
    parts: tuple[list[int], list[int]] = ([], [])
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        p = 0 if load[0] <= load[1] else 1
        parts[p].append(i)
        load[p] += costs[i]
    return sorted(parts[0]), sorted(parts[1])


def skeleton_of_components(labels: np.ndarray, which: list[int], alone: int = 4, *,
                           boxes: list[tuple[slice, ...] | None] | None = None, fork: bool = False) -> np.ndarray:
    """Lee's thinning of the components ``which`` of ``labels`` (largest first): the first ``alone`` each in its
    own bounding box, the others together in theirs. The same voxels as thinning the whole mask and keeping theirs
    (Lee's thinning decides on each voxel from its 26 neighbours, which hold no voxel of another component, and
    pads the array with zeros), in less time: two trees' boxes hold much less than the box of both.

    ``boxes``: ``ndimage.find_objects(labels)`` when known (at least for ``which``). ``fork``: thin the batches
    in two processes, this one and a forked child (:class:`segvol.viz.workers.Beside`), their boxes' voxels
    balanced; each batch is thinned as alone, so the skeleton is the same."""
    from segvol.viz.workers import Beside

    skel = np.zeros(labels.shape, bool)
    boxes = ndimage.find_objects(labels) if boxes is None else boxes
    groups = _groups(boxes, which, alone)
    mine, theirs = list(range(len(groups))), list[int]()
    if fork and len(groups) > 1:
        mine, theirs = _split([float(np.prod([b.stop - b.start for b in box])) for _, box in groups])
    with Beside(lambda: _thin_groups(labels, [groups[i] for i in theirs], len(boxes)), fork=bool(theirs)) as other:
        found = dict(zip(mine, _thin_groups(labels, [groups[i] for i in mine], len(boxes))))
        found.update(zip(theirs, other.result() if theirs else []))
    for i, (_, box) in enumerate(groups):
        region = skel[box]
        region[np.unravel_index(found[i], region.shape)] = True
    return skel


def keep_inside(skel: np.ndarray, work: Work) -> np.ndarray:
    """``skel`` without its voxels in the padding beyond the volume's border."""
    kept = np.zeros_like(skel)
    kept[work.inside] = skel[work.inside]
    return kept


def _shifted(comp: np.ndarray, axis: int) -> np.ndarray:
    """``comp`` with a one-voxel layer added on its high side along ``axis``."""
    shifted = comp.copy()
    sl = [slice(None)] * 3
    sl[axis] = slice(1, None)
    src = [slice(None)] * 3
    src[axis] = slice(None, -1)
    shifted[tuple(sl)] |= comp[tuple(src)]
    return shifted


def _rethin(skel: np.ndarray, windows: list[tuple[np.ndarray, tuple[slice, ...]]]) -> None:
    """Re-thin the components of ``windows`` (each a mask and its window of ``skel``) as :func:`repair_skeleton`
    says, all at once: windows of one cross-section are stacked along the first axis with a layer of zeros between
    them and thinned together (a window with no partner is a batch of one). Lee's thinning decides on each voxel
    from its 26 neighbours and pads the array with zeros, so a window's result is the same as alone."""
    from skimage.morphology import skeletonize

    left = list(range(len(windows)))
    for axis in range(3):
        groups: dict[tuple[int, int], list[int]] = {}
        for i in left:
            groups.setdefault(windows[i][0].shape[1:], []).append(i)
        failed = []
        for (ny, nz), members in groups.items():
            starts = np.cumsum([0] + [windows[i][0].shape[0] + 1 for i in members])
            comp = np.zeros((int(starts[-1]), ny, nz), bool)
            shifted = np.zeros_like(comp)
            for i, at in zip(members, starts[:-1].tolist()):
                c = windows[i][0]
                comp[at:at + c.shape[0]] = c
                shifted[at:at + c.shape[0]] = _shifted(c, axis)
            again = skeletonize(shifted).astype(bool) & comp
            pieces, n = ndimage.label(again, ndimage.generate_binary_structure(3, 3))
            first = np.array([box[0].start for box in ndimage.find_objects(pieces)], np.int64)  # a layer of each
            count = np.bincount(np.searchsorted(starts, first, side="right") - 1, minlength=len(members))
            for j, (i, at) in enumerate(zip(members, starts[:-1].tolist())):
                c, grown = windows[i]
                if count[j] != 1:
                    failed.append(i)
                    continue
                region = skel[grown]
                region[c] = again[at:at + c.shape[0]][c]
        left = sorted(failed)


def repair_skeleton(skel: np.ndarray, labels: np.ndarray, which: list[int], *,
                    boxes: list[tuple[slice, ...] | None] | None = None) -> np.ndarray:
    """Re-thin components whose skeleton vanished or fell apart (scikit-image issue #3757: Lee's thinning can
    delete a tube whose cross-section is an even square, as nearest-neighbour upsampled masks have).

    Such a component is thinned again with a one-voxel layer added on one side (along x, else y, else z), which
    breaks the symmetry and shifts the centreline by half a voxel at most; the first result in one piece is kept.
    ``skel`` is the thinning of the work mask's components, padding included (:func:`skeleton_of_components`):
    cut at the volume's border, a skeleton may lie in several pieces that the padding joins. All such
    components (speckle: thousands of them) are re-thinned in one batch (:func:`_rethin`). ``boxes``:
    ``ndimage.find_objects(labels)`` when known (at least for ``which``).
    """
    # a piece of skeleton lies in one component: count the pieces of every component at once, from the skeleton's
    # voxels (a few thousand) rather than a labelling of the whole box
    at = np.argwhere(skel)
    src, dst, _ = neighbour_links(at, skel.shape)
    n, piece_of = connected_components(coo_matrix((np.ones(len(src), bool), (src, dst)), shape=(len(at),) * 2),
                                       directed=False)
    first = np.unique(piece_of, return_index=True)[1]  # a voxel of every piece
    per_component = np.bincount(labels[tuple(at[first].T)], minlength=int(labels.max()) + 1)
    boxes = ndimage.find_objects(labels) if boxes is None else boxes
    windows = []
    for lab in which:
        box = boxes[lab - 1]
        if box is None or per_component[lab] == 1:
            continue
        grown = tuple(slice(max(b.start - 2, 0), b.stop + 2) for b in box)
        windows.append((labels[grown] == lab, grown))
    _rethin(skel, windows)
    return skel
