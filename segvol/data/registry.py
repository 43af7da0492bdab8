"""The explicit registry of dataset adapters: the single source of truth for dataset names.

Built-in adapters are imported lazily (``segvol --help`` stays instant). A new dataset registers itself::

    from segvol.config import DataConfig
from segvol.data.adapter import DatasetAdapter
    from segvol.data.registry import register_dataset

    class MyData(DatasetAdapter):
        name = "mydata"
        ...

    register_dataset("mydata", MyData)
"""

from __future__ import annotations

from collections.abc import Callable

from segvol.config import DataConfig
from segvol.data.adapter import DatasetAdapter
from segvol.errors import SegvolError
from segvol.io.masks import SEGVOL_MARKERS, FileMarkers
from segvol.labels import RegionScheme

__all__ = ["DATASETS", "ALIASES", "get_adapter", "register_dataset", "dataset_names", "canonical_name",
           "region_schemes", "file_markers", "DEFAULT_DATASET", "describe_names"]


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


def describe_names(phantoms_only: bool = False) -> str:
    """The registered datasets for help texts: ``imagecas, brats, lgg, msd (alias nnunet)``; ``phantoms_only``:
    those ``segvol synth`` can write."""
    names = [n for n in DATASETS if not phantoms_only or get_adapter(n).has_phantoms]
    aliases = {n: [a for a, target in ALIASES.items() if target == n] for n in names}
    return ", ".join(n + (f" (alias {', '.join(aliases[n])})" if aliases[n] else "") for n in names)


def dataset_names() -> list[str]:
    """Every registered name and alias, sorted."""
    return sorted({*DATASETS, *ALIASES})


def get_adapter(name: str) -> DatasetAdapter:
    """Return the adapter registered under ``name`` (``imagecas``, ``brats``, ``msd``, an alias, ...)."""
    adapter = DATASETS[canonical_name(name)]()
    if not isinstance(adapter, DatasetAdapter):
        raise SegvolError(f"dataset {name!r}: its factory returned {type(adapter).__name__}, not a DatasetAdapter")
    return adapter


DEFAULT_DATASET = DataConfig().dataset  # the one default: the config's


def _adapters() -> list[DatasetAdapter]:
    return [get_adapter(name) for name in DATASETS]


def region_schemes() -> dict[str, RegionScheme]:
    """The region schemes of the registered datasets, by scheme name (``{"brats": ...}``)."""
    return {a.region_scheme.name: a.region_scheme for a in _adapters() if a.region_scheme is not None}


def file_markers() -> FileMarkers:
    """segvol's own mask markers and every registered dataset's mask and scan markers, for matching folders of
    masks by case id when no dataset is named (:mod:`segvol.io.masks`)."""
    adapters = _adapters()
    masks = dict.fromkeys(SEGVOL_MARKERS + tuple(m for a in adapters for m in a.mask_markers))
    images = dict.fromkeys(m for a in adapters for m in a.image_markers)
    return FileMarkers(tuple(masks), tuple(images))
