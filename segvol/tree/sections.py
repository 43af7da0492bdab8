"""Cross-sections of a vessel perpendicular to its smoothed centreline, measured to sub-voxel precision.

At every centreline sample the mask (or a probability map) is interpolated trilinearly
(``scipy.ndimage.map_coordinates``, order 1) along :data:`RAYS` rays in the plane perpendicular to the tangent of
the Gaussian-smoothed centreline. On each ray the lumen's edge is where the interpolated value first falls below
0.5, found to sub-voxel precision by linear interpolation between the two samples around it. The lumen area is the
sum of the sectors between the edge points, ``½ Σ ρ² Δθ`` (exact for a circle, and for any lumen seen whole from the
centre); the equivalent radius is ``sqrt(area / π)``; the minimum and maximum diameters are the smallest and
largest widths ``ρ(θ) + ρ(θ + π)``.

A centreline point off the lumen's axis (smoothing cuts corners) is moved to the centroid of the lumen it finds and
the section cut again there (:data:`RECENTRE` times). A ray that finds no edge within its reach runs along another
branch: the section is ``open`` (it cuts a junction), as is a section whose centre lies outside the lumen.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage

from segvol.tree.distance import runs_end_to_end

__all__ = ["Sections", "cross_sections", "tangents", "plane_axes", "RAYS"]

RAYS = 16  # rays per section (even: opposite rays give the widths)
STEPS = 24  # samples per ray
CHUNK = 1024  # sections sampled together (bounds the memory)
RECENTRE = 1  # times a section is cut again around its lumen's centroid ...
OFF_CENTRE = 1.0  # ... when that lies more than this many ray steps away
LEVEL = 0.5  # the lumen's edge in the interpolated mask or probability


@dataclass
class Sections:
    """Per centreline sample: lumen area (mm²), equivalent radius, min and max diameter (mm), and whether a ray
    ran out of reach or the section found no lumen (the plane cuts a junction or another vessel)."""

    area: np.ndarray
    radius: np.ndarray
    diameter_min: np.ndarray
    diameter_max: np.ndarray
    open: np.ndarray
    centre: np.ndarray  # (n, 3) the lumen centroid each section was last cut around


def tangents(points: np.ndarray, sigma_mm: float, bounds: np.ndarray | None = None) -> np.ndarray:
    """Unit tangents of polylines laid end to end (``points`` (n, 3); polyline ``i`` is
    ``[bounds[i], bounds[i + 1])``, one polyline without ``bounds``) from their Gaussian-smoothed copies
    (``sigma_mm`` along them; each polyline's ends repeated beyond them): one filter over all of them."""
    n = len(points)
    bounds = np.array([0, n]) if bounds is None else np.asarray(bounds)
    if n < 2:
        return np.tile([0.0, 0.0, 1.0], (n, 1))
    lengths = np.diff(bounds)
    steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    step = float(np.median(steps)) if len(steps) else 1.0
    sigma = max(sigma_mm / max(step, 1e-9), 0.5)
    pad = int(np.ceil(4 * sigma)) + 1
    start, run, local = runs_end_to_end(lengths + 2 * pad)
    source = bounds[:-1][run] + np.clip(local - pad, 0, lengths[run] - 1)
    smooth = ndimage.gaussian_filter1d(points[source], sigma, axis=0, mode="nearest")
    t = np.zeros_like(smooth)
    t[1:-1] = smooth[2:] - smooth[:-2]
    t = t[(local >= pad) & (local < lengths[run] + pad)]
    norm = np.linalg.norm(t, axis=1, keepdims=True)
    bad = norm[:, 0] < 1e-9
    if bad.any():  # a degenerate stretch (one point, or none apart): the z axis
        t[bad] = [0.0, 0.0, 1.0]
        norm = np.linalg.norm(t, axis=1, keepdims=True)
    return t / norm


def plane_axes(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors (n, 3) spanning the planes perpendicular to the unit tangents ``t`` (n, 3)."""
    least = np.argmin(np.abs(t), axis=1)
    e = np.zeros_like(t)
    e[np.arange(len(t)), least] = 1.0
    u = np.cross(t, e)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return u, np.cross(t, u)


def _edges(values: np.ndarray, reach: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of the first crossing below :data:`LEVEL` along each ray (n, RAYS, STEPS), and whether the ray
    found none (then its reach)."""
    below = values < LEVEL
    found = below.any(axis=-1)
    j = np.argmax(below, axis=-1)
    prev = np.take_along_axis(values, np.maximum(j - 1, 0)[..., None], axis=-1)[..., 0]
    here = np.take_along_axis(values, j[..., None], axis=-1)[..., 0]
    frac = np.clip((prev - LEVEL) / np.maximum(prev - here, 1e-9), 0.0, 1.0)
    h = reach / (STEPS - 1)
    rho = np.where(j > 0, (j - 1 + frac) * h[:, None], 0.0)
    rho = np.where(found, rho, reach[:, None])
    return rho, np.logical_not(found)


def cross_sections(field: np.ndarray, to_index: np.ndarray, points: np.ndarray, tangent: np.ndarray,
                   reach: np.ndarray, *, mode: str = "constant", fork: bool = False) -> Sections:
    """Measure the lumen at ``points`` (n, 3, scanner mm) in the planes perpendicular to ``tangent`` (n, 3).

    Args:
        field: the mask (0/1) or a probability map (0-1), any numeric dtype.
        to_index: 4x4 scanner mm -> index into ``field``.
        points: section centres; tangent: unit tangents there.
        reach: how far each section's rays look (mm); a ray finding no edge that far is ``open``.
        mode: ``map_coordinates``'s mode beyond ``field`` ("constant": outside; "nearest": the border continues).
        fork: with more than :data:`CHUNK` sections, cut the later chunks in a forked child
            (:class:`segvol.viz.workers.Beside`) while this process cuts the first ones: each section is cut on its
            own, in the same chunks, so the numbers are the same.
    """
    n = len(points)
    if fork and n > CHUNK:
        from segvol.viz.workers import Beside

        half = CHUNK * -(-n // (2 * CHUNK))  # whole chunks
        with Beside(lambda: cross_sections(field, to_index, points[half:], tangent[half:], reach[half:],
                                           mode=mode)) as other:
            first = cross_sections(field, to_index, points[:half], tangent[:half], reach[:half], mode=mode)
            second = other.result()
        return Sections(*(np.concatenate([getattr(first, f.name), getattr(second, f.name)]) for f in fields(Sections)))
    u, v = plane_axes(tangent)
    centre = np.array(points, dtype=np.float64)
    rho = np.zeros((n, RAYS))
    is_open = np.zeros((n, RAYS), bool)
    for a in range(0, n, CHUNK):
        b = min(a + CHUNK, n)
        todo = np.arange(a, b)
        for _ in range(RECENTRE + 1):  # again where the lumen's centroid lies off the centre
            rho[todo], is_open[todo], dirs = _cut(field, to_index, centre[todo], u[todo], v[todo], reach[todo], mode)
            shift = _centroid(rho[todo], dirs)
            centre[todo] += shift
            closed = ~is_open[todo].any(axis=1)  # an open section's centroid says nothing
            todo = todo[closed & (np.linalg.norm(shift, axis=1) > OFF_CENTRE * reach[todo] / STEPS)]
    area = 0.5 * np.sum(rho**2, axis=1) * (2 * np.pi / RAYS)
    widths = rho[:, : RAYS // 2] + rho[:, RAYS // 2:]
    return Sections(area, np.sqrt(area / np.pi), widths.min(axis=1), widths.max(axis=1),
                    is_open.any(axis=1) | (area <= 0), centre)


def _cut(field: np.ndarray, to_index: np.ndarray, centre: np.ndarray, u: np.ndarray, v: np.ndarray,
         reach: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edge distance and openness per ray (n, RAYS) of the sections at ``centre``, and the rays' directions."""
    theta = np.arange(RAYS) * (2 * np.pi / RAYS)
    dirs = np.cos(theta)[None, :, None] * u[:, None] + np.sin(theta)[None, :, None] * v[:, None]
    frac = np.linspace(0.0, 1.0, STEPS, dtype=np.float32)
    start = (centre @ to_index[:3, :3].T + to_index[:3, 3]).astype(np.float32)  # in index space from here
    step = (dirs @ to_index[:3, :3].T * reach[:, None, None]).astype(np.float32)
    idx = start[:, None, None, :] + step[:, :, None, :] * frac[None, None, :, None]
    vals = ndimage.map_coordinates(field, idx.reshape(-1, 3).T, output=np.float32, order=1, mode=mode, cval=0.0,
                                   prefilter=False)
    rho, is_open = _edges(vals.reshape(len(centre), RAYS, STEPS), reach)
    return rho, is_open, dirs


def _centroid(rho: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Offset (n, 3) from the section centres to the centroids of their lumens (zero where no lumen was found)."""
    area = 0.5 * np.sum(rho**2, axis=1)
    moment = np.einsum("nr,nrk->nk", rho**3, dirs) / 3.0
    return np.where(area[:, None] > 0, moment / np.maximum(area, 1e-12)[:, None], 0.0)
