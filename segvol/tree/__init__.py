"""Artery trees from vessel masks: centreline graphs, per-segment measurements, files and pictures.

``analyse_mask`` is the array core (:mod:`segvol.tree.core`); ``write_tree`` and ``tree_file`` write the outputs
(:mod:`segvol.tree.outputs`). See docs/tree.md.
"""

from __future__ import annotations

from segvol.tree.core import TreeAnalysis, analyse_mask
from segvol.tree.measure import TreeSettings

__all__ = ["TreeAnalysis", "TreeSettings", "analyse_mask"]
