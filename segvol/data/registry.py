"""The explicit registry of dataset adapters: the single source of truth for dataset names."""

from __future__ import annotations

from typing import Any

from segvol.errors import SegvolError

__all__ = ["DATASETS", "get_adapter"]


def _imagecas() -> Any:
    from segvol.data.imagecas import ImageCAS

    return ImageCAS()


def _brats() -> Any:
    from segvol.data.brats import BraTS

    return BraTS()


def _lgg() -> Any:
    from segvol.data.brats import LGG

    return LGG()


DATASETS: dict[str, Any] = {"imagecas": _imagecas, "brats": _brats, "lgg": _lgg}


def get_adapter(name: str) -> Any:
    """Return the adapter registered under ``name`` (``imagecas``, ``brats``, ...)."""
    try:
        factory = DATASETS[name]
    except KeyError:
        raise SegvolError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None
    return factory()
