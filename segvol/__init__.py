"""segvol: 3D volumetric segmentation of medical images with MONAI.

Phantoms in the real dataset layouts, a cached MONAI transform pipeline, a 3D BasicUNet trained with DiceLoss,
sliding-window inference back onto each scan's own grid, ONNX export, and a small web app.
The Python API lives in :mod:`segvol.api`; the command line in :mod:`segvol.cli`.
"""

from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
