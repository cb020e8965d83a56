"""Run recipes and record what they reach: one row per run, appended to a JSON-lines file.

    python benchmarks/recipes.py shakespeare                  # the whole recipe
    python benchmarks/recipes.py ptb-small --time-limit 5     # extra options for train
    python benchmarks/recipes.py book --out runs/recipes --rows benchmarks/results/recipes.jsonl

For each recipe it runs ``rnnlab train --recipe NAME`` into a fresh run directory
(OUT/NAME-<date>), then ``rnnlab eval`` on the held-out data (the run's validation
split; for ptb also the test split), and appends a row: the recipe, the exact
commands, the date, torch's version, the machine's CPUs, the wall time of training,
tokens/s of the last epoch, the last epoch's training perplexity, and the held-out
loss in nats per token, bits per token and perplexity (for character recipes also in
nanoGPT's block protocol, ``eval --block-size`` 64 and 256). Run it with nothing else on
the machine. ``--smoke`` trains for a few batches only (what CI does) and writes no row.
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

from rnnlab.recipes import RECIPES

ROWS = Path(__file__).parent / "results" / "recipes.jsonl"


def append_row(rows: Path, row: dict) -> None:
    """Add ``row`` as one JSON line to the file ``rows`` (made, with its folder, if missing)."""
    rows.parent.mkdir(parents=True, exist_ok=True)
    with rows.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True)


def evaluate(run_dir: Path, split: str | None, block_size: int = 0) -> dict:
    cmd = [sys.executable, "-m", "rnnlab", "eval", str(run_dir), "--json"]
    if split:
        cmd += ["--split", split]
    if block_size:
        cmd += ["--block-size", str(block_size)]
    result = json.loads(run(cmd).stdout)
    return {"command": " ".join(cmd[2:]), **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe", choices=list(RECIPES))
    parser.add_argument("--out", default="runs/recipes", help="parent of the run directories")
    parser.add_argument("--rows", default=str(ROWS), help="JSON-lines file the row is added to")
    parser.add_argument("--smoke", action="store_true", help="a few batches; no row written")
    args, extra = parser.parse_known_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.out) / f"{args.recipe}-{stamp}"
    if args.smoke:
        extra += ["--epochs", "1", "--max-tokens", "3000", "--time-limit", "0.05"]
    train_cmd = [sys.executable, "-m", "rnnlab", "train", "--recipe", args.recipe]
    train_cmd += ["--out", str(run_dir), "--quiet", *extra]
    start = time.perf_counter()
    run(train_cmd)
    seconds = time.perf_counter() - start
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    held_out = [evaluate(run_dir, None)]
    if RECIPES[args.recipe].options.get("source") == "ptb":
        held_out.append(evaluate(run_dir, "test"))
    elif RECIPES[args.recipe].options.get("mode") == "chars":
        # nanoGPT's protocol too: its CPU recipe's blocks (64) and its GPU recipe's (256)
        held_out += [evaluate(run_dir, None, block) for block in (64, 256)]
    row = {
        "recipe": args.recipe,
        "train_command": "rnnlab " + " ".join(train_cmd[3:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "train_seconds": round(seconds, 1),
        "config": json.loads((run_dir / "config.json").read_text()),  # what the recipe meant
        "last_epoch": last,
        "held_out": held_out,
    }
    print(json.dumps(row, indent=2))
    if not args.smoke:
        append_row(Path(args.rows), row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
