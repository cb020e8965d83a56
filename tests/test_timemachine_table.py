"""benchmarks/timemachine.py: the book's chapter 8-9 table, run through ``rnnlab train``.

The full table (500 epochs per model) is a benchmark; here the script runs one epoch of
two models, and the data it trains on is checked to be exactly the book's.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import COMMAND_ENV
from rnnlab import corpus, tokenize
from rnnlab.data import prepare
from rnnlab.vocab import Vocab

# Minutes of training, subprocesses and servers: the full suite (CI) runs it, the fast tier not.
pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "timemachine.py"


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_the_runs_train_on_exactly_the_books_10000_tokens():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from timemachine import BOOK
    finally:
        sys.path.remove(str(SCRIPT.parent))
    data = prepare(
        BOOK[0],
        option(BOOK, "--mode"),
        int(option(BOOK, "--max-tokens")),
        float(option(BOOK, "--val-frac")),
        int(option(BOOK, "--batch-size")),
        int(option(BOOK, "--num-steps")),
    )
    # d2l's load_corpus_time_machine(max_tokens=10000): the book's letters, the first 10,000
    book_tokens = tokenize.tokenize(corpus.read_text("timemachine"), "d2l")[:10000]
    assert len(data.vocab) == len(Vocab(book_tokens)) == 28
    assert torch.equal(data.train_ids, torch.tensor(data.vocab[book_tokens]))


def test_the_script_appends_one_row_per_model(tmp_path):
    rows = tmp_path / "rows.jsonl"
    command = [sys.executable, str(SCRIPT), "rnn-concise", "lstm-deep", "--epochs", "1"]
    command += ["--out", str(tmp_path / "runs"), "--rows", str(rows)]
    done = subprocess.run(command, capture_output=True, text=True, env=COMMAND_ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    table = [json.loads(line) for line in rows.read_text().splitlines()]
    assert [(r["model"], r["published_ppl"], r["epochs"]) for r in table] == [
        ("rnn-concise", 1.3, 1),
        ("lstm-deep", 1.0, 1),
    ]
    for row in table:
        assert 1 < row["train_ppl"] < 28  # one epoch: better than chance, far from the book
        assert row["tokens_per_s"] > 0 and row["train_seconds"] > 0
    deep = table[1]["command"].split()
    assert option(deep, "--layers") == "2" and option(deep, "--lr") == "2"  # the book's 9.3


def test_an_unknown_model_is_named(tmp_path):
    command = [sys.executable, str(SCRIPT), "transformer", "--rows", str(tmp_path / "r")]
    done = subprocess.run(command, capture_output=True, text=True, env=COMMAND_ENV, timeout=60)
    assert done.returncode == 2
    assert "unknown model(s) transformer" in done.stderr
    assert not (tmp_path / "r").exists()
