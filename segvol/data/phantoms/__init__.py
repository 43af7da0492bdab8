"""Phantoms in the real datasets' layouts, for tests, demos and benchmarks (no download needed).

Each dataset's adapter writes its own (``DatasetAdapter.write_phantoms``); :func:`segvol.data.registry.write_phantoms`
picks the adapter by name.
"""

from __future__ import annotations

__all__: list[str] = []
