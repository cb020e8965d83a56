"""Run directories that nothing a user plausibly does can silently break (issue 10).

One test per finding: the weights copy, the lock, reads racing a training process,
a lost checkpoint.json, a changed corpus, --out over other files, a closed standard
output, symbolic links, pointers leading out, half-made runs, misleading messages,
and Ctrl-C at any moment.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import COMMAND_ENV, TINY_RUN, rnnlab_command, run_cli, run_with_fault, save_run_state
from rnnlab import checkpoint, cli, files
from rnnlab.trained import load_run

TINY = [*TINY_RUN, "--quiet"]

# Minutes of training, subprocesses and fault injection: the full suite (CI) runs it, the fast
# tier not.
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished two-epoch run (copy it before changing it)."""
    run = tmp_path_factory.mktemp("safety") / "run"
    run_cli("train", "timemachine", "--out", run, "--epochs", "2", *TINY, check=0)
    return run


def copy_of(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target, symlinks=True)
    return target


def start_training(run: Path, *options: str) -> subprocess.Popen:
    """A training process that is still running once its first checkpoint exists."""
    proc = subprocess.Popen(
        [
            rnnlab_command(),
            "train",
            "timemachine",
            "--out",
            str(run),
            *TINY,
            "--epochs",
            "200",
            *options,
        ],
        env=COMMAND_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (run / "checkpoint.json").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.02)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)


# ---------------------------------------------------------------- data loss


def test_writing_over_the_weights_copy_leaves_the_checkpoint_intact(trained, tmp_path):
    run = copy_of(trained, tmp_path)
    before = checkpoint.read_checkpoint(run)
    with open(run / "model.safetensors", "wb") as f:  # another tool saving over "its" file
        f.write(b"not a model")
    after = checkpoint.read_checkpoint(run)
    for key, value in before.weights.items():
        assert torch.equal(after.weights[key], value)
    run_cli("generate", run, "--length", "5", check=0)
    run_cli("train", "--out", run, "--resume", "--epochs", "3", "--quiet", check=0)
    assert load_file(run / "model.safetensors").keys() == before.weights.keys()


def test_a_second_training_process_is_refused_naming_the_first(tmp_path, clean_error):
    run = tmp_path / "run"
    first = start_training(run)
    try:
        second = run_cli("train", "--out", run, "--resume", "--epochs", "300")
        clean_error(second, "another rnnlab train", f"PID {first.pid}")
        config = json.loads((run / "config.json").read_text())
        assert config["epochs"] == 200  # the refused resume wrote nothing
    finally:
        stop(first)
    run_cli("train", "--out", run, "--resume", "--epochs", "1", check=0)  # the lock is gone


def test_reading_a_checkpoint_while_it_is_replaced_retries(trained, tmp_path, monkeypatch):
    """A reader that read the pointer just before two saves still gets a whole checkpoint."""
    run = copy_of(trained, tmp_path)
    ckpt = checkpoint.read_checkpoint(run)
    cfg, vocab, model, _ = load_run(run)
    real_read = files.read_regular
    saves = []

    def saves_meanwhile(path, limit, advice="give a regular file"):
        if Path(path).name == "manifest.json" and not saves:
            for _ in range(2):  # gen N+1 and N+2: gen N is deleted under the reader
                saves.append(
                    save_run_state(
                        run,
                        model,
                        torch.optim.SGD(model.parameters(), lr=1.0),
                        2,
                        ckpt.progress,
                        ckpt.history,
                        cfg,
                    )
                )
        return real_read(path, limit, advice)

    monkeypatch.setattr(files, "read_regular", saves_meanwhile)
    again = checkpoint.read_checkpoint(run)
    assert saves == [ckpt.generation + 1, ckpt.generation + 2]
    assert again.generation == ckpt.generation + 2


def test_readers_never_fail_while_a_run_saves_every_batch(tmp_path):
    run = tmp_path / "run"
    proc = start_training(run, "--checkpoint-every", "1")
    reads = 0
    try:
        deadline = time.time() + 8
        while time.time() < deadline and proc.poll() is None:
            checkpoint.read_checkpoint(run)
            reads += 1
    finally:
        stop(proc)
    assert reads > 20
    print(f"\n{reads} reads of a checkpoint replaced every batch: all whole")


def test_a_lost_pointer_resumes_from_the_newest_complete_checkpoint(trained, tmp_path):
    run = copy_of(trained, tmp_path)
    kept = checkpoint.read_checkpoint(run)
    (run / "checkpoint.json").unlink()
    generate = run_cli("generate", run, "--length", "5", check=0)  # reads it, writes nothing
    assert generate.stdout and not (run / "checkpoint.json").exists()
    resumed = run_cli("train", "--out", run, "--resume", "--epochs", "3")
    assert resumed.returncode == 0, resumed.stderr
    assert "lost checkpoint.json" in resumed.stderr
    assert "epoch 3/3" in resumed.stdout and "epoch 1/3" not in resumed.stdout
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]  # continued, not started over
    assert checkpoint.read_checkpoint(run).generation > kept.generation


def test_a_lost_pointer_with_no_complete_checkpoint_deletes_nothing(trained, tmp_path, clean_error):
    run = copy_of(trained, tmp_path)
    (run / "checkpoint.json").unlink()
    folders = sorted((run / "checkpoints").iterdir())
    for folder in folders:
        with open(folder / "model.safetensors", "r+b") as f:
            f.truncate(10)
    before = sorted(str(p.relative_to(run)) for p in (run / "checkpoints").rglob("*"))
    clean_error(run_cli("train", "--out", run, "--resume", "--epochs", "3"), "none of its")
    assert sorted(str(p.relative_to(run)) for p in (run / "checkpoints").rglob("*")) == before


def test_a_lost_pointer_and_a_damaged_newest_checkpoint_fall_back_to_the_one_before(
    trained, tmp_path
):
    run = copy_of(trained, tmp_path)
    newest = run / checkpoint.read_pointer(run)["current"]
    (run / "checkpoint.json").unlink()
    with open(newest / "trainer.json", "r+b") as f:
        f.truncate(10)
    ckpt = checkpoint.recover(run)
    assert ckpt is not None and ckpt.generation == int(newest.name[4:]) - 1


def changed_corpus_run(tmp_path: Path) -> tuple[Path, Path]:
    text = tmp_path / "story.txt"
    words = [f"the {w} sat on the mat and saw a {w}" for w in ("cat", "dog", "bat", "rat")]
    story = " ".join(words * 10)  # twice this is within --max-tokens 3000
    text.write_text(story + " " + story + "\n")
    run = tmp_path / "run"
    run_cli("train", text, "--out", run, "--epochs", "1", *TINY, check=0)
    # The same letters as often, first seen in the same order (so the same vocabulary),
    # but another text: the sentences of the second half come in another order.
    text.write_text(story + " " + " ".join(list(reversed(words)) * 10) + "\n")
    return text, run


def test_a_changed_corpus_stops_resume_and_eval(tmp_path, clean_error):
    text, run = changed_corpus_run(tmp_path)
    clean_error(
        run_cli("train", "--out", run, "--resume", "--epochs", "2"),
        "has changed",
        "--accept-changed-source",
    )
    clean_error(run_cli("eval", run), "has changed")
    run_cli("train", "--out", run, "--resume", "--epochs", "2", "--accept-changed-source", check=0)
    run_cli("eval", run, check=0)  # the run now records the new text


@pytest.mark.parametrize("out", ["", "."])
def test_out_naming_the_current_folder_is_refused(out, tmp_path, clean_error):
    result = subprocess.run(
        [rnnlab_command(), "train", "--out", out, *TINY],
        cwd=tmp_path,
        env=COMMAND_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    clean_error(result, "--out")
    assert list(tmp_path.iterdir()) == []


def test_out_naming_a_folder_of_other_files_is_refused(tmp_path, clean_error):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "config.json.txt").write_text("mine")
    clean_error(run_cli("train", "--out", folder, *TINY), "other files")
    assert [p.name for p in folder.iterdir()] == ["config.json.txt"]


def test_a_closed_standard_output_does_not_stop_training(tmp_path):
    run = tmp_path / "run"
    args = [a for a in TINY if a != "--quiet"]
    proc = subprocess.Popen(
        [
            rnnlab_command(),
            "train",
            "timemachine",
            "--out",
            str(run),
            *args,
            "--epochs",
            "4",
            "--sample-every",
            "1",
        ],
        env=COMMAND_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # like `| head -1`: read a line, then go away
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
    metrics = (run / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 4  # trained to the end


def test_generate_into_a_closed_pipe_does_not_claim_success(trained):
    proc = subprocess.Popen(
        [rnnlab_command(), "generate", str(trained), "--length", "200000"],
        env=COMMAND_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode not in (0, 1) and b"Traceback" not in err


def test_a_symlinked_checkpoints_folder_is_never_written_or_cleaned_through(
    trained, tmp_path, clean_error
):
    run = copy_of(trained, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "gen-000099").mkdir(parents=True)
    (elsewhere / "gen-000099" / "precious.txt").write_text("keep me")
    for entry in (run / "checkpoints").iterdir():
        shutil.move(str(entry), elsewhere / entry.name)
    (run / "checkpoints").rmdir()
    (run / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    clean_error(run_cli("train", "--out", run, "--resume", "--epochs", "3"), "symbolic link")
    assert (elsewhere / "gen-000099" / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "current",
    [
        "checkpoints/gen-000002/../../../outside",
        "../outside/gen-000002",
        "/tmp/gen-000002",
        "checkpoints/gen-2",
    ],
)
def test_a_pointer_cannot_lead_out_of_the_run(trained, tmp_path, current, capsys):
    run = copy_of(trained, tmp_path)
    pointer = json.loads((run / "checkpoint.json").read_text())
    (run / "checkpoint.json").write_text(json.dumps({**pointer, "current": current}))
    assert cli.main(["generate", str(run), "--length", "3", "--checkpoint", "latest"]) == 2
    assert "damaged" in capsys.readouterr().err


def test_a_checkpoint_folder_that_is_a_link_is_refused(trained, tmp_path, capsys):
    run = copy_of(trained, tmp_path)
    pointer = json.loads((run / "checkpoint.json").read_text())
    folder = run / pointer["current"]
    outside = tmp_path / "outside"
    shutil.move(str(folder), outside)
    folder.symlink_to(outside, target_is_directory=True)
    assert cli.main(["generate", str(run), "--length", "3", "--checkpoint", "latest"]) == 2
    assert "symbolic link" in capsys.readouterr().err


def test_a_run_refused_before_its_first_checkpoint_leaves_no_folder(tmp_path, clean_error):
    run = tmp_path / "new" / "run"
    result = run_with_fault("nan-at-batch", 1, "train", "timemachine", "--out", run, *TINY)
    clean_error(result, "batch 1")
    assert not run.exists()


def test_resuming_with_fewer_epochs_does_not_rewrite_the_config(trained, tmp_path):
    run = copy_of(trained, tmp_path)
    result = run_cli("train", "--out", run, "--resume", "--epochs", "1", check=0)
    assert "already trained 2 epoch" in result.stdout
    assert json.loads((run / "config.json").read_text())["epochs"] == 2


def test_a_failed_write_in_a_new_run_does_not_suggest_resume(tmp_path, clean_error):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    result = run_cli("train", "timemachine", "--out", blocker / "run", *TINY)
    clean_error(result)
    assert "--resume" not in result.stderr


def test_eval_warns_when_the_text_is_mostly_unknown(trained, tmp_path):
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("ЖЖЖ ЖЖЖ ЖЖЖ " * 400 + "the time machine " * 10)
    run_cli(
        "train", "--out", tmp_path / "chars", "--mode", "chars", *TINY, "--epochs", "1", check=0
    )
    result = run_cli("eval", tmp_path / "chars", foreign, check=0)
    assert "not in the run's vocabulary" in result.stderr


# ---------------------------------------------------------------- Ctrl-C at any moment


def test_ctrl_c_at_any_moment_exits_130_without_a_traceback(tmp_path):
    """SIGINT at random moments from start-up (imports, reading the text) into training: the
    run is long enough (200 epochs) to be still running however fast the machine is."""
    rng = random.Random(10)
    delays = sorted(rng.uniform(0.15, 4.0) for _ in range(10))
    for i, delay in enumerate(delays):
        run = tmp_path / f"run{i}"
        proc = subprocess.Popen(
            [rnnlab_command(), "train", "timemachine", "--out", str(run), *TINY, "--epochs", "200"],
            env=COMMAND_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, (delay, err)
        # -2: ended by the signal itself, before rnnlab's handler was set (a shell shows 130)
        assert proc.returncode in (130, -2), (delay, proc.returncode, err)
    moments = ", ".join(f"{d:.2f}" for d in delays)
    print(f"\n{len(delays)} runs interrupted, at {moments} s: no traceback")


def test_more_threads_than_this_machine_has_are_refused_when_training(tmp_path, clean_error):
    too_many = (os.cpu_count() or 1) + 1
    result = run_cli("train", "--out", tmp_path / "run", *TINY, "--threads", str(too_many))
    clean_error(result, f"--threads {too_many}", "CPUs")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["metrics.jsonl", "perplexity.png"])
def test_a_folder_in_the_way_of_the_metrics_is_a_clean_error_that_keeps_the_checkpoint(
    trained, tmp_path, name, clean_error
):
    run = copy_of(trained, tmp_path)
    (run / name).unlink()
    (run / name).mkdir()  # a folder where the file goes
    (run / name / "keep.txt").write_text("mine")
    result = run_cli("train", "--out", run, "--resume", "--epochs", "3")
    clean_error(result, "could not write", "previous checkpoint is kept")
    assert checkpoint.read_checkpoint(run).epoch == 2  # the checkpoint there is intact
    assert (run / name / "keep.txt").read_text() == "mine"


def test_a_tensor_file_larger_than_the_model_can_be_is_refused_unread(trained, tmp_path, capsys):
    run = copy_of(trained, tmp_path)
    weights = run / checkpoint.read_pointer(run)["current"] / "model.safetensors"
    os.truncate(weights, 10 * 2**30)  # sparse: no disk is used, and it must never be read
    assert cli.main(["generate", str(run), "--length", "3", "--checkpoint", "latest"]) == 2
    assert "more than" in capsys.readouterr().err
