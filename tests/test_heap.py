"""Freed memory stays in the process after keep_freed_memory (glibc only)."""

import subprocess
import sys
from pathlib import Path

import pytest

# Allocates and frees a 64 MiB buffer five times and prints the page faults it cost.
SCRIPT = """
import resource, sys
from rnnlab.heap import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
before = faults()
for _ in range(5):
    buffer = bytearray(64 * 2**20)  # zero-filled: every page is touched
    del buffer
print(kept, faults() - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux")
def test_a_buffer_freed_and_allocated_again_is_not_page_faulted_again():
    kept, with_keep = _faults("keep")
    if kept != "True":
        pytest.skip("this C library has no glibc mallopt")
    _, without = _faults("plain")
    pages = 64 * 2**20 // 4096
    assert without >= 4 * pages  # fresh pages every time
    assert with_keep < 2 * pages  # the first allocation's pages, then reused


# Trains, scores or benchmarks through the library, as a notebook does (no command line),
# then allocates and frees as SCRIPT does.
SCRIPT_AFTER = """
import resource, sys
import torch
from rnnlab.bench import run_bench
from rnnlab.command_config import BenchConfig, EvalConfig
from rnnlab.config import TrainConfig
from rnnlab.fit import fit
from rnnlab.scoring import score_run
what, run = sys.argv[1:]
if what == "fit":
    options = {"max_tokens": 3000, "epochs": 1, "batch_size": 4, "num_steps": 8, "hidden": 16,
               "threads": 1, "sample_every": 0}
    assert fit(TrainConfig.from_options(options), run, quiet=True) == 0
elif what == "score":
    score_run(run, EvalConfig())
else:
    bench = BenchConfig(cells=("lstm",), hidden=(16,), batch_size=(4,), num_steps=(5,),
                        batches=2, warmup=1, threads=1)
    run_bench(bench, corpus_ids=torch.randint(0, 7, (500,)))
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
before = faults()
for _ in range(5):
    buffer = bytearray(64 * 2**20)
    del buffer
print(faults() - before)
"""


def _faults_after(what: str, run: Path) -> int:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT_AFTER, what, str(run)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(out.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux")
def test_training_scoring_and_bench_from_python_keep_freed_memory_as_the_command_line(tmp_path):
    if _faults("keep")[0] != "True":
        pytest.skip("this C library has no glibc mallopt")
    pages = 64 * 2**20 // 4096
    run = tmp_path / "run"
    assert _faults_after("fit", run) < 2 * pages  # and the run is there to score
    assert _faults_after("score", run) < 2 * pages
    assert _faults_after("bench", run) < 2 * pages
