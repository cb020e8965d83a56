"""Freed memory stays in the process after keep_freed_memory (glibc only)."""

import subprocess
import sys

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


# Trains a tiny run through the library, as a notebook does (no command line), then
# allocates and frees as SCRIPT does.
SCRIPT_AFTER_FIT = """
import resource, sys
from rnnlab.config import TrainConfig
from rnnlab.fit import fit
options = {"max_tokens": 3000, "epochs": 1, "batch_size": 4, "num_steps": 8, "hidden": 16,
           "threads": 1, "sample_every": 0}
assert fit(TrainConfig.from_options(options), sys.argv[1], quiet=True) == 0
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
before = faults()
for _ in range(5):
    buffer = bytearray(64 * 2**20)
    del buffer
print(faults() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux")
def test_training_through_the_library_keeps_freed_memory_as_the_command_line_does(tmp_path):
    if _faults("keep")[0] != "True":
        pytest.skip("this C library has no glibc mallopt")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT_AFTER_FIT, str(tmp_path / "run")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert int(out.split()[-1]) < 2 * (64 * 2**20 // 4096)
