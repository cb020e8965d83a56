"""Freed memory stays in the process after keep_freed_memory (glibc only), and after
training, scoring, benchmarking or timing through the library, as a notebook does."""

import subprocess
import sys
from pathlib import Path

import pytest

# Does one thing (argv[1]) in a plain process, then allocates and frees a 64 MiB buffer
# five times and prints the page faults that cost.
SCRIPT = """
import resource, sys
what, run = sys.argv[1:]
if what == "keep":
    from rnnlab.heap import keep_freed_memory
    assert keep_freed_memory()
elif what == "fit":
    from rnnlab.config import TrainConfig
    from rnnlab.fit import fit
    options = {"max_tokens": 3000, "epochs": 1, "batch_size": 4, "num_steps": 8, "hidden": 16,
               "threads": 1, "sample_every": 0}
    assert fit(TrainConfig.from_options(options), run, quiet=True) == 0
elif what == "score":
    from rnnlab.command_config import EvalConfig
    from rnnlab.scoring import score_run
    score_run(run, EvalConfig())
elif what == "bench":
    import torch
    from rnnlab.bench import run_bench
    from rnnlab.command_config import BenchConfig
    bench = BenchConfig(cells=("lstm",), hidden=(16,), batch_size=(4,), num_steps=(5,),
                        batches=2, warmup=1, threads=1)
    run_bench(bench, corpus_ids=torch.randint(0, 7, (500,)))
elif what == "timing":  # --recipe auto's timings of a step
    from rnnlab.auto import reference_speed
    reference_speed(0.05)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
before = faults()
for _ in range(5):
    buffer = bytearray(64 * 2**20)  # zero-filled: every page is touched
    del buffer
print(faults() - before)
"""
PAGES = 64 * 2**20 // 4096


def _faults_after(what: str, run: Path | None = None) -> int:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, what, str(run)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(out.split()[-1])


def _glibc() -> bool:
    from rnnlab.heap import libc

    return sys.platform.startswith("linux") and hasattr(libc(), "mallopt")


pytestmark = pytest.mark.skipif(not _glibc(), reason="glibc's malloc (mallopt) only")


def test_a_buffer_freed_and_allocated_again_is_not_page_faulted_again():
    assert _faults_after("plain") >= 4 * PAGES  # fresh pages every time
    assert _faults_after("keep") < 2 * PAGES  # the first allocation's pages, then reused


def test_training_scoring_bench_and_auto_s_timing_from_python_keep_freed_memory(tmp_path):
    run = tmp_path / "run"
    assert _faults_after("fit", run) < 2 * PAGES  # and the run is there to score
    assert _faults_after("score", run) < 2 * PAGES
    assert _faults_after("bench") < 2 * PAGES
    assert _faults_after("timing") < 2 * PAGES
