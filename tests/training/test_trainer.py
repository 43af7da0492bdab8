"""The trainer's public steps: AMP on the CPU, the fp16 gradient scaler across a resume, cuDNN flags, variants."""

from __future__ import annotations

import ast
import math

import pytest
import torch

from segvol.config import load_config
from segvol.labels import TaskSpec
from segvol.training.trainer import Trainer
from tests.conftest import REPO

SPEC = TaskSpec(1, 2, "softmax", ("artery",), ("ct",))


def _batch():
    g = torch.Generator().manual_seed(0)
    label = (torch.rand(1, 1, 32, 32, 32, generator=g) > 0.8).float()
    return {"image": label * 2 + torch.randn(1, 1, 32, 32, 32, generator=g), "label": label}


def test_fp16_autocast_on_the_cpu_and_its_scaler_survives_a_resume(monkeypatch):
    """fp16 autocast and ``GradScaler("cpu")`` on the CPU (bf16 autocast runs in the DDP test)."""
    cfg = load_config("tiny", ["train.amp=true", "train.amp_dtype=fp16"])
    trainer = Trainer(cfg, SPEC, torch.device("cpu"))
    seen = []
    real_forward = trainer.state.model.forward
    monkeypatch.setattr(trainer.state.model, "forward",
                        lambda x: seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu")
                                              else None) or real_forward(x))
    loss = float(trainer.train_step(_batch()))
    assert math.isfinite(loss)
    assert seen == [torch.float16]  # autocast really on, on the CPU
    scaler = trainer.state.scaler
    assert scaler is not None and scaler.is_enabled()
    scaler.update(1234.0)  # a scale a fresh scaler would not have
    ckpt = trainer.state.payload(trainer.base, {"loss": loss})
    resumed = Trainer(cfg, SPEC, torch.device("cpu"))
    assert resumed.state.scaler.get_scale() != 1234.0
    resumed.state.restore(ckpt)
    assert resumed.state.scaler.get_scale() == 1234.0


def test_seeding_leaves_cudnn_determinism_to_the_config():
    from segvol.utils import seed_everything, torch_flags

    with torch_flags(deterministic=torch.backends.cudnn.deterministic, benchmark=torch.backends.cudnn.benchmark):
        try:
            seed_everything(0)  # MONAI's set_determinism turns deterministic cuDNN on; segvol undoes it
            assert torch.backends.cudnn.deterministic is False
            assert not torch.are_deterministic_algorithms_enabled()
            seed_everything(0, deterministic=True)
            assert torch.backends.cudnn.deterministic is True and torch.are_deterministic_algorithms_enabled()
            assert torch.backends.cudnn.benchmark is False
        finally:
            torch.use_deterministic_algorithms(False)


def test_a_variant_overrides_one_step(tiny_cfg):
    """nnU-Net style: a subclass changes one step and fit runs it; nothing else is copied."""
    from segvol import api

    class HalfLoss(Trainer):
        calls = 0

        def train_step(self, batch):
            HalfLoss.calls += 1
            return super().train_step(batch) * 0.5

    _, spec, groups, _ = api.resolve_records(tiny_cfg)
    cfg = tiny_cfg.replace(train={"steps_per_epoch": 2, "max_val_cases": 1})
    torch.manual_seed(0)
    trainer = HalfLoss(cfg, spec, torch.device("cpu"))
    torch.manual_seed(0)
    plain = Trainer(cfg, spec, torch.device("cpu"))
    for t in (trainer, plain):
        t.attach_data(groups["train"][:1])
    half, full = trainer.train_epoch(1), plain.train_epoch(1)
    assert HalfLoss.calls == 2 and half == pytest.approx(full / 2, rel=1e-4)


def test_bench_uses_only_public_trainer_names():
    tree = ast.parse((REPO / "segvol" / "bench.py").read_text())
    imported = [(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names if (node.module or "").startswith("segvol.training")]
    assert ("segvol.training.trainer", "Trainer") in imported
    assert not [name for _, name in imported if name.startswith("_")], imported
