"""Shared test fixtures: the corpora, the installed command, one torch thread."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# The corpora every test reads, with no network and no environment variable: The Time Machine
# and Tiny Shakespeare ship inside the package, and this folder holds ptb/{train,valid,test}.txt,
# a small stand-in for the Penn Treebank in its format (made by tests/data/make_ptb.py). The
# one place tests name it: `from conftest import DATA_DIR`.
DATA_DIR = Path(__file__).resolve().parent / "data" / "corpora"

# The verified copies of the real corpora (their README.md lists them): $RNNLAB_DATA_DIR, else
# the shared/data folder beside this repository. Only the tests marked real_data read it (their
# checksums and sizes); where neither is there, those tests are skipped, and CI runs them with
# `RNNLAB_DATA_DIR=../shared/data python -m pytest -m real_data`.
_NAMED_DATA_DIR = os.environ.get("RNNLAB_DATA_DIR")
VERIFIED_DATA_DIR = (
    Path(_NAMED_DATA_DIR or Path(__file__).resolve().parents[2] / "shared" / "data")
    .expanduser()
    .resolve()
)
NO_VERIFIED_DATA = (
    None
    if _NAMED_DATA_DIR or VERIFIED_DATA_DIR.is_dir()
    else f"a check of the real corpora: set RNNLAB_DATA_DIR to their verified copies "
    f"(none in {VERIFIED_DATA_DIR})"
)


MAX_WORKERS = 4  # the tests' own processes come in twos (torchrun's ranks, the book's runs)


def pytest_xdist_auto_num_workers(config):
    """How many workers ``-n auto`` (pyproject's addopts) starts: one per CPU this process
    may run on, at most MAX_WORKERS. Most tests train on one thread, so a 2-core machine
    finishes the suite in a little over half the time; the tests that launch two processes
    each still fit beside a second worker."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, MAX_WORKERS))


def pytest_collection_modifyitems(items):
    """Skip the tests marked real_data where there are no verified corpora to check, and
    put the slowest files first.

    A folder named by RNNLAB_DATA_DIR is never a reason to skip: there, a missing or
    different file fails the test, so a CI that names the folder cannot pass without it.

    The order: files whose every test is slow, then files with some slow tests, then the
    rest, each group in name order. The workers take whole files in this order
    (``--no-loadscope-reorder``), so the long files start at once and the short ones fill
    the end, rather than one worker finishing a long file alone.
    """
    if NO_VERIFIED_DATA is not None:
        for item in items:
            if item.get_closest_marker("real_data"):
                item.add_marker(pytest.mark.skip(reason=NO_VERIFIED_DATA))
    slow_in_file: dict[Path, list[bool]] = {}
    for item in items:
        slow_in_file.setdefault(item.path, []).append(item.get_closest_marker("slow") is not None)
    group = {path: 0 if all(slow) else 1 if any(slow) else 2 for path, slow in slow_in_file.items()}
    items.sort(key=lambda item: group[item.path])  # stable: a file's tests keep their order


@pytest.fixture(scope="session", autouse=True)
def corpora_from_data_dir():
    """Every test reads built-in corpora from DATA_DIR, never from the network or the cache.

    A test may still point RNNLAB_DATA_DIR elsewhere (monkeypatch puts DATA_DIR back).
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RNNLAB_DATA_DIR", str(DATA_DIR))
        yield


@pytest.fixture
def data_dir() -> Path:
    """The folder of corpora the tests read (DATA_DIR)."""
    return DATA_DIR


@pytest.fixture
def verified_data_dir() -> Path:
    """The folder of the real corpora's verified copies (VERIFIED_DATA_DIR): real_data only."""
    return VERIFIED_DATA_DIR


# d2l 8.2 on The Time Machine: every character token with its count, most frequent first.
TIME_MACHINE_D2L_FREQS = [
    (" ", 29927),
    ("e", 17838),
    ("t", 13515),
    ("a", 11704),
    ("i", 10138),
    ("n", 9917),
    ("o", 9758),
    ("s", 8486),
    ("h", 8257),
    ("r", 7674),
    ("d", 6337),
    ("l", 6146),
    ("m", 4043),
    ("u", 3805),
    ("c", 3424),
    ("f", 3354),
    ("w", 3225),
    ("g", 3075),
    ("y", 2679),
    ("p", 2427),
    ("b", 1897),
    ("v", 1295),
    ("k", 1087),
    ("x", 236),
    ("z", 144),
    ("j", 97),
    ("q", 95),
]


def disturb_global_random_state(seed: int) -> None:
    """Reseed and draw from every global generator a careless implementation might use."""
    random.seed(seed)
    random.random()
    np.random.seed(seed)
    np.random.rand(3)
    torch.manual_seed(seed)
    torch.rand(3)


def rnnlab_command() -> str:
    """The installed ``rnnlab`` console script: the one next to this Python, else on PATH.

    The one next to sys.executable comes first: it skips a version manager's shim, which
    is faster and lets a signal sent to the process reach rnnlab itself.
    """
    beside = Path(sys.executable).parent / "rnnlab"
    if beside.is_file():
        return str(beside)
    found = shutil.which("rnnlab")
    if found is None:
        pytest.fail("the rnnlab command is not installed; run: pip install -e '.[test]'")
    return found


# The environment every command a test starts runs in: the corpora in DATA_DIR, and one thread
# (the same arithmetic in every process, and no oversubscription of a shared 2-core machine).
COMMAND_ENV = {**os.environ, "RNNLAB_DATA_DIR": str(DATA_DIR), "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}  # fmt: skip
# A run that trains in about a second: add SOURCE, --out and what the test varies (a later
# option wins over these).
TINY_RUN = ["--max-tokens", "3000", "--hidden", "16", "--batch-size", "8", "--num-steps", "10",
            "--impl", "scratch", "--device", "cpu", "--threads", "1"]  # fmt: skip
FAULTS = Path(__file__).resolve().parent / "faults.py"


def run_cli(
    *args,
    env_extra: dict[str, str] | None = None,
    timeout: float = 300,
    check: int | None = None,
) -> subprocess.CompletedProcess:
    """Run ``rnnlab ARGS...`` as a user would, on one thread and the corpora in DATA_DIR.

    Arguments may be paths or numbers. Returns the finished process with its stdout and
    stderr as text; ``check``, if given, is the exit status it must have.
    """
    command = [rnnlab_command(), *map(str, args)]
    return _run(command, {**COMMAND_ENV, **(env_extra or {})}, timeout, check)


def whole_and_resumed(folder: Path, *args, epochs: int = 3):
    """The checkpoints of ``rnnlab train ARGS`` for ``epochs`` epochs, trained without a stop
    (FOLDER/whole) and as 1 epoch then ``--resume`` to the end (FOLDER/parts)."""
    from rnnlab import checkpoint

    whole, parts = folder / "whole", folder / "parts"
    run_cli("train", *args, "--epochs", epochs, "--out", whole, check=0)
    run_cli("train", *args, "--epochs", 1, "--out", parts, check=0)
    run_cli("train", "--out", parts, "--resume", "--epochs", epochs, "--quiet", check=0)
    return checkpoint.read_checkpoint(whole), checkpoint.read_checkpoint(parts)


def run_with_fault(fault: str, n: int, *args, check: int | None = None):
    """The command with one fault injected from outside by tests/faults.py (see there)."""
    command = [sys.executable, str(FAULTS), fault, str(n), "--", *map(str, args)]
    return _run(command, COMMAND_ENV, 300, check)


def _run(command: list[str], env: dict[str, str], timeout: float, check: int | None):
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                            check=False)  # fmt: skip
    if check is not None:
        assert result.returncode == check, (command[1:], result.returncode, result.stderr)
    return result


@pytest.fixture
def cli():
    """run_cli, for tests that take their helpers as fixtures."""
    return run_cli


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (tiny tensors: more threads only wait for each other,
    and on a busy 2-core machine that wait dominates), then restore the setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def check_clean_error(result, *words):
    """A user's mistake: exit status 2, one line 'rnnlab: error: ...' naming ``words``,
    and no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture
def clean_error():
    """The checker above, for tests that run the command as a subprocess."""
    return check_clean_error


def save_run_state(
    run,
    model,
    optimizer,
    epoch,
    progress,
    history,
    cfg,
    schedule=None,
    *,
    best=False,
    training_weights=None,
):
    """checkpoint.save_checkpoint of the pieces a trainer saves, made from these parts (the
    schedule at its start where none is given); returns the generation."""
    from rnnlab import checkpoint
    from rnnlab.run_state import rng_state
    from rnnlab.schedule import ScheduleState

    pieces = {
        "epoch": epoch,
        "progress": progress,
        "optimizer": optimizer.state_dict(),
        "schedule": schedule if schedule is not None else ScheduleState(lr=cfg.lr),
        "history": history,
        "config": cfg.to_dict(),
        "weights": dict(model.state_dict()),
        "rng": rng_state(),
        "training_weights": training_weights,
    }
    return checkpoint.save_checkpoint(run, pieces, best=best)
