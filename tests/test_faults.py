"""Fault injection: kills, signals, damaged files, full disks and diverging losses.

Drives the command on tiny runs. Crashes and divergence come from tests/faults.py,
a launcher that wraps the function to break (the update step, or the file writer)
and then calls the command line's ``main``: the process SIGKILLs itself at a
chosen global batch or in the middle of writing its Nth checkpoint, or the update
at a batch diverges. After each crash the run is resumed and must end with the
same per-epoch metrics and bitwise the same weights as an uninterrupted run, and
the same best checkpoint; with a cosine or plateau schedule too, whose state (batches
trained, the lowest validation loss, the rate) the checkpoint keeps.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import COMMAND_ENV, TINY_RUN, rnnlab_command, run_cli, run_with_fault
from rnnlab import checkpoint, cli

TINY = ["timemachine", *TINY_RUN, "--hidden", "32", "--epochs", "3", "--checkpoint-every", "3",
        "--quiet"]  # fmt: skip
SCRATCH = TINY
# Dropout (torch's RNG), Adam (optimizer state), random sampling (fresh states).
TORCH_DROPOUT = TINY + [
    "--impl",
    "torch",
    "--layers",
    "2",
    "--dropout",
    "0.3",
    "--optimizer",
    "adam",
    "--lr",
    "0.01",
    "--sampling",
    "random",
    "--model",
    "lstm",
]
# Schedules whose rate changes within the run: every batch (cosine, after 10 of warm-up), and
# after epoch 3, whose validation loss at --lr 5 is far above epoch 2's (plateau).
SCHEDULES = {
    "cosine": TINY + ["--schedule", "cosine", "--warmup", "10", "--min-lr-frac", "0.1", "--lr",
                      "2"],
    "plateau": TINY + ["--schedule", "plateau", "--lr", "5", "--epochs", "4"],
}  # fmt: skip
BATCHES_PER_EPOCH = 33  # 2700 training tokens, 8 streams of 10 steps (after a random offset < 10)
TRIALS = {"crash_at_batch": 0, "crash_in_save": 0}


# Minutes of training, subprocesses and fault injection: the full suite (CI) runs it, the fast
# tier not.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


def rnnlab(*args, check: int | None = None):
    return run_cli(*args, check=check)


def metrics(run: Path):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def same_training(run: Path, reference: Path) -> None:
    """Per-epoch losses and rates, final weights and the best checkpoint equal, bit for bit."""
    got, want = metrics(run), metrics(reference)
    assert [(m["epoch"], m["train_loss"], m["val_loss"], m["lr"]) for m in got] == [
        (m["epoch"], m["train_loss"], m["val_loss"], m["lr"]) for m in want
    ]
    a, b = load_file(run / "model.safetensors"), load_file(reference / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    best, best_then = (
        checkpoint.read_checkpoint(r, slot=checkpoint.BEST) for r in (run, reference)
    )
    assert best.epoch == best_then.epoch and best.schedule == replace(
        best_then.schedule, seconds=best.schedule.seconds
    )
    for key in best.weights:
        assert torch.equal(best.weights[key], best_then.weights[key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs of both configurations."""
    root = tmp_path_factory.mktemp("reference")
    rnnlab("train", *SCRATCH, "--out", root / "scratch", check=0)
    rnnlab("train", *TORCH_DROPOUT, "--out", root / "torch", check=0)
    assert len(metrics(root / "scratch")) == 3
    return root


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory):
    """Uninterrupted runs of both changing schedules."""
    root = tmp_path_factory.mktemp("scheduled")
    for name, options in SCHEDULES.items():
        rnnlab("train", *options, "--out", root / name, check=0)
    rates = {name: [m["lr"] for m in metrics(root / name)] for name in SCHEDULES}
    assert rates["plateau"] == [5.0, 5.0, 5.0, 1.25], "the plateau run no longer plateaus"
    assert len(set(rates["cosine"])) == 3 and rates["cosine"][-1] < 0.25
    return root


@pytest.mark.parametrize(
    "name, batch",
    [("cosine", 5), ("cosine", 47), ("plateau", 50), ("plateau", 3 * BATCHES_PER_EPOCH + 10)],
)
def test_kill_mid_epoch_then_resume_is_exact_with_a_schedule(scheduled, tmp_path, name, batch):
    """In warm-up and in decay (cosine); before and after the rate is divided (plateau)."""
    run = tmp_path / name
    crashed = run_with_fault("crash-at-batch", batch, "train", *SCHEDULES[name], "--out", run)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    rnnlab("train", "--out", run, "--resume", "--quiet", check=0)
    same_training(run, scheduled / name)


def test_kill_while_writing_the_best_checkpoint_keeps_the_previous_best(scheduled, tmp_path):
    run = tmp_path / "run"
    options = SCHEDULES["plateau"]
    crashed = run_with_fault("crash-in-best-save", 2, "train", *options, "--out", run)
    assert crashed.returncode == -signal.SIGKILL
    best = checkpoint.read_checkpoint(run, slot=checkpoint.BEST)  # the first, whole
    latest = checkpoint.read_checkpoint(run)
    # killed at the end of epoch 2: the latest is its last batch checkpoint
    assert best.epoch == 1 and latest.epoch == 1 and latest.progress.batch > 0
    rnnlab("train", "--out", run, "--resume", "--quiet", check=0)
    same_training(run, scheduled / "plateau")


def test_a_time_limit_stops_like_a_signal_and_resume_is_exact(reference, tmp_path):
    run = tmp_path / "run"
    stopped = rnnlab("train", *SCRATCH, "--time-limit", "0.001", "--out", run, check=0)
    assert "time limit of 0.001 minutes reached" in stopped.stdout
    ckpt = checkpoint.read_checkpoint(run)
    assert ckpt.epoch < 3 and ckpt.schedule is not None and ckpt.schedule.seconds >= 0.06
    rnnlab("train", "--out", run, "--resume", "--time-limit", "60", "--quiet", check=0)
    same_training(run, reference / "scratch")


@pytest.mark.slow
def test_kill_at_random_batches_then_resume_is_exact(reference, tmp_path):
    rng = random.Random(6)
    total = 3 * BATCHES_PER_EPOCH
    trials = [("scratch", SCRATCH, rng.randrange(1, total)) for _ in range(3)]
    trials += [("torch", TORCH_DROPOUT, rng.randrange(1, total)) for _ in range(2)]
    for i, (name, options, batch) in enumerate(trials):
        run = tmp_path / f"{name}-{i}"
        crashed = run_with_fault("crash-at-batch", batch, "train", *options, "--out", run)
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr
        rnnlab("train", "--out", run, "--resume", "--quiet", check=0)
        same_training(run, reference / name)
        TRIALS["crash_at_batch"] += 1
    print(
        f"\n{TRIALS['crash_at_batch']} kill-at-batch trials at global batches "
        f"{[b for _, _, b in trials]}: resumed runs bitwise equal"
    )


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(reference, tmp_path):
    for i, nth_save in enumerate((1, 20)):
        run = tmp_path / f"save-{i}"
        crashed = run_with_fault("crash-in-save", nth_save, "train", *SCRATCH, "--out", run)
        assert crashed.returncode == -signal.SIGKILL
        if nth_save > 1:  # the previous checkpoint is intact and current
            ckpt = checkpoint.read_checkpoint(run)
            assert ckpt.generation == nth_save - 1
        rnnlab("train", "--out", run, "--resume", "--quiet", check=0)
        same_training(run, reference / "scratch")
        TRIALS["crash_in_save"] += 1
    print(f"\n{TRIALS['crash_in_save']} kill-during-save trials: resumed runs bitwise equal")


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_checkpoint_and_resume_is_exact(reference, tmp_path, signum, status):
    run = tmp_path / "run"
    # Same training as the reference, but more epochs planned, so it is still training when
    # the signal comes; --epochs does not change what each epoch computes.
    options = SCRATCH + ["--epochs", "50"]  # the later --epochs wins
    proc = subprocess.Popen(
        [rnnlab_command(), "train", *options, "--out", str(run)],
        env=COMMAND_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (run / "checkpoint.json").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert "resume with: rnnlab train --out" in err and "Traceback" not in err
    stopped = checkpoint.read_checkpoint(run)
    assert stopped.epoch < 3, "the signal came too late for this test"
    rnnlab("train", "--out", run, "--resume", "--epochs", "3", "--quiet", check=0)
    same_training(run, reference / "scratch")


@pytest.mark.parametrize(
    "name",
    [
        "config.json",
        "vocab.json",
        "checkpoint.json",
        "manifest.json",
        "model.safetensors",
        "trainer.safetensors",
        "trainer.json",
    ],
)
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_checkpoint_file_is_a_clear_error(reference, tmp_path, capsys, name, damage):
    run = tmp_path / "run"
    shutil.copytree(reference / "scratch", run)
    current = run / checkpoint.read_pointer(run)["current"]
    path = run / name if (run / name).exists() and name != "model.safetensors" else current / name
    data = bytearray(path.read_bytes())
    if damage == "flip":
        if name == "config.json":  # a flip inside a value may still be valid JSON; break it
            data[0] ^= 0xFF
        else:
            data[len(data) // 2] ^= 0x01
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    for argv in (
        ["generate", str(run), "--length", "5", "--checkpoint", "latest"],
        ["train", "--out", str(run), "--resume", "--epochs", "4", "--quiet"],
    ):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("rnnlab: error: "), err


def test_damaged_model_through_the_command_says_what_to_do(reference, tmp_path, clean_error):
    run = tmp_path / "run"
    shutil.copytree(reference / "scratch", run)
    current = run / checkpoint.read_pointer(run)["current"]
    with open(current / "model.safetensors", "r+b") as f:
        f.truncate(100)
    clean_error(rnnlab("generate", run, "--checkpoint", "latest"), "model.safetensors",
                "train again")  # fmt: skip
    shutil.rmtree(run / "checkpoints")
    clean_error(rnnlab("eval", run, "--checkpoint", "latest"), "missing")


def test_vocabulary_of_another_run_is_refused(reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference / "scratch", run)
    (run / "vocab.json").write_text(json.dumps({"idx_to_token": ["<unk>", " ", "e", "x"]}))
    assert cli.main(["generate", str(run)]) == 2
    assert "vocabulary" in capsys.readouterr().err


def test_nan_stops_with_the_message_and_keeps_the_last_good_checkpoint(tmp_path, clean_error):
    run = tmp_path / "run"
    result = run_with_fault("nan-at-batch", 40, "train", *SCRATCH, "--out", run)
    clean_error(result, "epoch 2", "batch 7", "last finite loss", "--lr")
    ckpt = checkpoint.read_checkpoint(run)
    assert (ckpt.epoch, ckpt.progress.batch) == (1, 6)  # global batch 39, the last finite one
    assert all(torch.isfinite(w).all() for w in ckpt.weights.values())
    assert len(metrics(run)) == 1


def test_unwritable_run_directory_is_a_clear_error(tmp_path, clean_error):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = rnnlab("train", *SCRATCH, "--out", blocker / "run")
    clean_error(result, "could not write")


def test_full_disk_keeps_the_previous_checkpoint(reference, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference / "scratch", run)
    before = checkpoint.read_checkpoint(run)
    real_replace = os.replace

    def full_disk(src, dst):
        if Path(dst).name == "checkpoint.json" or Path(dst).parent.name.startswith("gen-"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    status = cli.main(
        ["train", "--out", str(run), "--resume", "--epochs", "4", "--quiet", "--device", "cpu"]
    )
    err = capsys.readouterr().err
    assert status == 2 and "No space left on device" in err and "previous checkpoint" in err
    monkeypatch.setattr(os, "replace", real_replace)
    after = checkpoint.read_checkpoint(run)
    assert after.generation == before.generation and after.epoch == 3
    for key in before.weights:
        assert torch.equal(before.weights[key], after.weights[key])
