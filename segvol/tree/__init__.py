"""Artery trees from vessel masks: centreline graphs, cross-section radii, stenosis grades, files and pictures.

``analyse_mask`` is the array core (:mod:`segvol.tree.core`); ``write_tree`` and ``tree_file`` write the outputs
(:mod:`segvol.tree.outputs`). The steps: thinning, graph, pruning, measure (with sections), grading, figures and
cpr. See docs/tree.md.
"""

from __future__ import annotations

from segvol.tree.core import TreeAnalysis, analyse_mask
from segvol.tree.records import Lesion, Segment, Span, Tree, TreeSettings

__all__ = ["TreeAnalysis", "TreeSettings", "Tree", "Segment", "Lesion", "Span", "analyse_mask"]
