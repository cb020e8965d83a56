"""Data-parallel training under torchrun: the same run on 1, 2 processes or 2 "machines".

The launches go through the real ``torchrun`` command (gloo on the CPU). Runs that
compare numbers train in float64 (tests/faults.py --float64): there, two processes
give one process' per-epoch losses and final weights within 1e-6 relative (measured:
about 1e-16). The float32 check through ``torchrun -m rnnlab`` allows 1e-5 relative,
for the different order of the sums (measured: about 3e-8).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from conftest import COMMAND_ENV, FAULTS, rnnlab_command
from rnnlab import checkpoint as ckpt_io
from rnnlab import run_state
from rnnlab import world as worlds
from rnnlab.errors import RnnlabError
from rnnlab.models.torchnn import Dropout, LockedDropout
from rnnlab.world import Ranks, Torchrun, World, from_environment, start

# Minutes of training, subprocesses and servers: the full suite (CI) runs it, the fast tier not.
pytestmark = pytest.mark.slow

# Each run: The Time Machine's first 6,000 letters, global batch 32 x 10 (16 batches an epoch).
SMALL = ["timemachine", "--max-tokens", "6000", "--batch-size", "32", "--num-steps", "10",
         "--hidden", "16", "--device", "cpu", "--quiet"]  # fmt: skip
SCRATCH_RNN = ["--impl", "scratch", "--cell", "rnn"]
FUSED_GRU = ["--impl", "fused", "--cell", "gru", "--layers", "2"]
LSTM_DROPOUT = ["--impl", "torch", "--cell", "lstm", "--layers", "2", "--embedding", "8",
                "--dropout", "0.3", "--dropout-input", "0.1"]  # fmt: skip
LOCKED_RANDOM = [*LSTM_DROPOUT, "--locked-dropout", "--sampling", "random", "--optimizer", "adam",
                 "--lr", "0.01"]  # fmt: skip
# Some batches have no target in a tail cluster: its weights get no gradient on some ranks.
ADAPTIVE = ["--impl", "torch", "--cell", "lstm", "--embedding", "8", "--adaptive-softmax",
            "--cutoffs", "4,20"]  # fmt: skip
FLOAT64_TOLERANCE = 1e-6
FLOAT32_TOLERANCE = 1e-5
LAUNCH_TIMEOUT = 240  # seconds for one launch on a busy 2-core machine


def torchrun_command() -> list[str]:
    """The ``torchrun`` command beside this Python; where torch was installed elsewhere (a
    venv over system packages), the same program as ``python -m torch.distributed.run``."""
    beside = Path(sys.executable).parent / "torchrun"
    return [str(beside)] if beside.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def launch(command: list[str], timeout: float = LAUNCH_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, capture_output=True, text=True, env=COMMAND_ENV, timeout=timeout, check=False
    )


def torchrun(*args, nproc: int = 2, float64: bool = True, fault: tuple = ()):
    """``torchrun --standalone --nproc-per-node N`` of ``rnnlab train ARGS``: through
    tests/faults.py (float64, and ``fault``: e.g. ("--rank", 1, "crash-at-batch", 20)), or,
    with float64=False and no fault, as ``-m rnnlab`` itself."""
    head = [*torchrun_command(), "--standalone", f"--nproc-per-node={nproc}"]
    if float64 or fault:
        options = ["--float64"] if float64 else []
        program = [str(FAULTS), *options, *map(str, fault), "--"]
    else:
        program = ["-m", "rnnlab"]
    return launch([*head, *program, "train", *map(str, args)])


def one_process(*args, float64: bool = True):
    """``rnnlab train ARGS`` in one process, without torchrun (float64 via tests/faults.py)."""
    if float64:
        command = [sys.executable, str(FAULTS), "--float64", "--", "train"]
    else:
        command = [rnnlab_command(), "train"]
    return launch([*command, *map(str, args)])


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if result.returncode != 0:  # pytest.fail prints the whole message: every rank's last words
        command = " ".join(map(str, result.args))
        pytest.fail(f"exit status {result.returncode} of {command}\n{result.stderr[-6000:]}")
    return result


def losses(run: Path) -> list[tuple[float, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["train_loss"], r["val_loss"]) for r in rows]


def assert_same_run(a: Path, b: Path, tolerance: float) -> None:
    """The same per-epoch training and validation losses and final weights, within
    ``tolerance`` relative (weights: to their largest entry)."""
    la, lb = losses(a), losses(b)
    assert len(la) == len(lb) > 0
    for (ta, va), (tb, vb) in zip(la, lb):
        assert ta == pytest.approx(tb, rel=tolerance) and va == pytest.approx(vb, rel=tolerance)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        scale = max(wa[name].abs().max().item(), 1e-12)
        assert (wa[name] - wb[name]).abs().max().item() <= tolerance * scale, name


# ---- in-process: the pieces -------------------------------------------------------------


def test_without_torchrun_the_world_is_one_process():
    alone = from_environment({})
    assert type(alone) is World and (alone.rank, alone.size, alone.writes) == (0, 1, True)
    world = from_environment({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert world == Torchrun(1, 4, 1) and not world.writes
    with pytest.raises(RnnlabError, match="RANK"):
        from_environment({"WORLD_SIZE": "2"})


@pytest.mark.parametrize("seconds", [0, -5, float("nan"), 1e9])
def test_a_peer_timeout_out_of_range_is_refused(seconds):
    with pytest.raises(RnnlabError, match="--peer-timeout"):
        start(World(), seconds)


def test_each_rank_owns_a_contiguous_equal_share_of_the_streams():
    shares = [Ranks(r, 4).streams(32) for r in range(4)]
    assert shares == [slice(0, 8), slice(8, 16), slice(16, 24), slice(24, 32)]
    with pytest.raises(RnnlabError, match="--batch-size 30 .* multiple of 4"):
        Ranks(0, 4).streams(30)


def test_validation_streams_are_dealt_out_even_when_there_are_fewer_than_ranks():
    parts = [Ranks(r, 4).share_of(3) for r in range(4)]
    assert sum(p.stop - p.start for p in parts) == 3
    assert [i for p in parts for i in range(p.start, p.stop)] == [0, 1, 2]


@pytest.mark.parametrize("shape", [(7, 12, 5), (1, 4, 3)])
def test_dropout_draws_what_torch_dropout_draws(shape):
    x = torch.randn(shape, dtype=torch.float64)
    torch.manual_seed(3)
    expected = F.dropout(x, 0.3)
    torch.manual_seed(3)
    assert torch.equal(Dropout(0.3)(x), expected)


@pytest.mark.parametrize("kind", [Dropout, LockedDropout])
def test_a_share_of_the_streams_is_dropped_out_as_in_the_whole_batch(kind):
    """Rows [4, 8) of a batch of 12 streams get the masks the whole batch would give them."""
    x = torch.randn(6, 12, 5, dtype=torch.float64)
    whole = kind(0.4)
    torch.manual_seed(7)
    expected = whole(x)[:, 4:8]
    part = kind(0.4)
    part.share_masks(slice(4, 8), 12)
    torch.manual_seed(7)
    assert torch.equal(part(x[:, 4:8]), expected)


def test_a_rank_ends_its_process_with_its_status_and_its_output_flushed():
    """world.end: one process returns the status; a rank ends at once with it, and what
    it printed into a pipe (buffered) still arrives."""
    assert worlds.end(World(), 3) == 3
    program = (
        "import sys; from rnnlab import world as w; print('saved'); print('said', file=sys.stderr);"
        "w.end(w.Torchrun(1, 2), 5); print('never')"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (5, "saved\n", "said\n")


def test_each_rank_resumes_its_own_random_state_or_else_rank_0s():
    states = [torch.full((3,), i, dtype=torch.uint8) for i in range(3)]
    rng = {"rng.torch": states[0]}
    for rank, state in enumerate(states[:2]):
        rng[f"rng.rank.{rank}.torch"] = state
    assert torch.equal(run_state.rng_of_rank(rng, 1, 2)["rng.torch"], states[1])
    assert list(run_state.rng_of_rank(rng, 1, 2)) == ["rng.torch"]
    # written by 2 processes, resumed by 1 or 3: every rank takes the run's own (rank 0's)
    assert torch.equal(run_state.rng_of_rank(rng, 0, 1)["rng.torch"], states[0])
    assert torch.equal(run_state.rng_of_rank(rng, 2, 3)["rng.torch"], states[0])


# ---- through torchrun ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """``alone(*args)``: the one-process run (float64) of ``rnnlab train ARGS`` that the
    launches below must reproduce, trained once for the module whichever tests ask for it."""
    runs: dict[tuple[str, ...], Path] = {}

    def run_of(*args) -> Path:
        key = tuple(map(str, args))
        if key not in runs:
            runs[key] = tmp_path_factory.mktemp("alone") / "run"
            ok(one_process(*args, "--out", runs[key]))
        return runs[key]

    return run_of


@pytest.mark.parametrize(
    "model",
    [SCRATCH_RNN, FUSED_GRU, LSTM_DROPOUT, LOCKED_RANDOM, ADAPTIVE],
    ids=["scratch-rnn", "fused-gru", "lstm", "locked", "adaptive-softmax"],
)
def test_two_processes_train_what_one_process_trains(model, tmp_path, alone):
    args = [*SMALL, *model, "--epochs", "2"]
    result = ok(torchrun(*args, "--out", tmp_path / "two"))
    assert_same_run(alone(*args), tmp_path / "two", FLOAT64_TOLERANCE)
    assert "rnnlab: " not in result.stderr  # --quiet, and nothing went wrong


def test_rnnlab_itself_under_torchrun_in_float32(tmp_path):
    """`torchrun -m rnnlab train`: rank 0 prints the log once; the numbers are one process'."""
    args = [*SMALL[:-1], *LSTM_DROPOUT, "--epochs", "2"]
    ok(one_process(*args, "--out", tmp_path / "one", float64=False))
    result = ok(torchrun(*args, "--out", tmp_path / "two", float64=False))
    assert result.stdout.count("epoch 2/2") == 1
    assert_same_run(tmp_path / "one", tmp_path / "two", FLOAT32_TOLERANCE)
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["batch_size"] == 32  # the global batch, as one process would train it


def test_a_batch_that_cannot_be_split_is_an_error_before_anything_starts(tmp_path):
    result = torchrun(*SMALL, "--batch-size", "5", "--out", tmp_path / "run", float64=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("rnnlab: ")]
    assert len(errors) == 1, result.stderr  # said once, by rank 0
    assert "--batch-size 5 cannot be split evenly over 2 processes" in errors[0]
    # torchrun prints a traceback of its own launcher; none may come from rnnlab's code
    frames = [line for line in result.stderr.splitlines() if line.lstrip().startswith('File "')]
    assert not [frame for frame in frames if "/rnnlab/" in frame], result.stderr
    assert not (tmp_path / "run").exists()


def test_a_killed_rank_stops_the_others_and_the_run_resumes_exactly(tmp_path):
    """Rank 1 is killed (SIGKILL) before batch 21 (in epoch 2, after the checkpoint of
    batch 4 of it); rank 0 stops with a message naming it. The checkpoint it leaves
    resumes on two processes and on one to the uninterrupted run's numbers."""
    args = [*SMALL, *LSTM_DROPOUT, "--epochs", "3", "--checkpoint-every", "4"]
    ok(torchrun(*args, "--out", tmp_path / "whole"))

    start = time.monotonic()
    killed = torchrun(*args, "--out", tmp_path / "cut", fault=("--rank", 1, "crash-at-batch", 20))
    seconds = time.monotonic() - start
    assert killed.returncode != 0
    lines = [line for line in killed.stderr.splitlines() if line.startswith("rnnlab: error:")]
    assert len(lines) == 1, killed.stderr
    assert "rank 1 stopped answering" in lines[0] and "--resume" in lines[0]
    assert seconds < 60  # noticed at once, named after a 5 s roll call (start-up included)
    checkpoint = ckpt_io.read_checkpoint(tmp_path / "cut")  # whole, and verified
    assert (checkpoint.epoch, checkpoint.progress.batch) == (1, 4)
    assert checkpoint.progress.state[0].shape[1] == 32  # all 32 streams' carried state
    assert len([k for k in checkpoint.rng if k.endswith(".torch")]) == 3  # run, rank 0, 1

    shutil.copytree(tmp_path / "cut", tmp_path / "cut-on-one")
    ok(torchrun("--out", tmp_path / "cut", "--resume", "--quiet"))
    assert_same_run(tmp_path / "whole", tmp_path / "cut", FLOAT64_TOLERANCE)
    ok(one_process("--out", tmp_path / "cut-on-one", "--resume", "--quiet"))
    assert_same_run(tmp_path / "whole", tmp_path / "cut-on-one", FLOAT64_TOLERANCE)


def test_ctrl_c_on_the_launcher_stops_every_rank_with_a_checkpoint(tmp_path, alone):
    """SIGINT to torchrun (as Ctrl-C in its terminal) before batch 11: every rank stops
    after an agreed batch, rank 0 saves and says so; --resume then finishes the run as
    the uninterrupted one (two processes) and a one-process run of it (one) would."""
    args = [*SMALL, *LSTM_DROPOUT, "--epochs", "2"]
    stopped = torchrun(
        *args, "--out", tmp_path / "cut", fault=("--rank", 0, "interrupt-launcher-at-batch", 10)
    )
    assert stopped.returncode != 0
    notes = [line for line in stopped.stderr.splitlines() if line.startswith("rnnlab: ")]
    assert len(notes) == 1 and notes[0].startswith("rnnlab: SIGINT received: stopped at epoch 1")
    checkpoint = ckpt_io.read_checkpoint(tmp_path / "cut")
    assert checkpoint.epoch == 0 and 10 <= checkpoint.progress.batch < 16
    ok(torchrun("--out", tmp_path / "cut", "--resume", "--quiet"))
    assert_same_run(alone(*args), tmp_path / "cut", FLOAT64_TOLERANCE)


def test_a_time_limit_stops_every_rank_after_the_same_batch(tmp_path):
    """The ranks follow rank 0's clock: the run stops once, says so once, exit status 0."""
    args = [*SMALL[:-1], *LSTM_DROPOUT, "--epochs", "200", "--time-limit", "0.05"]
    result = ok(torchrun(*args, "--out", tmp_path / "run", float64=False))
    assert result.stdout.count("time limit of 0.05 minutes reached") == 1, result.stdout
    checkpoint = ckpt_io.read_checkpoint(tmp_path / "run")
    assert 3 <= checkpoint.schedule.seconds < 30 and checkpoint.epoch < 200


def test_a_one_process_checkpoint_resumes_on_two(tmp_path, alone):
    args = [*SMALL, *SCRATCH_RNN, "--sampling", "random"]
    ok(one_process(*args, "--epochs", "1", "--out", tmp_path / "run"))
    ok(torchrun("--out", tmp_path / "run", "--resume", "--epochs", "3", "--quiet"))
    assert_same_run(alone(*args, "--epochs", "3"), tmp_path / "run", FLOAT64_TOLERANCE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_machines_train_what_one_process_trains(tmp_path, alone):
    """Two torchrun agents that meet through a c10d rendezvous, as on two machines
    (here both on this one, on 127.0.0.1): one rank each."""
    args = [*SMALL, *LSTM_DROPOUT, "--epochs", "2"]
    endpoint = f"127.0.0.1:{free_port()}"
    machines = [
        subprocess.Popen(
            [
                *torchrun_command(),
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                endpoint,
                "--rdzv-id",
                "rnnlab-test",
                str(FAULTS),
                "--float64",
                "--",
                "train",
                *map(str, args),
                "--out",
                str(tmp_path / "two"),
            ],
            env=COMMAND_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    for machine in machines:
        _, err = machine.communicate(timeout=LAUNCH_TIMEOUT)
        assert machine.returncode == 0, err[-3000:]
    assert_same_run(alone(*args), tmp_path / "two", FLOAT64_TOLERANCE)
