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


def write_tree_output(target: Path, labels: np.ndarray, affine: np.ndarray, overwrite: bool = False) -> Path | None:
    """The tree folder of a predicted mask; an empty mask is reported and writes nothing."""
    from segvol.tree.outputs import summary_line, write_tree

    if not np.asarray(labels).any():
        log.warning("%s: nothing segmented; no artery tree written", target)
        return None
    out = write_tree(labels, affine, target, overwrite=overwrite, source=str(target))
    log.info("%s: %s", target, summary_line(out.analysis))
    return out.out_dir


def tree_writer_output(target: Path, context: Any) -> Path | None:
    """``write(target, context)`` for an output registry (``context.labels``, ``.affine``, ``.overwrite``)."""
    return write_tree_output(target, context.labels, context.affine, overwrite=bool(context.overwrite))

