"""Learning BraTS phantoms, tested by learning: a tiny BasicUNet trained on the CPU for about a minute and a half
per label mode must reach a validation Dice far above the same network's before training.

Measured on 2 CPU cores (seed 2 phantoms, 14 epochs x 20 steps of 4 patches of 32^3, ~85 s per mode): regions
(TC/WT/ET, sigmoid) went from 0.019 untrained to 0.584 (TC 0.505, WT 0.817, ET 0.429); binary whole tumour
(softmax) from 0.010 to 0.916. An untrained network paints noise or everything; an all-background model scores 0.
"""

from __future__ import annotations

import pytest
import torch

from segvol import api
from segvol.config import load_config
from segvol.networks import build_network, network_args
from segvol.training.data import cached_volumes
from segvol.training.trainer import validate
from tests.conftest import REPO

UNTRAINED_MAX = 0.2
TRAINED_MIN = {"regions": 0.4, "binary": 0.6}


@pytest.fixture(scope="module")
def brats_phantoms(tmp_path_factory):
    data = tmp_path_factory.mktemp("brats")
    api.synth(dataset="brats", out=data, cases=8, size="small", seed=2, progress=False)
    return data


@pytest.mark.slow
@pytest.mark.parametrize("labels", ["regions", "binary"])
def test_tiny_model_learns_brain_tumours(tmp_path, brats_phantoms, labels):
    cfg = load_config(str(REPO / "configs" / "tiny-brats.yaml"),
                      ["train.epochs=16", "train.val_every=2", f"data.labels={labels}"],
                      data={"root": str(brats_phantoms)})
    _, spec, groups, _ = api.resolve_records(cfg)
    torch.manual_seed(cfg.train.seed)
    untrained = build_network(network_args(cfg, spec.in_channels, spec.out_channels))
    before = validate(untrained, cached_volumes(groups["val"], cfg, spec), cfg, spec, torch.device("cpu"))

    result = api.train(cfg=cfg, models_dir=tmp_path / "models", name=labels, device="cpu", progress=False)

    best = result.history[result.best_epoch - 1]
    print(f"{labels}: val Dice untrained {before['val_dice']:.3f} -> trained {result.best_metric:.3f} "
          f"(epoch {result.best_epoch}; " + ", ".join(f"{k} {v:.3f}" for k, v in best.items() if k.startswith("dice_"))
          + ")")
    assert before["val_dice"] < UNTRAINED_MAX
    assert result.best_metric > TRAINED_MIN[labels]
    assert result.best_metric > before["val_dice"] + 0.3
    header = (tmp_path / "models" / labels / "metrics.csv").read_text().splitlines()[0]
    names = ["tc", "wt", "et"] if labels == "regions" else ["wt"]
    assert header.startswith("epoch,loss,val_dice," + ",".join(f"dice_{n}" for n in names))
    if labels == "regions":  # every region is learnt, not only the large whole tumour
        assert min(best["dice_tc"], best["dice_wt"], best["dice_et"]) > 0.2
