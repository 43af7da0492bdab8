"""ImageCAS-like cardiac CT angiography phantoms with coronary artery labels.

The scene is built in millimetres and rasterised on the scan's own grid, so the same anatomy appears at any
resolution. A phantom holds air around a body of soft tissue, two lungs (about -800 HU), a spine, a heart whose
myocardium wraps a contrast-filled blood pool, the ascending and descending aorta (300-450 HU), epicardial fat,
and two coronary trees that leave the aortic root as thin, curved, branching tubes lying on the heart's surface
and tapering from about 2.5 to 0.5 mm radius. They run as the arteries do: on the left the anterior descending
artery down the front to the apex and the circumflex round the left atrioventricular groove, on the right the right
coronary artery the other way round its groove to the back of the heart and down towards the apex; each tree keeps
to its own side, at least :data:`TREE_GAP_VOXELS` empty voxels from the other. Partial-volume edges, a slight blur
and noise make the thin branches faint. Only the coronary trees are labelled: the aorta and the blood pool are as
bright but are not.

Scene axes: +x patient left, +y posterior, +z superior (the voxel axes of an LPS-stored scan).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["PhantomGeometry", "SIZES", "sample_geometry", "make_imagecas_phantom", "Centreline", "TREE_GAP_VOXELS"]

TREE_GAP_VOXELS = 2  # empty voxels at least between the left and the right coronary tree (26-connected)
GROOVE_LEVEL = -0.6  # the atrioventricular groove: this fraction of the long half axis from the centre to the base
STEER_GAIN = 0.3  # how strongly a main artery keeps to its groove, against its random winding (per 1 mm step)


@dataclass(frozen=True)
class PhantomGeometry:
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]  # mm per voxel along i, j, k


# full: the real ImageCAS grid ranges; small: a few-second-to-train phantom for tests and the demo.
SIZES: dict[str, dict[str, tuple[Any, Any]]] = {
    "full": dict(inplane=(512, 512), slices=(206, 275), inplane_mm=(0.29, 0.43), slice_mm=(0.25, 0.45)),
    "small": dict(inplane=(88, 104), slices=(56, 72), inplane_mm=(0.75, 0.9), slice_mm=(0.9, 1.1)),
}


def sample_geometry(size: str, rng: np.random.Generator) -> PhantomGeometry:
    """Draw a grid (shape and spacing) inside the ranges of ``SIZES[size]``."""
    spec = SIZES[size]
    n = int(rng.integers(spec["inplane"][0], spec["inplane"][1] + 1))
    nz = int(rng.integers(spec["slices"][0], spec["slices"][1] + 1))
    s = float(rng.uniform(*spec["inplane_mm"]))
    t = float(rng.uniform(*spec["slice_mm"]))
    return PhantomGeometry(shape=(n, n, nz), spacing=(round(s, 4), round(s, 4), round(t, 4)))


class _Canvas:
    """Voxel grid with scene (mm) coordinates centred on the grid; shapes are painted inside their bounding box."""

    def __init__(self, geom: PhantomGeometry, background: float) -> None:
        self.shape = geom.shape
        self.spacing = np.asarray(geom.spacing, dtype=np.float64)
        self.origin = -(np.asarray(geom.shape) - 1) / 2.0 * self.spacing  # mm of voxel (0, 0, 0)
        self.hu = np.full(geom.shape, background, dtype=np.float32)

    def box(self, lo_mm: np.ndarray, hi_mm: np.ndarray) -> tuple[tuple[slice, ...], tuple[np.ndarray, ...]] | None:
        lo = np.floor((np.asarray(lo_mm) - self.origin) / self.spacing).astype(int)
        hi = np.ceil((np.asarray(hi_mm) - self.origin) / self.spacing).astype(int) + 1
        lo, hi = np.maximum(lo, 0), np.minimum(hi, self.shape)
        if np.any(hi <= lo):
            return None
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        axes = [self.origin[d] + self.spacing[d] * np.arange(lo[d], hi[d]) for d in range(3)]
        return sl, np.meshgrid(*axes, indexing="ij", sparse=True)

    def ellipsoid(self, center, axes, value: float, rotation: np.ndarray | None = None, infinite_z=False) -> None:
        """Paint a (possibly rotated) ellipsoid, or an elliptic cylinder along z when ``infinite_z``."""
        center, axes = np.asarray(center, float), np.asarray(axes, float)
        reach = np.full(3, axes.max()) if rotation is not None else axes.copy()
        if infinite_z:
            reach[2] = 1e6
        found = self.box(center - reach, center + reach)
        if found is None:
            return
        sl, (x, y, z) = found
        d = [x - center[0], y - center[1], z - center[2]]
        if rotation is not None:  # coordinates in the ellipsoid's own frame
            d = [rotation[0, i] * d[0] + rotation[1, i] * d[1] + rotation[2, i] * d[2] for i in range(3)]
        q = (d[0] / axes[0]) ** 2 + (d[1] / axes[1]) ** 2
        if not infinite_z:
            q = q + (d[2] / axes[2]) ** 2
        self.hu[sl][np.broadcast_to(q <= 1.0, self.hu[sl].shape)] = value


def _rotation(rng: np.random.Generator, yaw: float, pitch: float) -> np.ndarray:
    """Columns are the ellipsoid's axes in scene coordinates (long axis = column 0)."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    return rz @ ry


class _Heart:
    """An ellipsoidal epicardial surface on which the coronary arteries run."""

    def __init__(self, center: np.ndarray, axes: np.ndarray, rot: np.ndarray) -> None:
        self.center, self.axes, self.rot = center, axes, rot

    def to_local(self, p: np.ndarray) -> np.ndarray:
        return self.rot.T @ (p - self.center)

    def project(self, p: np.ndarray, lift: float) -> np.ndarray:
        """Move ``p`` radially onto the surface inflated by ``lift`` mm."""
        q = self.to_local(p)
        level = np.sqrt(np.sum((q / self.axes) ** 2))
        q_surf = q / max(level, 1e-6)
        q_surf = q_surf + lift * q_surf / (np.linalg.norm(q_surf) + 1e-6)
        return self.center + self.rot @ q_surf

    def around(self, p: np.ndarray, sense: float) -> np.ndarray:
        """The unit direction at ``p`` around the long axis: anticlockwise seen from the apex for ``sense`` 1,
        clockwise for -1."""
        d = np.cross(self.rot[:, 0], p - self.center)
        return sense * d / (np.linalg.norm(d) + 1e-9)

    def groove(self, sense: float, stop: np.ndarray, margin: float) -> Callable[[np.ndarray], np.ndarray]:
        """A steer for :func:`_walk` (the direction to head in from a point) along an atrioventricular groove: around
        the long axis in ``sense`` at :data:`GROOVE_LEVEL` until ``margin`` radians short of the side of the heart
        that faces the scene direction ``stop``, then down towards the apex."""
        apex = self.rot[:, 0]
        q_stop = self.rot.T @ np.asarray(stop, float)
        theta_stop = np.arctan2(q_stop[2], q_stop[1]) - sense * margin

        def steer(p: np.ndarray) -> np.ndarray:
            q = self.to_local(p)
            ahead = np.degrees(sense * (theta_stop - np.arctan2(q[2], q[1]))) % 360
            if not 3 < ahead < 270:  # at (or past) the turn
                return apex
            d = self.around(p, sense) + 3.0 * (GROOVE_LEVEL - q[0] / self.axes[0]) * apex
            return d / np.linalg.norm(d)
        return steer

    def normal(self, p: np.ndarray) -> np.ndarray:
        g = self.rot @ (self.to_local(p) / self.axes**2)
        return g / (np.linalg.norm(g) + 1e-9)


@dataclass
class _Tube:
    points: np.ndarray  # (n, 3) mm
    radii: np.ndarray  # (n,) mm
    kind: str = "main"  # trunk, main or side


@dataclass(frozen=True)
class Centreline:
    """The known geometry of one generated tube, for testing centreline extraction (``segvol tree``).

    ``points_mm`` (n, 3) in the phantom's scanner mm (through its affine), 1 mm apart; ``radii_mm`` (n,). ``tree``
    is ``left`` or ``right``; ``kind`` is ``trunk`` (from the ostium), ``main`` (starts at the trunk's end) or
    ``side`` (starts on the preceding ``main`` tube).
    """

    tree: str
    kind: str
    points_mm: np.ndarray
    radii_mm: np.ndarray


def _walk(heart: _Heart, start, direction, length, r0, r1, rng, lift, curl=0.15, steer=None) -> _Tube:
    """A smooth random curve on the heart's surface, 1 mm per step, radius tapering from r0 to r1; ``steer`` (a
    function of the current point) pulls each step towards the artery's anatomical course."""
    n = max(int(length), 2)
    p, d = heart.project(np.asarray(start, float), lift), np.asarray(direction, float)
    pts, turn = [p], rng.normal(0, curl, 3)
    for _ in range(n - 1):
        nrm = heart.normal(p)
        turn = 0.85 * turn + rng.normal(0, curl, 3)
        if steer is not None:
            d = d + STEER_GAIN * steer(p)
        d = d + turn - np.dot(d + turn, nrm) * nrm
        d /= np.linalg.norm(d) + 1e-9
        p = heart.project(p + d, lift)
        pts.append(p)
    radii = np.linspace(r0, r1, n)
    return _Tube(np.asarray(pts), radii)


def _tree(heart, ostium, root_dirs, r0, rmin, rng, scale, lift) -> list[_Tube]:
    """A coronary tree: a short trunk from the ostium to the heart, main branches, and side branches.

    ``root_dirs`` is the trunk's direction, then ``(direction, length, steer)`` per main branch: its first direction
    (a function of the trunk's end), its length (mm at scale 1) and its steer (see :func:`_walk`).
    """
    first = heart.project(ostium + 6 * scale * np.asarray(root_dirs[0]), lift)
    trunk = np.linspace(ostium, first, 8)
    tubes = [_Tube(trunk, np.full(len(trunk), r0), "trunk")]
    for direction, length, steer in root_dirs[1:]:
        main = _walk(heart, first, direction(first), length * scale, r0 * 0.9, rmin, rng, lift, curl=0.06,
                     steer=steer)
        tubes.append(main)
        n_side = int(rng.integers(2, 5))
        for at in np.sort(rng.uniform(0.15, 0.75, n_side)):
            k = int(at * (len(main.points) - 1))
            p, tangent = main.points[k], main.points[min(k + 1, len(main.points) - 1)] - main.points[max(k - 1, 0)]
            side = np.cross(heart.normal(p), tangent)
            side *= rng.choice([-1.0, 1.0]) / (np.linalg.norm(side) + 1e-9)
            side_dir = side + 0.6 * tangent / (np.linalg.norm(tangent) + 1e-9)
            r_here = max(main.radii[k] * rng.uniform(0.55, 0.8), rmin)
            branch = _walk(heart, p, side_dir, rng.uniform(20, 45) * scale, r_here, rmin, rng, lift)
            branch.kind = "side"
            tubes.append(branch)
    return tubes


def _rasterise_tubes(canvas: _Canvas, tubes: list[_Tube]) -> np.ndarray:
    """Signed distance (mm) to the union of tapered tubes: negative inside; +inf far away."""
    sdf = np.full(canvas.shape, np.inf, dtype=np.float32)
    for tube in tubes:
        for a, b, ra, rb in zip(tube.points[:-1], tube.points[1:], tube.radii[:-1], tube.radii[1:]):
            pad = max(ra, rb) + 2 * canvas.spacing.max()
            found = canvas.box(np.minimum(a, b) - pad, np.maximum(a, b) + pad)
            if found is None:
                continue
            sl, (x, y, z) = found
            ab = b - a
            t = ((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / max(np.dot(ab, ab), 1e-9)
            t = np.clip(t, 0.0, 1.0)
            dist = np.sqrt((x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (z - a[2] - t * ab[2]) ** 2)
            np.minimum(sdf[sl], (dist - (ra + t * (rb - ra))).astype(np.float32), out=sdf[sl])
    return sdf


def _apart(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Where the right tree may lie: the largest 26-connected part of ``right`` that keeps at least
    :data:`TREE_GAP_VOXELS` voxels away from ``left``, grown by a voxel for its partial-volume edge (never into that
    gap). Two coronary trees never touch; the parts of the right one cut off where it would meet the left are left
    out of the scene (the known centrelines still hold them)."""
    full = np.ones((3, 3, 3), bool)
    near = ndimage.binary_dilation(left, structure=full, iterations=TREE_GAP_VOXELS)
    labels, n = ndimage.label(right & ~near, structure=full)
    if n == 0:
        return np.zeros_like(right)
    keep = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    return ndimage.binary_dilation(keep, structure=full) & ~near


def make_imagecas_phantom(geom: PhantomGeometry, seed: int, centrelines: list[Centreline] | None = None
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Build one phantom.

    Args:
        geom: voxel grid (shape and spacing).
        seed: anatomy, branching, intensities and noise are a deterministic function of ``seed``.
        centrelines: when a list is given, the coronary tubes' known geometry is appended to it (:class:`Centreline`).

    Returns:
        ``(image, label, affine)``: int16 HU volume, uint8 artery mask {0, 1}, and a 4x4 LPS-style affine
        (voxel axes along -x, -y, +z of RAS world, origin at a scanner-like offset).
    """
    rng = np.random.default_rng(seed)
    canvas = _Canvas(geom, background=-1000.0)
    fov = float(min(geom.shape[0] * geom.spacing[0], geom.shape[1] * geom.spacing[1]))
    fov_z = float(geom.shape[2] * geom.spacing[2])
    scale = min(fov / 180.0, fov_z / 100.0)  # anatomy is designed for a 180 x 180 x 100 mm field of view
    j = lambda s: rng.uniform(1 - s, 1 + s)  # noqa: E731  (jitter)

    canvas.ellipsoid([0, 5 * scale, 0], [0.62 * fov * j(0.03), 0.5 * fov * j(0.03), 1], 40 * j(0.5), infinite_z=True)
    for side in (-1, 1):  # lungs
        canvas.ellipsoid([side * 0.33 * fov, 0.08 * fov, 0], [0.2 * fov * j(0.1), 0.3 * fov * j(0.1), 1],
                         -820 + rng.normal(0, 20), infinite_z=True)
    canvas.ellipsoid([0, 0.42 * fov, 0], [0.07 * fov, 0.06 * fov, 1], 650 * j(0.1), infinite_z=True)  # spine
    blood = float(rng.uniform(320, 450))
    canvas.ellipsoid([0.1 * fov, 0.28 * fov, 0], [0.065 * fov, 0.065 * fov, 1], blood * j(0.05), infinite_z=True)
    center = np.array([0.06 * fov, -0.06 * fov, -0.05 * fov_z]) * j(0.1)
    axes = np.array([54.0, 43.0, 43.0]) * scale * j(0.06)
    rot = _rotation(rng, yaw=rng.uniform(0.5, 0.9), pitch=rng.uniform(0.3, 0.7))
    heart = _Heart(center, axes, rot)
    canvas.ellipsoid(center, axes + 5 * scale, -90 + rng.normal(0, 10), rotation=rot)  # epicardial fat
    canvas.ellipsoid(center, axes, 110 * j(0.2), rotation=rot)  # myocardium
    canvas.ellipsoid(center + rot[:, 0] * 22 * scale, axes * [0.55, 0.6, 0.6], blood, rotation=rot)  # left ventricle
    canvas.ellipsoid(center - rot[:, 0] * 22 * scale, axes * [0.45, 0.7, 0.65], blood * 0.7, rotation=rot)  # atria
    root = center - rot[:, 0] * 36 * scale + np.array([0, -4.0, 0.0]) * scale
    aorta_r = 13.5 * scale * j(0.1)
    canvas.ellipsoid(root + [0, 0, 0.5 * fov], [aorta_r, aorta_r, 0.5 * fov], blood * j(0.05))  # ascending aorta
    canvas.ellipsoid(root, [aorta_r * 1.25] * 3, blood * j(0.05))  # aortic root (sinus)

    r0, rmin, lift = 2.5 * max(scale, 0.7), 0.5 if scale > 0.7 else 0.8, 1.5 * scale + 0.5
    apex = rot[:, 0]
    left_ostium = root + np.array([0.9, -0.2, 0.0]) * aorta_r * 1.25
    right_ostium = root + np.array([-0.5, -0.85, 0.0]) * aorta_r * 1.25
    # The left anterior descending artery runs down the front of the heart to the apex and the circumflex round the
    # left atrioventricular groove, turning down well short of the back; the right coronary artery runs the other way
    # round, in the right groove, to the back and then down towards the apex. Each tree so keeps to its own side.
    back = np.array([0.0, 1.0, 0.0])
    lad = (lambda p: apex - [0, 0.4, 0], 110, lambda p: apex)
    circumflex = (lambda p: heart.around(p, -1) + 0.3 * apex, 80, heart.groove(-1, back, np.radians(50)))
    rca = (lambda p: heart.around(p, 1) + 0.3 * apex, 100, heart.groove(1, back, np.radians(20)))
    left = _tree(heart, left_ostium, [[1, -0.3, -0.2], lad, circumflex], r0, rmin, rng, scale, lift)
    right = _tree(heart, right_ostium, [[-0.6, -0.8, -0.1], rca], r0 * 0.95, rmin, rng, scale, lift)
    sdf = _rasterise_tubes(canvas, left)
    sdf_right = _rasterise_tubes(canvas, right)
    sdf_right[~_apart(sdf <= 0, sdf_right <= 0)] = np.inf
    np.minimum(sdf, sdf_right, out=sdf)

    h = float(canvas.spacing.mean())
    occupancy = np.clip(0.5 - sdf / h, 0.0, 1.0)  # partial volume over one voxel
    canvas.hu += occupancy * (blood * j(0.08) - canvas.hu)
    hu = ndimage.gaussian_filter(canvas.hu, sigma=0.6, truncate=2.5)
    hu += rng.normal(0.0, rng.uniform(15, 35), size=hu.shape).astype(np.float32)
    image = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    label = (sdf <= 0).astype(np.uint8)

    affine = np.diag([-geom.spacing[0], -geom.spacing[1], geom.spacing[2], 1.0])
    affine[:3, 3] = [geom.shape[0] * geom.spacing[0] / 2 + rng.uniform(-20, 20),
                     geom.shape[1] * geom.spacing[1] / 2 + 150 + rng.uniform(-20, 20),
                     -geom.shape[2] * geom.spacing[2] / 2 - 120 + rng.uniform(-20, 20)]
    if centrelines is not None:
        for name, tubes in (("left", left), ("right", right)):
            for tube in tubes:
                vox = (tube.points - canvas.origin) / canvas.spacing
                centrelines.append(Centreline(name, tube.kind, vox @ affine[:3, :3].T + affine[:3, 3],
                                              tube.radii.copy()))
    return image, label, affine
