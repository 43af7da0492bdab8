"""Exact resume after SIGKILL, atomic checkpoints, early stopping, and DDP with two gloo processes."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from segvol import api
from segvol.config import load_config
from segvol.training.checkpoint import load_checkpoint
from tests.conftest import REPO

TINY = str(REPO / "configs" / "tiny.yaml")
FAST = ["--set", "train.steps_per_epoch=3", "--set", "train.val_every=1", "--set", "train.max_val_cases=1"]


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _losses(run):
    with open(run / "metrics.csv") as fh:
        return [(int(r["epoch"]), float(r["loss"]), r["val_dice"]) for r in csv.DictReader(fh)]


def _train_cmd(data, models, name, epochs):
    return [sys.executable, "-m", "segvol", "-q", "train", "--dataset", "imagecas", "--config", TINY, "--data",
            str(data), "--models", str(models), "--name", name, "--set", f"train.epochs={epochs}", *FAST]


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_the_uninterrupted_run(tmp_path, imagecas_small):
    models = tmp_path / "models"
    subprocess.run(_train_cmd(imagecas_small, models, "whole", 5), env=_env(), check=True, timeout=600)
    proc = subprocess.Popen(_train_cmd(imagecas_small, models, "killed", 5), env=_env())
    metrics = models / "killed" / "metrics.csv"
    deadline = time.time() + 300
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:  # header + 2 epochs
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(models / "killed" / "last.pt")["epoch"]  # loadable despite the kill
    assert 1 <= killed_at < 5  # the kill may land while epoch 2 is being saved
    subprocess.run([sys.executable, "-m", "segvol", "-q", "train", "--resume", str(models / "killed")],
                   env=_env(), check=True, timeout=600)
    whole, resumed = _losses(models / "whole"), _losses(models / "killed")
    assert [e for e, _, _ in resumed] == [1, 2, 3, 4, 5]
    for (e, a, da), (_, b, db) in zip(whole, resumed):
        assert a == pytest.approx(b, abs=1e-5), f"epoch {e}: loss {a} uninterrupted vs {b} resumed"
        assert float(da) == pytest.approx(float(db), abs=1e-5)
    again = subprocess.run([sys.executable, "-m", "segvol", "train", "--resume", str(models / "killed")],
                           env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already finished" in again.stderr


def test_early_stopping_and_schedule(tmp_path, imagecas_small):
    cfg = load_config(TINY, ["train.epochs=6", "train.steps_per_epoch=1", "train.val_every=1",
                             "train.max_val_cases=1", "train.lr=1e-12", "train.patience=2",
                             "train.lr_schedule=cosine"], data={"root": str(imagecas_small)})
    result = api.train(cfg=cfg, models_dir=tmp_path, name="es", device="cpu", progress=False)
    assert result.stopped_early and len(result.history) < 6  # lr 1e-12 cannot improve: stops after patience
    ckpt = load_checkpoint(tmp_path / "es" / "last.pt")
    assert ckpt["finished"] and ckpt["scheduler"]["last_epoch"] == len(result.history)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "es" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    assert len(losses) == len(result.history) and "val/val_dice" in events.Tags()["scalars"]
    previews = events.Images("val/preview")  # one overlay of the first validation case per validation
    assert len(previews) == len(result.history) and previews[0].width > 8 and previews[0].height > 8
    assert losses[0] == pytest.approx(result.history[0]["loss"], rel=1e-5)


@pytest.mark.slow
def test_ddp_two_gloo_processes(tmp_path, imagecas_small):
    models = tmp_path / "models"
    import socket

    with socket.socket() as sock:  # a free port, so parallel or lingering runs cannot collide
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "-m", "segvol", "train", "--dataset", "imagecas", "--config", TINY, "--data", str(imagecas_small),
           "--models", str(models), "--name", "ddp", "--device", "cpu", "--set", "train.epochs=2", *FAST]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "weights identical across 2 ranks" in proc.stderr
    run = models / "ddp"
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".pt") == ["best.pt", "last.pt"]
    assert [e for e, _, _ in _losses(run)] == [1, 2]  # one row per epoch: only rank 0 writes
    state = load_checkpoint(run / "last.pt")["state_dict"]
    assert all(torch.isfinite(t).all() for t in state.values())
