"""Datasets: records, splits, the adapter registry, importers and phantoms."""

from __future__ import annotations

__all__: list[str] = []
