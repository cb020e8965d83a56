"""Tokens/s of training with the default thread count against --threads 1 and --threads 2,
on a quiet machine and on a machine doing other work.

    python benchmarks/threads.py                      # both workloads, every scenario, once
    python benchmarks/threads.py --repeats 2          # what docs/threads.md records
    python benchmarks/threads.py --workloads default --scenarios quiet,side-by-side

Workloads: ``default`` is ``rnnlab train`` with no options (the notes' RNN of 512 units on
The Time Machine); ``shakespeare-quick`` is that recipe's model (an LSTM of 512 units,
batch 16 x 64) on the first --max-tokens characters of Tiny Shakespeare, without its time
limit. Scenarios, each run with every thread setting (``default`` is no --threads: the
governor of rnnlab.threads; ``2`` is torch's own default on this 2-core machine, the
default before it):

    quiet         nothing else running
    nice-busy     one busy process beside it at nice 19 (a background job)
    side-by-side  two runs with the same setting, started together
    four-busy     four busy processes beside it at normal priority

A run trains 3 epochs; its figure is the mean tokens_per_s of epochs 2 and 3 from
metrics.jsonl (epoch 1 pays for start-up), or of epoch 2 alone for side-by-side runs (in
epoch 3 one may be training alone). The machine's speed drifts (a shared host), so within a
scenario the settings run one after the other, in the reverse order on every other repeat,
and the summary gives each setting's ratio to ``2`` per repeat. No run gets
OMP_NUM_THREADS, which would switch the governor off. Each figure is printed and appended
as a row (date, CPUs, torch, command, scenario, tokens/s) to benchmarks/results/threads.jsonl.
Run it on a quiet machine: it makes its own load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ROWS = ROOT / "results" / "threads.jsonl"
WORKLOADS = {
    "default": ["timemachine"],
    "shakespeare-quick": [
        "tinyshakespeare", "--mode", "chars", "--impl", "torch", "--cell", "lstm",
        "--embedding", "64", "--hidden", "512", "--optimizer", "adamw", "--lr", "3e-3",
        "--weight-decay", "0.01", "--batch-size", "16", "--num-steps", "64",
    ],
}  # fmt: skip
SETTINGS = {"default": [], "1": ["--threads", "1"], "2": ["--threads", "2"]}
SCENARIOS = ("quiet", "nice-busy", "side-by-side", "four-busy")
BUSY = [sys.executable, "-c", "while True: pass"]


def rnnlab() -> str:
    beside = Path(sys.executable).parent / "rnnlab"
    return str(beside) if beside.is_file() else "rnnlab"


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return env


def command(workload: str, setting: str, out: Path, max_tokens: int) -> list[str]:
    return [
        rnnlab(), "train", *WORKLOADS[workload], "--out", str(out), "--epochs", "3",
        "--max-tokens", str(max_tokens), "--sample-every", "0", "--quiet", *SETTINGS[setting],
    ]  # fmt: skip


def speed(out: Path, epochs: slice) -> float:
    """The mean tokens_per_s of ``epochs`` of the run in ``out``."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.mean(float(r["tokens_per_s"]) for r in records[epochs])


def measure(workload: str, setting: str, scenario: str, max_tokens: int) -> list[float]:
    """Epoch 2's tokens/s of each training run of the scenario (two side by side)."""
    folder = Path(tempfile.mkdtemp(prefix="threads-bench-"))
    busy: list[subprocess.Popen] = []
    try:
        if scenario == "nice-busy":
            busy = [subprocess.Popen(["nice", "-n", "19", *BUSY])]
        elif scenario == "four-busy":
            busy = [subprocess.Popen(BUSY) for _ in range(4)]
        if busy:
            time.sleep(3)  # the load is there before the run starts, as a user would find it
        runs = 2 if scenario == "side-by-side" else 1
        outs = [folder / f"run{k}" for k in range(runs)]
        procs = [
            subprocess.Popen(
                command(workload, setting, out, max_tokens),
                env=environment(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for out in outs
        ]
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"a run failed ({proc.returncode}): {err.strip()}")
        epochs = slice(1, 2) if runs == 2 else slice(1, 3)
        return [speed(out, epochs) for out in outs]
    finally:
        for p in busy:
            p.kill()
            p.wait()
        shutil.rmtree(folder, ignore_errors=True)


def append_row(row: dict) -> None:
    ROWS.parent.mkdir(parents=True, exist_ok=True)
    with ROWS.open("a") as f:
        f.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--max-tokens", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    import torch

    results: dict[tuple[str, str, str], list[float]] = {}
    for repeat in range(args.repeats):
        for workload in args.workloads.split(","):
            for scenario in args.scenarios.split(","):
                settings = args.settings.split(",")
                for setting in settings if repeat % 2 == 0 else settings[::-1]:
                    speeds = measure(workload, setting, scenario, args.max_tokens)
                    results.setdefault((workload, scenario, setting), []).extend(speeds)
                    append_row(
                        dict(
                            date=time.strftime("%Y-%m-%d %H:%M:%S"),
                            cpus=os.cpu_count(),
                            torch=torch.__version__,
                            repeat=repeat + 1,
                            workload=workload,
                            scenario=scenario,
                            threads=setting,
                            tokens_per_s=speeds,
                            command=" ".join(
                                command(workload, setting, Path("RUN"), args.max_tokens)
                            ),
                        )
                    )
                    shown = ", ".join(f"{s:,.0f}" for s in speeds)
                    print(f"{workload:18} {scenario:13} threads {setting:8} {shown}", flush=True)
    print("\nmean tokens/s per run (each run of side-by-side counted); ratio to --threads 2")
    for (workload, scenario, setting), speeds in results.items():
        base = results.get((workload, scenario, "2"))
        ratio = f"{statistics.mean(speeds) / statistics.mean(base):5.2f}" if base else ""
        print(f"{workload:18} {scenario:13} {setting:8} {statistics.mean(speeds):10,.0f} {ratio}")


if __name__ == "__main__":
    main()
