"""The artery tree as an output of ``segvol infer`` (``--output tree``, alias ``--tree``).

:func:`write_tree_output` writes ``<scan>_seg_tree/`` beside the mask; :func:`tree_writer_output` is its
``write(target, context)`` form, registered as the folder output ``tree`` in :mod:`segvol.inference.outputs`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_tree_output", "tree_writer_output"]

log = logging.getLogger(__name__)


def write_tree_output(target: Path, labels: np.ndarray, affine: np.ndarray, overwrite: bool = False,
                      prob: np.ndarray | None = None, image: np.ndarray | None = None) -> Path | None:
    """The tree folder of a predicted mask; an empty mask is reported and writes nothing. ``prob`` (the foreground
    probability on the mask's grid) is cut for the cross-sections when given; ``image`` is shown in the CPRs."""
    from segvol.tree.outputs import summary_line, write_tree

    if not np.asarray(labels).any():
        log.warning("%s: nothing segmented; no artery tree written", target)
        return None
    out = write_tree(labels, affine, target, overwrite=overwrite, source=str(target), prob=prob, image=image)
    log.info("%s: %s", target, summary_line(out.analysis))
    return out.out_dir


def tree_writer_output(target: Path, context: Any) -> Path | None:
    """``write(target, context)`` for an output registry (``context.labels``, ``.affine``, ``.overwrite``); when the
    same run also wrote probabilities (``--output prob``) or a picture of the scan, the tree uses them too."""
    found = getattr(context, "found", None) or {}
    prob = found.get("prob")
    if prob is not None:  # (C', X, Y, Z) foreground probabilities: the vessel's is their sum
        prob = np.clip(np.asarray(prob, np.float32).sum(axis=0), 0.0, 1.0)
    return write_tree_output(target, context.labels, context.affine, overwrite=bool(context.overwrite), prob=prob,
                             image=found.get("image"))

