"""Reading and writing what every stage shares: NIfTI volumes, masks, DICOM series, and the one grid type.

:mod:`segvol.io.grid` (``Grid``, ``grid_mismatch``), :mod:`segvol.io.nifti` (headers, checks, in-memory scans,
writing on an input's grid), :mod:`segvol.io.masks` (masks and folders of them), :mod:`segvol.io.dicom` (series).
Modules are imported on demand; this package imports no stage of segvol.
"""

from __future__ import annotations

__all__: list[str] = []
