"""Records and splits: the plain data that the pipeline stages hand each other.

A record is ``{"id": str, "image": path | [paths], "label": path | None}``. A split is
``{"train": [ids], "val": [ids], "test": [ids]}`` written as JSON into the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from segvol.errors import SegvolError
from segvol.utils import atomic_path

__all__ = ["Record", "seeded_split", "apply_split", "write_split", "read_split", "SPLIT_NAMES"]

Record = dict[str, Any]
SPLIT_NAMES = ("train", "val", "test")


def seeded_split(ids: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Deterministic case-level split (never by slice): shuffle with ``seed``, then cut test, val, train.

    Every non-zero fraction gets at least one case when there are enough cases; training always keeps one.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise SegvolError(f"split fractions val={val_fraction} test={test_fraction}: each in [0, 1), sum below 1")
    order = sorted(ids)
    rng = np.random.default_rng(seed)
    order = [order[i] for i in rng.permutation(len(order))]
    n = len(order)
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n - n_test - n_val < 1:
        raise SegvolError(f"{n} case(s) are too few for val={val_fraction} test={test_fraction}: need more cases")
    return {
        "train": sorted(order[n_test + n_val :]),
        "val": sorted(order[n_test : n_test + n_val]),
        "test": sorted(order[:n_test]),
    }


def apply_split(records: list[Record], split: dict[str, list[str]]) -> dict[str, list[Record]]:
    """Group records by the split's id lists; ids in the split with no record are an error."""
    by_id = {r["id"]: r for r in records}
    missing = sorted(i for part in split.values() for i in part if i not in by_id)
    if missing:
        raise SegvolError(f"split names case(s) not found in the dataset: {', '.join(missing[:5])}")
    return {name: [by_id[i] for i in split.get(name, [])] for name in SPLIT_NAMES}


def write_split(split: dict[str, list[str]], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({k: list(split.get(k, [])) for k in SPLIT_NAMES}, indent=1) + "\n")


def read_split(path: str | Path) -> dict[str, list[str]]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SegvolError(f"{path}: cannot read split file ({exc})") from exc
    return {k: [str(i) for i in data.get(k, [])] for k in SPLIT_NAMES}
