"""Learning-rate schedules as pure functions, their options, and evaluation at any batch size."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import TINY_RUN, run_cli
from rnnlab import schedule
from rnnlab.batches import epoch_batches, eval_batches, num_batches
from rnnlab.config import RESUMABLE_CHANGES, ModelConfig, TrainConfig
from rnnlab.errors import RnnlabError
from rnnlab.models import build_model
from rnnlab.options import SCHEDULES
from rnnlab.schedule import Schedule, ScheduleState, after_epoch, cosine_rate
from rnnlab.train import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")


def at(batches: int = 0, seconds: float = 0.0, lr: float = 1.0) -> ScheduleState:
    return ScheduleState(lr=lr, batches=batches, seconds=seconds)


def test_constant_is_the_rate_given_at_every_batch():
    constant = Schedule("constant", 0.5)
    assert {constant.rate(at(k, s, lr=9.0)) for k, s in [(0, 0), (10**6, 1e5)]} == {0.5}


def test_cosine_warms_up_linearly_then_decays_to_its_floor():
    lr, W, N, m = 2.0, 4, 104, 0.1
    cosine = Schedule("cosine", lr, W, m, planned_batches=N)
    rates = [cosine.rate(at(k)) for k in range(N + 5)]
    assert rates[:W] == [lr * (k + 1) / (W + 1) for k in range(W)]
    assert rates[W] == lr  # the decay starts at the full rate
    assert rates[W + 50] == pytest.approx((lr + m * lr) / 2)  # halfway: the mean of lr and floor
    assert all(a >= b for a, b in zip(rates[W:], rates[W + 1 :]))
    assert rates[N:] == [pytest.approx(m * lr)] * 5  # the floor, then it stays there


def test_cosine_over_a_time_limit_follows_the_clock_not_the_batches():
    lr, S = 1.0, 120.0  # a 2-minute run
    cosine = Schedule("cosine", lr, warmup=3, min_lr_frac=0.0, limit_seconds=S)
    assert cosine.rate(at(1, seconds=1.2)) == pytest.approx(2 / 4)  # warm-up: by batches
    # ... until a tenth of the limit has passed: then the decay, whatever the batches
    assert cosine.rate(at(1, seconds=100.0)) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 100 / S))
    )
    assert cosine.rate(at(3, seconds=0.0)) == lr
    for batches in (3, 10**6):  # after warm-up only the seconds count
        assert cosine.rate(at(batches, seconds=S / 2)) == pytest.approx(lr / 2)
        assert cosine.rate(at(batches, seconds=S * 0.25)) == pytest.approx(
            0.5 * (1 + math.cos(math.pi / 4))
        )
    assert cosine.rate(at(500, seconds=S)) == pytest.approx(0.0, abs=1e-15)  # decayed by its end
    assert cosine.rate(at(500, seconds=3 * S)) == cosine.rate(at(500, seconds=S))
    # the formula itself: m + (lr - m) * (1 + cos(pi p)) / 2
    assert cosine_rate(4.0, 10, 0, 0.25, 1 / 3) == pytest.approx(1.0 + 3.0 * 0.75)


def test_plateau_divides_by_four_after_an_epoch_that_is_not_the_best():
    state = ScheduleState(lr=20.0)
    state = after_epoch("plateau", state, 1, 5.0)
    assert (state.lr, state.best_loss, state.best_epoch) == (20.0, 5.0, 1)
    state = after_epoch("plateau", state, 2, 5.0)  # not lower: equal is no better
    assert (state.lr, state.best_epoch) == (5.0, 1)
    state = after_epoch("plateau", state, 3, 4.0)
    assert (state.lr, state.best_loss, state.best_epoch) == (5.0, 4.0, 3)
    assert Schedule("plateau", 20.0).rate(state) == 5.0
    kept = after_epoch("cosine", ScheduleState(lr=1.0, best_loss=3.0, best_epoch=1), 2, 3.5)
    assert kept.lr == 1.0 and kept.best_epoch == 1  # only plateau changes the rate here


def test_the_state_a_checkpoint_keeps_round_trips_through_json():
    state = ScheduleState(lr=0.3125, batches=12345, seconds=67.5, best_loss=1.25, best_epoch=4)
    assert ScheduleState(**state.to_json()) == state


@pytest.mark.parametrize("sampling", ["sequential", "random"])
def test_num_batches_counts_what_epoch_batches_makes(sampling):
    ids = torch.arange(2717) % 7
    for seed, epoch in [(0, 0), (0, 1), (3, 7), (11, 2)]:
        X, _ = epoch_batches(ids, 8, 10, sampling, seed, epoch)
        assert num_batches(len(ids), 8, 10, sampling, seed, epoch) == len(X)


@pytest.mark.parametrize(
    "options, words",
    [
        (dict(warmup=10), "--schedule cosine"),
        (dict(schedule="plateau", min_lr_frac=0.1), "--schedule cosine"),
        (dict(schedule="cosine", min_lr_frac=1.0), "--min-lr-frac"),
        (dict(schedule="linear"), "--schedule"),
        (dict(time_limit=0), "--time-limit"),
        (dict(time_limit=-1.5), "--time-limit"),
        (dict(time_limit=float("inf")), "--time-limit"),
        (dict(patience=-1), "--patience"),
        (dict(eval_batch_size=-1), "--eval-batch-size"),
    ],
)
def test_bad_schedule_options_are_one_line_errors(options, words):
    with pytest.raises(RnnlabError) as info:
        TrainConfig.from_options(options)
    assert words in str(info.value) and len(str(info.value).splitlines()) == 1


def test_defaults_are_todays_training_and_the_limits_may_change_on_resume():
    cfg = TrainConfig()
    assert (cfg.schedule, cfg.warmup, cfg.min_lr_frac) == ("constant", 0, 0.0)
    assert (cfg.patience, cfg.time_limit, cfg.eval_batch_size) == (0, None, 0)
    assert {"time_limit", "patience"} <= set(RESUMABLE_CHANGES)
    assert "schedule" not in RESUMABLE_CHANGES and "eval_batch_size" not in RESUMABLE_CHANGES
    assert SCHEDULES[0] == "constant"


def test_validation_loss_is_the_mean_over_streams_each_scored_as_if_alone():
    """What the evaluation batch size changes: how the text is cut into streams (each
    starting from a zero state, the tail that fills no batch left out), not how a stream
    is scored. So the loss at B streams equals the token-weighted mean of the same B
    streams scored one at a time (to float32 rounding), and two batch sizes over the
    same text give losses that differ only by that cut."""
    torch.manual_seed(0)
    V = 11
    model = build_model(ModelConfig(impl="torch", cell="lstm", hidden=16, dropout=0.5), V)
    ids = torch.randint(0, V, (1001,))
    for B in (4, 7):
        X, Y = eval_batches(ids, B, 10)  # (nb, B, T)
        whole = evaluate(model, X, Y)
        alone = [evaluate(model, X[:, b : b + 1], Y[:, b : b + 1]) for b in range(B)]
        assert whole == pytest.approx(sum(alone) / B, rel=1e-6)
        assert evaluate(model, X, Y) == whole  # eval mode: no dropout, the same every time
    X4, Y4 = eval_batches(ids, 4, 10)
    X7, Y7 = eval_batches(ids, 7, 10)
    assert Y4.numel() != Y7.numel()  # 4 x 25 x 10 tokens, and 7 x 14 x 10
    assert evaluate(model, X4, Y4) == pytest.approx(evaluate(model, X7, Y7), rel=0.05)


def test_warm_up_is_at_most_a_tenth_of_the_planned_batches():
    """Issue 21: 7 batches an epoch and --warmup 100 once meant 14 epochs of warm-up."""
    assert schedule.warmup_for(100, 140) == 14  # 20 epochs of 7 batches
    assert schedule.warmup_for(100, 5000) == 100
    assert schedule.warmup_for(100, 0) == 100  # planned batches not known: as given
    assert schedule.warmup_for(0, 140) == 0


def test_patience_waits_at_least_its_floor_of_batches():
    floor = schedule.PATIENCE_BATCHES
    assert schedule.patience_epochs(3, 7) == math.ceil(floor / 7) > 3
    assert schedule.patience_epochs(3, 10 * floor) == 3
    assert schedule.patience_epochs(3, 0) == floor  # no batch is counted as one


@pytest.mark.slow
def test_a_short_run_reaches_its_rate_after_a_tenth_of_its_batches(tmp_path):
    """End to end: 3 epochs of about 33 batches and --warmup 100 warm up over 9 or so."""
    run = tmp_path / "run"
    run_cli("train", "timemachine", *TINY_RUN, "--epochs", "3", "--schedule", "cosine",
            "--warmup", "100", "--lr", "0.4", "--quiet", "--out", run, check=0)  # fmt: skip
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    # Uncapped, the rate after 33 of 100 warm-up batches would be 0.4 * 34 / 101 = 0.135.
    assert first["lr"] > 0.4 * 0.75


def test_over_a_time_limit_warm_up_ends_by_a_tenth_of_the_limit():
    lr, W, S = 1.0, 1000, 100.0
    cosine = Schedule("cosine", lr, W, 0.0, limit_seconds=S)
    assert cosine.rate(at(0, 0.0)) == pytest.approx(lr / (W + 1))  # batches lead at first
    assert cosine.rate(at(10, 5.0)) == pytest.approx(0.5)  # half of the tenth: half the rate
    after = cosine.rate(at(20, 10.0))  # a tenth of the limit: the decay from p = 0.1
    assert after == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))
    rates = [cosine.rate(at(k, s)) for k, s in [(30, 20.0), (40, 50.0), (50, 99.0)]]
    assert rates == sorted(rates, reverse=True) and rates[-1] < 0.01


def test_over_a_time_limit_and_epochs_the_decay_follows_whichever_ends_first():
    """--epochs and --time-limit together: p = max(s / S, (k - W) / (N - W)), so a run ends
    at the floor whether its epochs or its minutes run out first."""
    lr, W, N, S, m = 1.0, 10, 110, 100.0, 0.1
    both = Schedule("cosine", lr, W, m, planned_batches=N, limit_seconds=S)
    by_time = Schedule("cosine", lr, W, m, limit_seconds=S)
    by_batches = Schedule("cosine", lr, W, m, planned_batches=N)
    fast = at(60, 20.0)  # half the batches in a fifth of the time: the batches lead
    assert both.rate(fast) == pytest.approx(by_batches.rate(fast))
    assert by_batches.rate(fast) < by_time.rate(fast)
    slow = at(30, 80.0)  # a fifth of the batches in 0.8 of the time: the clock leads
    assert both.rate(slow) == pytest.approx(by_time.rate(slow))
    assert by_time.rate(slow) < by_batches.rate(slow)
    assert both.rate(at(N, 30.0)) == pytest.approx(m * lr)  # the last epoch ends at the floor
    assert both.rate(at(40, S)) == pytest.approx(m * lr)  # and so does the limit
