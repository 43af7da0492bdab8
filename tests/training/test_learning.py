"""Learning is tested by learning: a tiny BasicUNet trained on phantoms for ~2 minutes on the CPU must reach a
validation Dice far above what the same network gets before training (about 0.03, it paints the bright aorta and
blood pool too) or an all-background model gets (0.0)."""

from __future__ import annotations

import pytest

UNTRAINED_MAX = 0.15
TRAINED_MIN = 0.5


@pytest.mark.slow
def test_tiny_model_learns_coronary_arteries(trained_imagecas):
    _, _, _, before, result = trained_imagecas  # tests/conftest.py: 8 small phantoms, configs/tiny.yaml, 20 epochs

    print(f"val Dice untrained {before:.3f} -> trained {result.best_metric:.3f} (epoch {result.best_epoch})")
    assert before < UNTRAINED_MAX
    assert result.best_metric > TRAINED_MIN
    assert result.best_metric > before + 0.35
    rows = (result.run_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,loss,val_dice") and len(rows) == 21
    first_loss, last_loss = float(rows[1].split(",")[1]), float(rows[-1].split(",")[1])
    assert last_loss < first_loss - 0.15
