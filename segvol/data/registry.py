"""The explicit registry of dataset adapters: the single source of truth for dataset names."""

from __future__ import annotations

from typing import Any

from segvol.errors import SegvolError

__all__ = ["DATASETS", "get_adapter"]


def _imagecas() -> Any:
    from segvol.data.imagecas import ImageCAS

    return ImageCAS()


DATASETS: dict[str, Any] = {"imagecas": _imagecas}


def get_adapter(name: str) -> Any:
    """Return the adapter registered under ``name`` (``imagecas``, ``brats``, ...)."""
    try:
        factory = DATASETS[name]
    except KeyError:
        raise SegvolError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None
    return factory()
