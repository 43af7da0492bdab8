"""The explicit registry of dataset adapters: the single source of truth for dataset names.

Built-in adapters are imported lazily (``segvol --help`` stays instant). A new dataset registers itself::

    from segvol.data.adapter import DatasetAdapter
    from segvol.data.registry import register_dataset

    class MyData(DatasetAdapter):
        name = "mydata"
        ...

    register_dataset("mydata", MyData)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from segvol.data.adapter import DatasetAdapter
from segvol.errors import SegvolError

__all__ = ["DATASETS", "ALIASES", "get_adapter", "register_dataset", "dataset_names", "canonical_name",
           "write_phantoms"]

log = logging.getLogger(__name__)


def _imagecas() -> DatasetAdapter:
    from segvol.data.imagecas import ImageCAS

    return ImageCAS()


def _brats() -> DatasetAdapter:
    from segvol.data.brats import BraTS

    return BraTS()


def _lgg() -> DatasetAdapter:
    from segvol.data.brats import LGG

    return LGG()


def _msd() -> DatasetAdapter:
    from segvol.data.msd import MSD

    return MSD()


DATASETS: dict[str, Callable[[], DatasetAdapter]] = {"imagecas": _imagecas, "brats": _brats, "lgg": _lgg,
                                                     "msd": _msd}
ALIASES: dict[str, str] = {"nnunet": "msd"}


def register_dataset(name: str, factory: Callable[[], DatasetAdapter], *, aliases: tuple[str, ...] = (),
                     replace: bool = False) -> None:
    """Register ``factory`` (an adapter class or a function returning an adapter) under ``name``.

    Raises :class:`SegvolError` when ``name`` or an alias is taken, unless ``replace``.
    """
    for key in (name, *aliases):
        if not replace and (key in DATASETS or key in ALIASES):
            raise SegvolError(f"dataset {key!r} is already registered")
    DATASETS[name] = factory
    for alias in aliases:
        ALIASES[alias] = name


def canonical_name(name: str) -> str:
    """``name`` with aliases resolved (``nnunet`` -> ``msd``); unknown names are an error listing the known."""
    key = ALIASES.get(name, name)
    if key not in DATASETS:
        raise SegvolError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")
    return key


def dataset_names() -> list[str]:
    """Every registered name and alias, sorted."""
    return sorted({*DATASETS, *ALIASES})


def get_adapter(name: str) -> DatasetAdapter:
    """Return the adapter registered under ``name`` (``imagecas``, ``brats``, ``msd``, an alias, ...)."""
    adapter = DATASETS[canonical_name(name)]()
    if not isinstance(adapter, DatasetAdapter):
        raise SegvolError(f"dataset {name!r}: its factory returned {type(adapter).__name__}, not a DatasetAdapter")
    return adapter


def write_phantoms(dataset: str, out: str | Path, cases: int, size: str = "small", seed: int = 0,
                   overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Write ``cases`` phantoms of ``dataset`` into ``out`` in the dataset's real layout (its adapter's
    :meth:`~segvol.data.adapter.DatasetAdapter.write_phantoms`)."""
    adapter = get_adapter(dataset)
    if not adapter.has_phantoms:
        makers = [n for n in dataset_names() if get_adapter(n).has_phantoms]
        raise SegvolError(f"no phantoms for dataset {dataset!r}; known: {', '.join(makers)}")
    if size not in ("small", "full"):
        raise SegvolError(f"--size {size!r}: expected small or full")
    if cases < 1:
        raise SegvolError(f"--cases {cases}: need at least 1")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SegvolError(f"{out}: folder is not empty (use --overwrite to write phantoms into it anyway)")
    out.mkdir(parents=True, exist_ok=True)
    written = adapter.write_phantoms(out, cases, size, seed, progress=progress)
    log.info("wrote %d %s phantom case(s) (%s) to %s", cases, adapter.name, size, out)
    return written
