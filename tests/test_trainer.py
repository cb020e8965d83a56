"""The trainer's loop, in one process and as two ranks on threads (tests/worlds.py): seconds each.

The loop asks its world every question that depends on the number of processes, so a
world written for a test can steer it (a signal after the third batch) and two ranks on
threads can be checked against one process without torchrun.
"""

from __future__ import annotations

import io
import json
import signal

import pytest
import torch
from worlds import train_on_threads

from rnnlab import checkpoint, rundir
from rnnlab.config import ModelConfig, TrainConfig
from rnnlab.data import prepare
from rnnlab.fit import fit
from rnnlab.trainer import Log, Trainer
from rnnlab.world import World

B, T = 4, 8


def tiny(**options) -> TrainConfig:
    """Characters of The Time Machine, a small LSTM, no dropout (the same draws alike)."""
    base = dict(
        model=ModelConfig(cell="lstm", impl="torch", hidden=12, embedding=8),
        source="timemachine",
        mode="chars",
        max_tokens=2000,
        batch_size=B,
        num_steps=T,
        epochs=2,
        optimizer="adam",
        lr=0.01,
        sample_every=0,
        threads=1,
        prefix="the ",
    )
    return TrainConfig(**{**base, **options})


def trainer_of(cfg: TrainConfig, run, world: World | None = None) -> Trainer:
    data = prepare(cfg.source, cfg.mode, cfg.max_tokens, cfg.val_frac, B, T)
    log = Log(io.StringIO(), io.StringIO(), quiet=True)
    return Trainer(cfg, run, data, torch.device("cpu"), log, world)


def history(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_one_process_trains_its_epochs_and_checkpoints_each(tmp_path):
    run = tmp_path / "run"
    assert fit(tiny(), run, quiet=True, out=io.StringIO()) == 0
    records = history(run)
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["val_loss"] < records[0]["val_loss"]
    ckpt = checkpoint.read_checkpoint(run)
    assert (ckpt.epoch, ckpt.progress.batch) == (2, 0)
    assert ckpt.schedule.batches == sum(r["tokens"] for r in records) // (B * T)


class SignalAfter(World):
    """One process, told by its world that a SIGINT came after ``batches`` batches."""

    def __init__(self, batches: int):
        self.batches, self.seen = batches, 0

    def agree(self, signum, seconds):
        self.seen += 1
        return (signal.SIGINT if self.seen >= self.batches else signum), seconds


def test_a_signal_the_world_agrees_on_stops_after_the_batch_with_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    status = fit(tiny(), run, quiet=True, out=io.StringIO(), err=io.StringIO(),
                 world=SignalAfter(3))  # fmt: skip
    assert status == 128 + signal.SIGINT
    ckpt = checkpoint.read_checkpoint(run)
    assert (ckpt.epoch, ckpt.progress.batch, ckpt.schedule.batches) == (0, 3, 3)
    whole = tmp_path / "whole"
    assert fit(tiny(), whole, quiet=True, out=io.StringIO()) == 0
    assert fit(None, run, resume=True, quiet=True, out=io.StringIO()) == 0
    for resumed, uninterrupted in zip(history(run), history(whole), strict=True):
        assert resumed["val_loss"] == uninterrupted["val_loss"]  # exact, on the CPU


def test_the_time_limit_validates_where_it_stops_and_keeps_those_weights(tmp_path):
    run = tmp_path / "run"
    trainer = trainer_of(tiny(time_limit=1.0), run)
    run.mkdir()
    rundir.create(run, trainer.cfg, trainer.data.vocab)
    trainer.time_is_up = lambda seconds=None: trainer.clock.batches >= 5  # five batches' time
    assert trainer.fit() == 0
    ckpt = checkpoint.read_checkpoint(run)
    assert (ckpt.epoch, ckpt.progress.batch) == (0, 5)
    assert ckpt.schedule.best_batch == 5 and ckpt.schedule.best_loss is not None
    assert checkpoint.read_checkpoint(run, slot=checkpoint.BEST).progress.batch == 5


def test_two_ranks_on_threads_train_what_one_process_trains(tmp_path):
    """Each rank trains 2 of the 4 streams; the averaged gradients are the global batch's,
    so the run is the one-process run, up to the order of floating-point sums."""
    alone = tmp_path / "alone"
    assert fit(tiny(), alone, quiet=True, out=io.StringIO()) == 0
    shared = tmp_path / "shared"
    statuses = train_on_threads(
        2, lambda world: fit(tiny(), shared, quiet=True, out=io.StringIO(), world=world)
    )
    assert statuses == [0, 0]
    for one, two in zip(history(alone), history(shared), strict=True):
        assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
        assert two["tokens"] == one["tokens"]  # each record counts the global batch
    ckpt = checkpoint.read_checkpoint(shared)
    assert ckpt.rng.keys() >= {"rng.rank.0.torch", "rng.rank.1.torch"}
    want = checkpoint.read_checkpoint(alone).weights
    for name, value in ckpt.weights.items():
        torch.testing.assert_close(value, want[name], rtol=1e-4, atol=1e-5)


def test_two_ranks_stop_together_and_save_every_streams_state(tmp_path):
    """Stopped in the middle of an epoch, the checkpoint rank 0 writes carries all B
    streams, rank 1's rows from rank 1; a one-process resume of it goes on as one run."""
    shared = tmp_path / "shared"

    def one_rank(world):
        agree = world.agree
        calls = {"n": 0}

        def agree_then_stop(signum, seconds):
            calls["n"] += 1
            return agree(signal.SIGTERM if calls["n"] >= 4 and world.rank == 1 else signum,
                         seconds)  # fmt: skip

        world.agree = agree_then_stop
        return fit(tiny(), shared, quiet=True, out=io.StringIO(), err=io.StringIO(), world=world)

    assert train_on_threads(2, one_rank) == [128 + signal.SIGTERM] * 2
    ckpt = checkpoint.read_checkpoint(shared)
    assert (ckpt.epoch, ckpt.progress.batch) == (0, 4)
    h, c = ckpt.progress.state
    assert h.shape == c.shape == (1, B, 12)
    assert fit(None, shared, resume=True, quiet=True, out=io.StringIO()) == 0
    assert [r["epoch"] for r in history(shared)] == [1, 2]
