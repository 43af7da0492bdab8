"""Run logs on resume: metrics.csv rewritten whole or not at all, TensorBoard without repeated epochs."""

from __future__ import annotations

import csv
import types

import pytest

from segvol.training import trainer
from segvol.training.tensorboard import TrainLogger


def test_metrics_rewrite_on_resume_is_atomic(tmp_path, monkeypatch):
    log = trainer._MetricsLog(tmp_path / "metrics.csv", ("artery",))
    for epoch in (1, 2, 3):
        log.append({"epoch": epoch, "loss": 0.5 / epoch})
    before = (tmp_path / "metrics.csv").read_text()

    class Broken:  # the disk fills (or the process dies) half-way through the rewrite
        def __init__(self, fh):
            self.fh = fh

        def writerows(self, rows):
            self.fh.write(",".join(rows[0]) + "\n")
            raise OSError("injected: disk full")

    monkeypatch.setattr(trainer.csv, "writer", Broken)
    with pytest.raises(OSError, match="injected"):
        log.truncate_after(2)
    assert (tmp_path / "metrics.csv").read_text() == before  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # no temporary file left

    monkeypatch.undo()
    log.truncate_after(2)
    with open(tmp_path / "metrics.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2]


def test_tensorboard_resume_purges_the_repeated_epochs(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.summary.writer import event_file_writer

    first = TrainLogger(tmp_path)
    for epoch in (1, 2, 3):  # epoch 3 was logged, then the run died before its checkpoint
        first.log_epoch(epoch, {"epoch": epoch, "loss": float(epoch)})
    first.close()
    # A resume is a later process: its event file is named by a later second. Within one second TensorBoard would
    # order the two files by a counter compared as text ("10" before "9"), which no real resume meets.
    clock = event_file_writer.time.time
    monkeypatch.setattr(event_file_writer, "time", types.SimpleNamespace(time=lambda: clock() + 60))
    resumed = TrainLogger(tmp_path, purge_step=3)  # last.pt holds epoch 2: epoch 3 runs again
    for epoch in (3, 4):
        resumed.log_epoch(epoch, {"epoch": epoch, "loss": 10.0 * epoch})
    resumed.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    loss = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert loss == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
