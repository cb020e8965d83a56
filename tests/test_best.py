"""The best checkpoint, early stopping, the time limit and the evaluation batch size, end to end.

Tiny runs through the command: new runs through the installed ``rnnlab``, and most
resumes and reads through ``cli.main`` in this process (the same code, without paying
torch's start-up each time). At --lr 5 the tiny run's validation loss is lowest after
epoch 2 and much higher after epoch 3 (about 4.2 against 8.7 nats), so its best and its
latest checkpoint differ.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from conftest import TINY_RUN, check_clean_error, run_cli
from rnnlab import checkpoint, cli
from rnnlab.schedule import PATIENCE_BATCHES, patience_epochs

BOUNCING = ["timemachine", *TINY_RUN, "--hidden", "32", "--lr", "5", "--quiet"]
OLD_RUN = Path(__file__).parent / "data" / "run-rnnlm-0.1.0"

pytestmark = pytest.mark.usefixtures("one_thread")


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def main(capsys):
    """``rnnlab ARGS`` in this process: (exit status, stdout, stderr)."""

    def run(*argv):
        status = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture
def eval_json(main):
    def run(path: Path, *options) -> dict:
        status, out, err = main("eval", path, "--json", *options)
        assert status == 0, err
        return json.loads(out)

    return run


def one_line_error(result, *words) -> None:
    """What check_clean_error checks of a command, for cli.main's (status, out, err)."""

    class Result:
        returncode, stdout, stderr = result

    check_clean_error(Result, *words)


@pytest.fixture(scope="module")
def bounced(tmp_path_factory):
    """Three epochs whose best is not the last."""
    run = tmp_path_factory.mktemp("best") / "run"
    run_cli("train", *BOUNCING, "--epochs", "3", "--out", run, check=0)
    return run


def best_epoch(records: list[dict]) -> int:
    return min(records, key=lambda r: r["val_loss"])["epoch"]


@pytest.mark.slow
def test_the_best_checkpoint_holds_the_epoch_of_the_lowest_validation_loss(bounced):
    records = metrics(bounced)
    assert best_epoch(records) == 2 and len(records) == 3, records
    best = checkpoint.read_checkpoint(bounced, slot=checkpoint.BEST)
    latest = checkpoint.read_checkpoint(bounced)
    assert (best.epoch, latest.epoch) == (2, 3)
    assert best.schedule is not None and best.schedule.best_epoch == 2
    assert best.schedule.best_loss == records[1]["val_loss"]
    assert [r["lr"] for r in records] == [5.0] * 3  # the constant schedule's rate


def test_generate_and_eval_read_the_best_checkpoint_unless_told_latest(bounced, eval_json, main):
    records = metrics(bounced)
    best = eval_json(bounced)
    assert (best["checkpoint"], best["epoch"]) == ("best", 2)
    assert best["loss"] == pytest.approx(records[1]["val_loss"], rel=1e-9)
    latest = eval_json(bounced, "--checkpoint", "latest")
    assert (latest["checkpoint"], latest["epoch"]) == ("latest", 3)
    assert latest["loss"] == pytest.approx(records[2]["val_loss"], rel=1e-9)
    assert latest["bpt"] == pytest.approx(latest["loss"] / 0.6931471805599453)
    length = ["--length", "30", "--prefix", "the "]
    assert main("generate", bounced, *length) != main(
        "generate", bounced, *length, "--checkpoint", "latest"
    )


def test_eval_scores_at_its_own_batch_size(bounced, eval_json):
    default = eval_json(bounced)
    assert default["batch_size"] == 8  # the run's --batch-size
    two = eval_json(bounced, "--batch-size", "2")
    assert two["batch_size"] == 2 and two["tokens"] != default["tokens"]
    assert two["loss"] == pytest.approx(default["loss"], rel=0.05)  # other streams, same text


@pytest.mark.slow
def test_a_damaged_best_checkpoint_is_a_clear_error_and_latest_still_serves(
    bounced, tmp_path, clean_error, main
):
    run = tmp_path / "run"
    shutil.copytree(bounced, run)
    folder = run / checkpoint.read_pointer(run, checkpoint.BEST)["current"]
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "model.safetensors").write_bytes(bytes(data))
    words = ("best checkpoint", "model.safetensors", "--checkpoint latest")
    clean_error(run_cli("generate", run), *words)  # the real command: no traceback
    one_line_error(main("eval", run), *words)
    for command in ("generate", "eval"):
        assert main(command, run, "--checkpoint", "latest")[0] == 0
    (run / "best.json").write_text("{}")
    one_line_error(main("eval", run), "best.json", "--checkpoint latest")
    assert main("train", "--out", run, "--resume", "--epochs", "4", "--quiet")[0] == 0


def test_a_lost_best_pointer_is_recovered_and_a_run_without_best_falls_back(
    bounced, tmp_path, main
):
    run = tmp_path / "run"
    shutil.copytree(bounced, run)
    (run / "best.json").unlink()
    status, out, _ = main("eval", run, "--json")
    assert json.loads(out)["epoch"] == 2  # the newest complete best folder, read only
    assert not (run / "best.json").exists()
    shutil.rmtree(run / "best")
    status, out, err = main("eval", run, "--json")
    assert status == 0 and json.loads(out)["checkpoint"] == "latest" and err == ""


@pytest.mark.slow
def test_patience_stops_early_and_a_resume_needs_more_of_it(tmp_path, main):
    run = tmp_path / "run"
    result = run_cli("train", *BOUNCING, "--epochs", "12", "--patience", "2", "--out", run,
                     check=0)  # fmt: skip
    records = metrics(run)
    # Which epoch is best depends on the processor's arithmetic (a rate of 5 bounces);
    # that the run stops `wait` epochs after it, before its 12, does not. An epoch here is
    # about 33 batches, so --patience 2 waits the epochs that hold PATIENCE_BATCHES.
    wait = patience_epochs(2, records[-1]["tokens"] // (8 * 10))
    assert wait == math.ceil(PATIENCE_BATCHES / (records[-1]["tokens"] // 80)) > 2
    best, last = best_epoch(records), len(records)
    assert last == best + wait and last < 12, records  # the epochs after the best: no better
    assert f"stopped early after epoch {last}/12" in result.stdout, result.stdout
    assert f"no lower validation loss for {wait} epoch(s)" in result.stdout
    assert f"epoch {best}" in result.stdout
    status, out, _ = main("train", "--out", run, "--resume")
    assert status == 0 and f"--patience larger than {wait}" in out and len(metrics(run)) == last
    assert main("train", "--out", run, "--resume", "--patience", wait + 1)[0] == 0
    assert len(metrics(run)) >= last + 1


@pytest.mark.slow
def test_a_time_limit_stops_with_a_checkpoint_and_resume_continues(tmp_path, main):
    run = tmp_path / "run"
    options = ["timemachine", *TINY_RUN, "--epochs", "5", "--quiet", "--out", run]
    stopped = run_cli("train", *options, "--time-limit", "0.001", check=0)
    assert "time limit of 0.001 minutes reached" in stopped.stdout
    assert "--resume --time-limit" in stopped.stdout and stopped.stderr == ""
    ckpt = checkpoint.read_checkpoint(run)  # intact and verified
    assert ckpt.epoch < 5 and ckpt.schedule is not None
    assert ckpt.schedule.seconds >= 0.06  # it records the time trained, for the next resume
    status, out, _ = main("train", "--out", run, "--resume")
    assert status == 0 and "already trained for" in out and "--time-limit" in out
    assert checkpoint.read_checkpoint(run).generation == ckpt.generation  # nothing trained
    assert main("train", "--out", run, "--resume", "--time-limit", "30")[0] == 0
    assert [r["epoch"] for r in metrics(run)] == [1, 2, 3, 4, 5]
    assert json.loads((run / "config.json").read_text())["time_limit"] == 30


@pytest.mark.slow
def test_a_time_limit_validates_where_it_stops_and_keeps_those_weights_as_the_best(
    tmp_path, main, eval_json
):
    """Issue 21: the weights a time limit stops in (a cosine over the limit has just
    annealed them) are validated; when they are the lowest so far, best/ holds them."""
    run = tmp_path / "run"
    # About 1,570 batches an epoch, and 0.3 s of training: the limit stops the run inside its
    # first epoch (on a fast day of the 2-core machine after about 500 batches).
    options = ["timemachine", *TINY_RUN, "--max-tokens", "140000", "--hidden", "64", "--epochs",
               "3"]  # fmt: skip
    stopped = run_cli("train", *options, "--schedule", "cosine", "--lr", "0.5",
                      "--time-limit", "0.005", "--out", run, check=0)  # fmt: skip
    assert "validated where it stopped" in stopped.stdout
    assert "(the lowest so far: kept as the best)" in stopped.stdout
    latest = checkpoint.read_checkpoint(run)
    best = checkpoint.read_checkpoint(run, slot=checkpoint.BEST)
    assert latest.epoch == 0 and latest.progress.batch > 0
    assert (best.epoch, best.progress.batch) == (0, latest.progress.batch)
    clock = latest.schedule
    assert clock is not None and (clock.best_epoch, clock.best_batch) == (0, latest.progress.batch)
    assert not (run / "metrics.jsonl").exists() or metrics(run) == []  # no epoch ended
    scored = eval_json(run)  # eval reads best/: the stopped weights, and their loss
    assert scored["checkpoint"] == "best" and scored["loss"] == pytest.approx(
        clock.best_loss, rel=1e-5
    )
    # Resumed with more time, the run goes on from there; the best moves only if beaten.
    status, out, err = main("train", "--out", run, "--resume", "--time-limit", "0.01", "--quiet")
    assert status == 0, err
    after = checkpoint.read_checkpoint(run).schedule
    assert after is not None and after.best_loss is not None
    assert after.best_loss <= clock.best_loss


def test_a_loss_where_a_time_limit_stopped_becomes_the_best_only_if_lower():
    from rnnlab.schedule import ScheduleState, at_stop

    state = ScheduleState(lr=1.0, best_loss=2.0, best_epoch=3)
    assert at_stop(state, 3, 7, 2.5) == state  # not lower: the best stays epoch 3's
    lower = at_stop(state, 3, 7, 1.5)
    assert (lower.best_loss, lower.best_epoch, lower.best_batch) == (1.5, 3, 7)
    assert lower.best_epoch_ended == 4  # patience counts from the end of that epoch


@pytest.mark.slow
def test_a_cosine_schedule_over_a_time_limit_has_decayed_by_its_end(tmp_path):
    run = tmp_path / "run"
    options = ["timemachine", *TINY_RUN, "--epochs", "500", "--quiet", "--out", run]
    run_cli("train", *options, "--schedule", "cosine", "--time-limit", "0.05", check=0)
    ckpt = checkpoint.read_checkpoint(run)
    assert ckpt.epoch < 500
    rates = [r["lr"] for r in ckpt.history]  # each epoch's last rate, by the clock
    assert rates[0] > 0.5 and rates == sorted(rates, reverse=True)
    # The last batch began less than one batch before the limit: the rate is near 0.
    assert ckpt.optimizer["param_groups"][0]["lr"] < 0.01


def test_a_run_written_before_best_checkpoints_still_loads_and_resumes(tmp_path, main, eval_json):
    """tests/data/run-rnnlm-0.1.0: trainer.json format 1, no best/."""
    for command in ("generate", "eval"):
        status, _, err = main(command, OLD_RUN)
        assert status == 0 and err == "", err
    old = eval_json(OLD_RUN)
    assert (old["checkpoint"], old["epoch"]) == ("latest", 2)
    assert old["loss"] == pytest.approx(2.8923246463139853, rel=1e-6)
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    assert main("train", "--out", run, "--resume", "--epochs", "3", "--quiet")[0] == 0
    ckpt = checkpoint.read_checkpoint(run)
    assert ckpt.epoch == 3 and ckpt.schedule is not None
    records = metrics(run)
    # Its clock, rebuilt from the history of format 1: the batches (4 x 8 tokens each) and
    # the lowest validation loss so far, which epoch 3 had to beat to become the best.
    assert ckpt.schedule.batches == sum(r["tokens"] for r in records) // 32
    assert ckpt.schedule.best_epoch == best_epoch(records)
    if best_epoch(records) == 3:
        best = checkpoint.read_checkpoint(run, slot=checkpoint.BEST)
        assert all(torch.equal(w, ckpt.weights[k]) for k, w in best.weights.items())
    else:  # the old run kept no weights of its best epoch: eval falls back to the latest
        assert not (run / "best").exists() and eval_json(run)["checkpoint"] == "latest"
