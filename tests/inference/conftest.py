"""Fixtures shared by the inference tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture()
def bright_model(monkeypatch):
    """Every loaded model marks the voxels brighter than the scan's mean (class 1 where the normalised image > 0)."""
    from segvol.inference import backends

    real_load = backends.load_model

    def load(path, device):
        loaded = real_load(path, device)
        loaded.predict = lambda x: torch.cat([-x, x], dim=1)
        return loaded

    monkeypatch.setattr(backends, "load_model", load)
