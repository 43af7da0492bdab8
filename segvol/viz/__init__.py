"""Pictures every stage draws: overlays of masks on scans (:mod:`segvol.viz.overlays`) and matplotlib figures
(:mod:`segvol.viz.plots`: ``pyplot``, ``save_figure``, box plots, training curves). Imports no stage of segvol.
"""

from __future__ import annotations

__all__: list[str] = []
