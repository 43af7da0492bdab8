"""BraTS-like brain MRI phantoms: four sequences and a tumour label map in the 2020 release layout.

A phantom is a skull-stripped brain on a zero background: a lumpy ellipsoid whose folded cortical ribbon (grey
matter) and sulcal/interhemispheric CSF surround white matter, deep grey nuclei and two lateral ventricles, with a
few vessels and the choroid plexus that enhance on T1ce although they are not tumour. One glioma sits in a
hemisphere: a necrotic core (label 1) inside an irregular enhancing rim of varying thickness (label 4), wrapped in
edema (label 2) that spreads along white matter. Each sequence has its own contrast, as in real MRI:

=====  ====  ====  ====  =====  ========  ==========
seq    WM    GM    CSF   edema  necrosis  enhancing
=====  ====  ====  ====  =====  ========  ==========
FLAIR  1.0   1.25  0.3   ~1.9   ~1.4      ~1.7
T1     1.0   0.7   0.3   0.75   0.45      0.85
T1ce   1.0   0.75  0.3   0.8    0.45      ~2.3
T2     0.6   0.85  2.2   ~1.7   ~2.1      1.4
=====  ====  ====  ====  =====  ========  ==========

(per-case jitter, a smooth texture, a per-sequence bias field, a scanner gain, partial volume and noise on top).
The anatomy is designed in millimetres for the real 240 x 240 x 155 mm field of view and scaled to smaller grids;
the tumour shrinks less than the brain so that its rim stays a few voxels thick on the ``small`` grid.

Scene axes: +x patient left, +y posterior, +z superior (the voxel axes of the LPS-stored real data, whose affine is
``diag(-1, -1, 1)`` with the origin at ``(0, 239, 0)``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = ["SIZES", "SEQUENCES", "sample_shape", "make_brats_phantom", "brats_affine", "write_brats_case"]

SEQUENCES = ("flair", "t1", "t1ce", "t2")
SIZES = {"full": dict(inplane=(240, 240), slices=(155, 155)), "small": dict(inplane=(88, 100), slices=(60, 68))}
WM, GM, CSF, DEEP, VESSEL, EDEMA, NECROSIS, ENHANCING = range(1, 9)
_CONTRAST = {  # tissue -> (flair, t1, t1ce, t2), relative to white matter
    WM: (1.0, 1.0, 1.0, 0.6), GM: (1.25, 0.7, 0.75, 0.85), CSF: (0.3, 0.3, 0.3, 2.2), DEEP: (1.15, 0.8, 0.85, 0.8),
    VESSEL: (0.9, 0.9, 2.1, 0.4), EDEMA: (1.9, 0.75, 0.8, 1.7), NECROSIS: (1.4, 0.45, 0.45, 2.1),
    ENHANCING: (1.7, 0.85, 2.3, 1.4),
}
_LABEL = {EDEMA: 2, NECROSIS: 1, ENHANCING: 4}


def sample_shape(size: str, rng: np.random.Generator) -> tuple[int, int, int]:
    """A grid inside ``SIZES[size]`` (1 mm voxels)."""
    spec = SIZES[size]
    n = int(rng.integers(spec["inplane"][0], spec["inplane"][1] + 1))
    return n, n, int(rng.integers(spec["slices"][0], spec["slices"][1] + 1))


def brats_affine(shape: tuple[int, int, int], spacing: float = 1.0) -> np.ndarray:
    """The real data's LPS affine: ``diag(-s, -s, s)`` with the origin at ``(0, (ny - 1) * s, 0)``."""
    affine = np.diag([-spacing, -spacing, spacing, 1.0])
    affine[:3, 3] = [0.0, (shape[1] - 1) * spacing, 0.0]
    return affine


def _field(shape: tuple[int, ...], rng: np.random.Generator, cells: float) -> np.ndarray:
    """A smooth random field with about ``cells`` bumps along the longest axis, roughly unit standard deviation."""
    coarse_shape = tuple(max(3, int(np.ceil(n / max(shape) * cells)) + 2) for n in shape)
    coarse = rng.normal(size=coarse_shape).astype(np.float32)
    zoom = [n / c for n, c in zip(shape, coarse_shape)]
    out = ndimage.zoom(coarse, zoom, order=1, mode="nearest", grid_mode=True)
    out = out[tuple(slice(0, n) for n in shape)]
    pad = [(0, n - m) for n, m in zip(shape, out.shape)]
    out = np.pad(out, pad, mode="edge") if any(p[1] for p in pad) else out
    return (out - out.mean()) / (out.std() + 1e-6)


def _coords(shape: tuple[int, int, int], spacing: float) -> list[np.ndarray]:
    return [((np.arange(n) - (n - 1) / 2.0) * spacing).reshape([-1 if d == a else 1 for a in range(3)])
            for d, n in enumerate(shape)]


def _level(coords: list[np.ndarray], center: np.ndarray, axes: np.ndarray) -> np.ndarray:
    return np.sqrt(sum(((coords[d] - center[d]) / axes[d]) ** 2 for d in range(3)))


def _anatomy(shape: tuple[int, int, int], spacing: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Tissue codes of a healthy brain (0 outside) and the anatomy's scale factor."""
    coords = _coords(shape, spacing)
    scale = min(shape[0] * spacing / 240, shape[1] * spacing / 240, shape[2] * spacing / 155)
    j = lambda s: rng.uniform(1 - s, 1 + s)  # noqa: E731  (jitter)
    centre = np.array([0.0, 4.0, -8.0]) * scale
    q = _level(coords, centre, np.array([66 * j(0.05), 84 * j(0.05), 60 * j(0.05)]) * scale)
    q = q * (1 + 0.05 * _field(shape, rng, 5))
    tissue = np.zeros(shape, np.uint8)
    tissue[q < 1] = WM
    folds = _field(shape, rng, 14 / max(scale, 0.3) ** 0.5)
    tissue[(q < 1) & (q > 0.84 + 0.05 * folds)] = GM
    sulci = (q < 1) & (((q > 0.955) & (folds > -0.5)) | ((q > 0.86) & (folds > 1.1)))
    midline = np.abs(coords[0] - centre[0]) < max(1.2 * scale, 0.8)
    fissure = midline & (q > 0.35) & (coords[2] > centre[2] - 20 * scale)
    tissue[sulci | (fissure & (q < 1))] = CSF
    for side in (-1, 1):
        deep = _level(coords, centre + np.array([side * 15, 2, 2]) * scale, np.array([9, 14, 9]) * scale * j(0.1))
        tissue[deep < 1] = DEEP
        vent = _level(coords, centre + np.array([side * 6, -2, 10]) * scale, np.array([4.5, 24, 7]) * scale * j(0.1))
        tissue[vent < 1] = CSF
        plexus = _level(coords, centre + np.array([side * 6, 10, 8]) * scale, np.array([2, 5, 2]) * scale + 1)
        tissue[plexus < 1] = VESSEL
    for _ in range(int(rng.integers(5, 10))):  # cortical vessels near the surface
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        spot = centre + direction * np.array([62, 80, 56]) * scale * rng.uniform(0.85, 0.97)
        tissue[(_level(coords, spot, np.full(3, max(2.5 * scale, 1.2) * j(0.3))) < 1) & (q < 1)] = VESSEL
    return tissue, scale


def _add_tumour(tissue: np.ndarray, spacing: float, scale: float, rng: np.random.Generator) -> None:
    """Paint edema, an enhancing rim of varying thickness and a necrotic core into ``tissue``."""
    shape = tissue.shape
    coords = _coords(shape, spacing)
    tscale = max(scale, 0.55)  # the tumour shrinks less than the brain
    brain = tissue > 0
    inside = np.argwhere(ndimage.binary_erosion(brain, iterations=max(2, int(12 * scale))))
    for _ in range(50):  # a centre off the midline, inside the brain
        c = inside[rng.integers(len(inside))]
        if abs(c[0] - (shape[0] - 1) / 2) > 0.18 * shape[0] and tissue[tuple(c)] in (WM, DEEP):
            break
    centre = np.array([coords[d].ravel()[c[d]] for d in range(3)])
    axes = rng.uniform(0.8, 1.2, 3)
    dist = _level(coords, centre, axes)
    r_et = rng.uniform(10, 18) * tscale
    rim = max(rng.uniform(3.0, 5.5) * tscale, 2.2)
    r_ed = r_et * rng.uniform(1.5, 2.1)
    edema = (dist * (1 + 0.3 * _field(shape, rng, 8)) < r_ed) & brain & (tissue != CSF)
    edema &= (tissue == WM) | (dist < 0.75 * r_ed)  # spreads along white matter
    tissue[edema] = EDEMA
    wobble = dist * (1 + 0.15 * _field(shape, rng, 10))
    core = (wobble < r_et) & brain
    tissue[core] = ENHANCING
    thickness = rim * (1 + 0.45 * _field(shape, rng, 12))
    tissue[core & (wobble < r_et - np.maximum(thickness, 1.0))] = NECROSIS


def _render(tissue: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The four sequences as int16 images (zero outside the brain)."""
    brain = tissue > 0
    texture = _field(tissue.shape, rng, 24)
    images = {}
    for s, name in enumerate(SEQUENCES):
        table = np.zeros(max(_CONTRAST) + 1, np.float32)
        for code, values in _CONTRAST.items():
            spread = 0.18 if code in (EDEMA, NECROSIS, ENHANCING) else 0.05
            table[code] = values[s] * rng.uniform(1 - spread, 1 + spread)
        signal = ndimage.gaussian_filter(table[tissue], sigma=0.7, truncate=2.5)
        signal *= 1 + 0.05 * texture + 0.03 * _field(tissue.shape, rng, 30)
        signal *= np.exp(0.12 * _field(tissue.shape, rng, 2.5))  # bias field
        gain = rng.uniform(300, 1500)
        signal = signal * gain + rng.normal(0, 0.04 * gain * rng.uniform(0.7, 1.4), tissue.shape)
        images[name] = np.where(brain, np.clip(np.rint(signal), 1, 32767), 0).astype(np.int16)
    return images


def make_brats_phantom(shape: tuple[int, int, int], seed: int, spacing: float = 1.0
                       ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Build one phantom.

    Args:
        shape: voxel grid, e.g. ``(240, 240, 155)``.
        seed: anatomy, tumour, contrasts and noise are a deterministic function of ``seed``.
        spacing: isotropic voxel size in mm.

    Returns:
        ``(images, seg, affine)``: ``{sequence: int16 volume}``, a uint8 label map with values {0, 1, 2, 4} and
        the LPS affine of the real data.
    """
    rng = np.random.default_rng(seed)
    tissue, scale = _anatomy(shape, spacing, rng)
    _add_tumour(tissue, spacing, scale, rng)
    seg = np.zeros(shape, np.uint8)
    for code, value in _LABEL.items():
        seg[tissue == code] = value
    return _render(tissue, rng), seg, brats_affine(shape, spacing)


def write_brats_case(out: Path, index: int, size: str, seed: int) -> list[Path]:
    """Write ``BraTS20_Training_<index>/BraTS20_Training_<index>_{flair,t1,t1ce,t2,seg}.nii.gz`` into ``out``."""
    from segvol.io.nifti import save_nifti

    case_seed = seed * 100_003 + index
    shape = sample_shape(size, np.random.default_rng(case_seed))
    images, seg, affine = make_brats_phantom(shape, case_seed)
    case = f"BraTS20_Training_{index:03d}"
    paths = []
    for name, array in [*images.items(), ("seg", seg)]:
        path = Path(out) / case / f"{case}_{name}.nii.gz"
        save_nifti(array, affine, path)
        paths.append(path)
    return paths
