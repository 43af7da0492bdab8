"""The one grid type (spatial shape + voxel-to-scanner affine) and segvol's one grid comparison."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Grid", "GRID_ATOL", "grid_mismatch"]

GRID_ATOL = 1e-3  # mm (and direction cosines): two grids closer than this are one grid


@dataclass(frozen=True)
class Grid:
    """A voxel grid on its own: spatial shape and voxel -> scanner (RAS mm) affine.

    Anything that carries these two is a grid to :func:`grid_mismatch` and to the writers that save a mask on an
    input's grid (a nibabel image, a DICOM series as :func:`segvol.io.dicom.read_series` returns it, a
    preprocessed volume).
    """

    shape: tuple[int, ...]
    affine: np.ndarray


def grid_mismatch(a, b, atol: float = GRID_ATOL, origin_atol: float | None = None) -> str | None:  # noqa: ANN001
    """Why ``b``'s grid differs from ``a``'s, or None when they are one grid: segvol's one grid check.

    ``a`` and ``b`` are anything with a ``shape`` (spatial axes first) and a 4x4 ``affine``: nibabel images, DICOM
    series, check-data ``FileInfo``s, :class:`Grid`. Shapes must be equal, voxel axes (direction x
    spacing) equal within ``atol``, origins within ``origin_atol`` mm (default ``atol``). The reason reads
    ``shape (b) vs (a)``, ``spacing [b] vs [a] mm`` or ``affine differs (by up to d)``.
    """
    a_shape, b_shape = tuple(int(s) for s in a.shape[:3]), tuple(int(s) for s in b.shape[:3])
    if a_shape != b_shape:
        return f"shape {b_shape} vs {a_shape}"
    a_aff, b_aff = np.asarray(a.affine, dtype=np.float64), np.asarray(b.affine, dtype=np.float64)
    a_sp, b_sp = np.linalg.norm(a_aff[:3, :3], axis=0), np.linalg.norm(b_aff[:3, :3], axis=0)
    if not np.allclose(a_sp, b_sp, rtol=1e-3, atol=atol):
        return f"spacing {[round(float(v), 4) for v in b_sp]} vs {[round(float(v), 4) for v in a_sp]} mm"
    if not np.allclose(a_aff[:3, :3], b_aff[:3, :3], atol=atol) or \
            not np.allclose(a_aff[:3, 3], b_aff[:3, 3], atol=atol if origin_atol is None else origin_atol):
        return f"affine differs (by up to {float(np.abs(a_aff - b_aff).max()):.3g})"
    return None

