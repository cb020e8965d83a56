"""The book's chapter 8-9 table on The Time Machine, trained by ``rnnlab train``: one row per model.

    python benchmarks/timemachine.py                       # all eight models, 500 epochs each
    python benchmarks/timemachine.py gru-scratch lstm-deep # some of them
    python benchmarks/timemachine.py --epochs 2 --rows /tmp/rows.jsonl   # a quick look

Each model is d2l 0.17.5's set-up: The Time Machine in the book's tokenization (28
letters), its first 10,000 tokens for training, batch 32 x 35 steps, SGD with gradient
clipping at 1, 500 epochs, the book's hidden size and learning rate. rnnlab holds out a
validation part at the end of the text, so the runs read the first 11,111 tokens and hold
out the last 10 % (1,111): training sees exactly the book's 10,000. The row records the
exact command, the date, torch's version, the wall time of the whole ``rnnlab train``
process, the last epoch's training perplexity (the book's figure), its tokens/s and the
book's published perplexity beside it. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from recipes import append_row  # benchmarks/recipes.py, beside this script

ROWS = Path(__file__).parent / "results" / "timemachine.jsonl"

# The book's data and training set-up, shared by every model (d2l 8.5's train_ch8).
BOOK = [
    "timemachine",
    "--mode", "d2l",
    "--max-tokens", "11112",
    "--val-frac", "0.1",
    "--batch-size", "32",
    "--num-steps", "35",
    "--optimizer", "sgd",
    "--clip", "1",
]  # fmt: skip


def book_model(impl: str, cell: str, hidden: int, lr: int, *extra: str) -> list[str]:
    """The options of one of the book's models: implementation, cell, hidden size, rate."""
    return ["--impl", impl, "--cell", cell, "--hidden", str(hidden), "--lr", str(lr), *extra]


# name: (the book's section and model, its published training perplexity, the model's options)
MODELS: dict[str, tuple[str, float, list[str]]] = {
    "rnn-scratch": ("8.5 RNN from scratch, sequential", 1.0, book_model("scratch", "rnn", 512, 1)),
    "rnn-scratch-random": (
        "8.5 RNN from scratch, random sampling",
        1.5,
        book_model("scratch", "rnn", 512, 1, "--sampling", "random"),
    ),
    "rnn-concise": ("8.6 nn.RNN", 1.3, book_model("torch", "rnn", 256, 1)),
    "gru-scratch": ("9.1 GRU from scratch", 1.1, book_model("scratch", "gru", 256, 1)),
    "gru-concise": ("9.1 nn.GRU", 1.1, book_model("torch", "gru", 256, 1)),
    "lstm-scratch": ("9.2 LSTM from scratch", 1.3, book_model("scratch", "lstm", 256, 1)),
    "lstm-concise": ("9.2 nn.LSTM", 1.2, book_model("torch", "lstm", 256, 1)),
    "lstm-deep": (
        "9.3 deep LSTM, 2 layers",
        1.0,
        book_model("torch", "lstm", 256, 2, "--layers", "2"),
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", help=f"some of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--epochs", type=int, default=500, help="the book's 500 unless told")
    parser.add_argument("--out", default="runs/timemachine", help="parent of the run directories")
    parser.add_argument("--rows", default=str(ROWS), help="JSON-lines file the rows are added to")
    args = parser.parse_args(argv)
    unknown = [name for name in args.models if name not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in args.models or MODELS:
        model, published, options = MODELS[name]
        run_dir = Path(args.out) / f"{name}-{stamp}"
        cmd = [sys.executable, "-m", "rnnlab", "train", *BOOK, *options]
        cmd += ["--epochs", str(args.epochs), "--out", str(run_dir), "--quiet"]
        print("$", " ".join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        seconds = time.perf_counter() - start
        last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
        row = {
            "model": name,
            "book": model,
            "published_ppl": published,
            "command": "rnnlab " + " ".join(cmd[3:]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "train_seconds": round(seconds, 1),
            "epochs": last["epoch"],
            "train_ppl": last["train_ppl"],
            "tokens_per_s": last["tokens_per_s"],
        }
        print(json.dumps(row), flush=True)
        append_row(Path(args.rows), row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
