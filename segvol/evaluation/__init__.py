"""Evaluation: metrics per case and class (Dice, IoU, HD95, ASD, clDice, ...), summaries, plots, overlays,
failure analysis, the run report and TensorBoard logging. See docs/evaluation.md.

Modules are imported on demand (``segvol.evaluation.metrics`` etc.); importing this package imports nothing
heavy, so ``segvol --help`` stays instant.
"""

from __future__ import annotations

__all__: list[str] = []
