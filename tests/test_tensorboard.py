"""rnnlab train --tensorboard: the run's curves in RUN/tensorboard/, read back as TensorBoard
reads them (its EventAccumulator), continued without a repeated step after a crash and a
resume, written once under torchrun, and a one-line error when the package is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import COMMAND_ENV, TINY_RUN, check_clean_error, run_cli, run_with_fault
from rnnlab import cli
from rnnlab.board import BATCH_SCALARS, EPOCH_SCALARS, EVENT_FILE, FOLDER, Board

# Minutes of training, subprocesses and servers: the full suite (CI) runs it, the fast tier not.
pytestmark = pytest.mark.slow

EPOCHS = 3
RUN = ["timemachine", *TINY_RUN, "--epochs", EPOCHS, "--quiet", "--tensorboard"]


def curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of an event file or a folder of them, as TensorBoard sees it."""
    events = EventAccumulator(str(path), size_guidance={"scalars": 0})  # 0: keep every value
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory) -> Path:
    """A run trained from start to end with --tensorboard."""
    run = tmp_path_factory.mktemp("tensorboard") / "run"
    run_cli("train", *RUN, "--out", run, check=0)
    return run


def test_every_epoch_and_every_batch_is_a_point_at_the_batches_trained(whole_run):
    got = curves(whole_run / FOLDER)
    assert set(got) == set(EPOCH_SCALARS) | set(BATCH_SCALARS)
    records = metrics(whole_run)
    batches = len(got["batch/loss"])
    assert [step for step, _ in got["batch/loss"]] == list(range(1, batches + 1))
    for tag in BATCH_SCALARS:
        assert [step for step, _ in got[tag]] == list(range(1, batches + 1))
    ends = [step for step, _ in got["epoch/val_loss"]]
    assert len(ends) == EPOCHS and ends[-1] == batches  # one point per epoch, at its last batch
    for tag, key in EPOCH_SCALARS.items():
        assert [step for step, _ in got[tag]] == ends, tag
        if key in records[0]:  # all but train_bpt, which metrics.jsonl does not hold
            want = [r[key] for r in records]
            assert [v for _, v in got[tag]] == pytest.approx(want, rel=1e-6), tag  # float32
    # bits per token are the losses in bits; an epoch's loss is the mean of its batches'
    for (_, bpt), r in zip(got["epoch/train_bpt"], records):
        assert bpt == pytest.approx(r["train_loss"] / 0.6931471805599453, rel=1e-6)
    starts = [0, *ends]
    for (first, last), r in zip(zip(starts, starts[1:]), records):
        losses = [v for step, v in got["batch/loss"] if first < step <= last]
        assert sum(losses) / len(losses) == pytest.approx(r["train_loss"], rel=1e-5)
    assert all(norm > 0 for _, norm in got["batch/grad_norm"])
    assert all(lr == 1.0 for _, lr in got["batch/lr"])  # TINY_RUN's constant rate


@pytest.mark.parametrize(
    "fault, n, extra",
    [
        # killed while saving epoch 2's checkpoint, after epoch 2's points were flushed
        ("crash-in-save", 2, []),
        # killed in epoch 2 (33 batches an epoch), 3 batches after its checkpoint at batch 10
        ("crash-at-batch", 46, ["--checkpoint-every", "5"]),
    ],
)
def test_a_resumed_run_continues_the_curves_without_repeating_a_step(
    whole_run, tmp_path, fault, n, extra
):
    run = tmp_path / "run"
    crashed = run_with_fault(fault, n, "train", *RUN, *extra, "--out", run)
    assert crashed.returncode == -9, crashed.stderr  # SIGKILL
    first_session = curves(run / FOLDER)
    run_cli("train", "--out", run, "--resume", "--quiet", check=0)
    got, want = curves(run / FOLDER), curves(whole_run / FOLDER)
    assert len(list((run / FOLDER).glob(EVENT_FILE + "*"))) == 2  # one file per session
    assert set(got) == set(want)
    for tag, points in got.items():
        steps = [step for step, _ in points]
        assert steps == sorted(set(steps)), tag  # strictly increasing: nothing twice
        assert steps == [step for step, _ in want[tag]], tag
    # resuming is exact on the CPU: the same losses as the run never stopped
    for tag in ("epoch/train_loss", "epoch/val_loss", "batch/loss", "batch/grad_norm"):
        assert [v for _, v in got[tag]] == [v for _, v in want[tag]], tag
    # the crashed session had written epoch 2 (crash-in-save) or stopped within it
    assert len(first_session["epoch/val_loss"]) == (2 if fault == "crash-in-save" else 1)
    assert len(metrics(run)) == EPOCHS


def test_a_new_run_that_fails_before_its_first_checkpoint_leaves_no_curves(tmp_path):
    run = tmp_path / "run"
    failed = run_with_fault("nan-at-batch", 20, "train", *RUN, "--out", run)
    assert failed.returncode == 2 and "became nan" in failed.stderr, failed.stderr
    assert not run.exists()  # so the same --out can be used again


def test_a_session_opened_in_the_same_second_replaces_the_steps_it_writes_again(tmp_path):
    for value in (1.0, 2.0):  # two sessions, one after the other, at once
        board = Board(tmp_path, active=True)
        board.batch(1, torch.tensor(value), torch.tensor(0.5), 0.1)
        board.settle()
        board.close()
    names = sorted(p.name for p in (tmp_path / FOLDER).iterdir())
    assert len(names) == 2 and names[0].split(".")[3] < names[1].split(".")[3]
    assert curves(tmp_path / FOLDER)["batch/loss"] == [(1, 2.0)]


def test_an_inactive_board_writes_nothing(tmp_path):
    board = Board(tmp_path, active=False)
    board.batch(1, torch.tensor(1.0), torch.tensor(0.5), 0.1)
    board.settle()
    board.epoch(1, {})
    board.close()
    assert list(tmp_path.iterdir()) == []


def test_under_torchrun_only_rank_0_writes(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node=2", "-m", "rnnlab", "train", *map(str, RUN), "--out", run]
    result = subprocess.run(
        [str(word) for word in command],
        capture_output=True,
        text=True,
        env=COMMAND_ENV,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((run / FOLDER).glob(EVENT_FILE + "*"))) == 1
    got = curves(run / FOLDER)
    batches = len(got["batch/loss"])
    assert [step for step, _ in got["batch/loss"]] == list(range(1, batches + 1))
    assert len(got["epoch/val_loss"]) == EPOCHS


def test_without_the_package_a_one_line_error_before_training(
    monkeypatch, capsys, tmp_path, one_thread
):
    # The package missing, as Python sees it: torch.utils.tensorboard, imported afresh,
    # fails to import tensorboard.
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    for name in [m for m in sys.modules if m.startswith("torch.utils.tensorboard")]:
        monkeypatch.delitem(sys.modules, name)
    run = tmp_path / "run"
    status = cli.main(["train", *map(str, RUN), "--out", str(run)])
    out, err = capsys.readouterr()
    check_clean_error(
        SimpleNamespace(returncode=status, stdout=out, stderr=err),
        "--tensorboard",
        "pip install 'rnnlab[tensorboard]'",
    )
    assert not run.exists()  # nothing trained, nothing left behind
