"""benchmarks/ddp.py: 1 process against N under torchrun, and the data-parallel arithmetic.

The measured comparison is a benchmark; here the script's smoke mode runs each kind of
run once on a few hundred tokens, and the arithmetic is checked against its formulas.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import COMMAND_ENV
from rnnlab.config import TrainConfig
from rnnlab.models import parameter_count
from rnnlab.recipes import RECIPES

# Minutes of training, subprocesses and servers: the full suite (CI) runs it, the fast tier not.
pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ddp.py"
PTB_VOCAB = 10_000  # Penn Treebank, Mikolov's version: the figure the script uses


def load_script():
    """benchmarks/ddp.py as a module (it imports benchmarks/recipes.py, beside it)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import ddp
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return ddp


def speed_table(stdout: str) -> dict[int, list[int]]:
    """The printed table's rows: processes -> threads each, one entry per row."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "threads each" in line) + 1
    rows: dict[int, list[int]] = {}
    for line in lines[start:]:
        if not line.strip():
            break
        processes, threads = map(int, line.split()[:2])
        rows.setdefault(processes, []).append(threads)
    return rows


def test_the_smoke_run_measures_one_process_and_two_side_by_side(tmp_path):
    rows = tmp_path / "rows.jsonl"
    command = [sys.executable, str(SCRIPT), "--smoke", "--processes", "2", "--rows", str(rows)]
    done = subprocess.run(command, capture_output=True, text=True, env=COMMAND_ENV, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    table = speed_table(done.stdout)
    assert 1 in table and 2 in table, done.stdout
    assert "ring all-reduce" in done.stdout  # the arithmetic follows the measurements
    assert not rows.exists()  # a smoke run writes no row


def test_a_ring_all_reduce_of_two_gpus_sends_each_the_whole_gradient():
    ddp = load_script()
    model = TrainConfig.from_options(RECIPES["ptb-small"].options).model
    P = parameter_count(model, PTB_VOCAB)
    two = ddp.step_arithmetic("ptb-small", PTB_VOCAB, 2)
    assert two["P"] == P
    assert two["gradient_bytes"] == two["sent_bytes"] == 4 * P  # 2*(2-1)/2 * 4P
    assert ddp.step_arithmetic("ptb-small", PTB_VOCAB, 8)["sent_bytes"] == 2 * 7 / 8 * 4 * P
    # Tied weights: the embedding is also the output layer, a matmul, so all of P is dense.
    assert two["P_dense"] == P and two["flops"] == 6 * P * 20 * 35


def test_a_one_hot_input_is_counted_as_a_lookup_not_a_matmul():
    ddp = load_script()
    V = ddp.vocab_size("timemachine", "letters")
    book = ddp.step_arithmetic("book", V, 2)
    assert V == 28  # 26 letters, the space and <unk>
    assert book["P"] - book["P_dense"] == V * 512  # the RNN's W_xh: one row per token
