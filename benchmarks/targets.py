"""Issue 21's raised targets, measured as the issue states them: one row per run.

    python benchmarks/targets.py speed                     # today's speed against 2026-11-30
    python benchmarks/targets.py shakespeare-105s          # --recipe auto, the budget scaled
    python benchmarks/targets.py shakespeare-30min --recipe shakespeare
    python benchmarks/targets.py ptb-30min -- --ema 0.999  # after --: options for train

The budgets hold for this machine's speed of 2026-11-30, when ``shakespeare-quick``'s model
(one LSTM layer of 512 units, batch 16 x 64) trained at about 21,000 tokens/s. ``speed``
trains that model for 30 s and prints today's tokens/s; every target first does the same
and scales its budget by 21,000 / today's speed (so a day at 0.75 of that speed turns 105 s
into 140 s), unless ``--unscaled``. Then ``rnnlab train TEXT --recipe auto --time-limit
BUDGET`` (or ``--recipe NAME``), and ``rnnlab eval`` on the best checkpoint: validation in the
carried-state protocol, for characters also nanoGPT's 64- and 256-character blocks, for the
Penn Treebank the test split. The row (benchmarks/results/targets.jsonl) holds the commands,
the day's speed, the run's own tokens/s, the losses and, for auto, the paragraph that says
what it chose. Run it with nothing else on the machine, and with RNNLAB_DATA_DIR naming the
folder that holds the Penn Treebank.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from sweep import TEXTS

HERE = Path(__file__).parent
ROWS = HERE / "results" / "targets.jsonl"
SPEED_OF_2026_11_30 = 21_000.0  # shakespeare-quick's model, tokens/s (docs/results.md §2)
PROBE_MINUTES = 0.5
TARGETS = {  # name -> (text, minutes, what the issue asks)
    "shakespeare-105s": ("tinyshakespeare", 1.75, "validation <= 1.55 in 64-character blocks"),
    "shakespeare-30min": ("tinyshakespeare", 30.0, "validation <= 1.45 in 256-character blocks"),
    "ptb-30min": ("ptb", 30.0, "test perplexity <= 87.17"),
}  # fmt: skip


def call(cmd: list[str], log: Path | None = None) -> str:
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    if log is not None:
        log.write_text(done.stdout + done.stderr, encoding="utf-8")
    return done.stdout


def trained(run_dir: Path) -> dict:
    """The run's clock as its latest checkpoint holds it, and its tokens per second."""
    current = json.loads((run_dir / "checkpoint.json").read_text())["current"]
    state = json.loads((run_dir / current / "trainer.json").read_text())
    cfg = json.loads((run_dir / "config.json").read_text())
    clock = state["schedule"]
    tokens = clock["batches"] * cfg["batch_size"] * cfg["num_steps"]
    return {
        "trained_s": clock["seconds"],
        "batches": clock["batches"],
        "tokens_per_s": tokens / max(clock["seconds"], 1e-9),
        "epoch": state["epoch"],
        "stopped_at_batch": state["progress"]["batch"],
        "best_epoch": clock["best_epoch"],
        "best_batch": clock.get("best_batch", 0),
        "config": cfg,
    }


def speed(out: Path) -> float:
    """Tokens/s of shakespeare-quick's model on Tiny Shakespeare over PROBE_MINUTES."""
    run_dir = out / f"speed-{time.strftime('%Y%m%d-%H%M%S')}"
    call([sys.executable, "-m", "rnnlab", "train", "--recipe", "shakespeare-quick",
          "--time-limit", str(PROBE_MINUTES), "--sample-every", "0", "--out", str(run_dir),
          "--quiet"])  # fmt: skip
    return trained(run_dir)["tokens_per_s"]


def scored(run_dir: Path, *options: str) -> dict:
    return json.loads(call([sys.executable, "-m", "rnnlab", "eval", str(run_dir), "--json",
                            *options]))  # fmt: skip


def measure(target: str, recipe: str, extra: list[str], out: Path, unscaled: bool) -> dict:
    text, minutes, goal = TARGETS[target]
    today = speed(out)
    budget = minutes if unscaled else round(minutes * SPEED_OF_2026_11_30 / today, 2)
    run_dir = out / f"{target}-{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    # Each text in its sweep's --mode (--recipe auto, like any run, reads characters unless
    # told; the ptb recipes say --mode words themselves).
    cmd = [sys.executable, "-m", "rnnlab", "train", text, "--mode", TEXTS[text][1],
           "--recipe", recipe,
           "--time-limit", str(budget), "--sample-every", "0", "--out", str(run_dir),
           *extra]  # fmt: skip
    start = time.monotonic()
    printed = call(cmd, log=out / f"{run_dir.name}.log")
    wall = time.monotonic() - start
    row = {
        "target": target,
        "goal": goal,
        "command": "rnnlab " + " ".join(cmd[3:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "speed_probe_tokens_per_s": today,
        "speed_factor": today / SPEED_OF_2026_11_30,
        "minutes_asked": minutes,
        "minutes_given": budget,
        "wall_s": wall,
        **trained(run_dir),
    }
    if recipe == "auto":
        row["auto_said"] = printed.split("\n\n")[0].strip()
    row["val_loss"] = scored(run_dir)["loss"]
    if text == "ptb":
        row["test_loss"] = scored(run_dir, "--split", "test")["loss"]
        row["test_ppl"] = math.exp(row["test_loss"])
    else:
        for block in (64, 256):
            row[f"val_loss_block{block}"] = scored(run_dir, "--block-size", str(block))["loss"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target", choices=("speed", *TARGETS))
    parser.add_argument("--recipe", default="auto", help="auto, or a fixed recipe's name")
    parser.add_argument("--unscaled", action="store_true", help="the budget as the issue says")
    parser.add_argument("--out", type=Path, default=Path("runs/targets"))
    parser.add_argument("--rows", type=Path, default=ROWS)
    args, extra = parser.parse_known_args(argv)
    extra = [x for x in extra if x != "--"]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.target == "speed":
        today = speed(args.out)
        print(f"{today:,.0f} tokens/s: {today / SPEED_OF_2026_11_30:.2f} of 2026-11-30's")
        return 0
    row = measure(args.target, args.recipe, extra, args.out, args.unscaled)
    args.rows.parent.mkdir(parents=True, exist_ok=True)
    with args.rows.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    shown = {k: v for k, v in row.items() if k not in ("config", "auto_said")}
    print(json.dumps(shown, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
