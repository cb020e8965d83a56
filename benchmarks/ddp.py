"""Tokens/s of one training run on 1 process vs N processes (torchrun) on this machine.

    python benchmarks/ddp.py                                   # shakespeare-quick, 2 processes
    python benchmarks/ddp.py --processes 2 --max-tokens 200000 --epochs 4 --repeats 3
    python benchmarks/ddp.py --recipe char-lstm --batch-size 32 --hidden 256   # more options
    python benchmarks/ddp.py --arithmetic                      # the data-parallel arithmetic only
    python benchmarks/ddp.py --smoke --processes 2             # what CI runs; no row written

It trains one workload (a recipe, its first ``--max-tokens`` tokens, ``--epochs``
epochs, the same global ``--batch-size`` B everywhere) three ways, alternating,
``--repeats`` times:

    rnnlab train ... --threads C        1 process, all C of this machine's CPUs
    rnnlab train ... --threads 1        1 process, 1 thread
    torchrun --standalone --nproc-per-node N -m rnnlab train ... --threads C//N
                                        N processes of C//N threads (at least 1), B/N streams each

Each process also gets OMP_NUM_THREADS set to its threads. Each run writes a fresh
temporary run directory; its figure is the mean ``tokens_per_s`` in metrics.jsonl over
the epochs after the first (the first pays for start-up; with one epoch, that epoch).
Under torchrun rank 0 writes it: the global batch's tokens over rank 0's seconds. The
table shows the mean over the repeats and the ratio to the 1-process, all-threads run;
a row per run (date, torch version, CPUs, the exact command, tokens/s) is appended to
benchmarks/results/ddp.jsonl. Options this script does not know go to ``rnnlab train``
after its own, so they win. Run it with nothing else on the machine.

At the end it prints the arithmetic of data-parallel training on GPUs for every recipe
(``--arithmetic`` prints only that): the bytes a ring all-reduce of the gradients sends
per step against the computation of the step, at three link speeds.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from recipes import append_row  # benchmarks/recipes.py, beside this script

from rnnlab.config import ModelConfig, TrainConfig
from rnnlab.data import read_tokens
from rnnlab.models import parameter_count
from rnnlab.models.layout import num_gates
from rnnlab.options import machine_cpus
from rnnlab.recipes import RECIPES
from rnnlab.vocab import Vocab

ROWS = Path(__file__).parent / "results" / "ddp.jsonl"

# --- The arithmetic of data-parallel training on GPUs -----------------------------------------

ARITHMETIC_PROCESSES = (2, 8)
GPU_FLOPS = 10e12  # achieved, not peak: an assumption, not a measurement
LINKS = {"100 GB/s": 100e9, "25 GB/s": 25e9, "1.25 GB/s": 1.25e9}  # bytes per second
# Penn Treebank is not packaged (reading it may mean a download), so its size is the known
# figure: Mikolov's 10,000-word version (d2l's ptb.zip; see shared/data/README.md), <unk>
# included, with the <eos> rnnlab adds per line: 10,000 tokens, as word_language_model counts.
PTB_VOCAB = 10_000
ASSUMPTIONS = [
    "V: Penn Treebank 10,000 (Mikolov's vocabulary with <unk>, plus <eos>); Tiny Shakespeare "
    "and The Time Machine counted from the packaged text, <unk> included; recipes without a "
    "corpus on The Time Machine, where their results were measured",
    "P: rnnlab.models.parameter_count(config, V); gradients float32, 4*P bytes, all of them "
    "all-reduced (an embedding's gradient too: DDP sends it dense)",
    "ring all-reduce (reduce-scatter, then all-gather): each GPU sends 2*(N-1)/N * 4*P bytes "
    "per step; time = bytes / link speed, latency ignored, no overlap with the backward pass",
    "compute: 6*P_dense FLOPs per token (2 per multiply-add forward, 4 backward; Kaplan et "
    "al. 2020), B*T tokens per step split evenly over N GPUs; gates, softmax, optimizer ignored",
    "P_dense = P less the weights a token's id selects rather than multiplies: an untied "
    "embedding (V*E), or a one-hot input's V*G*H (fused looks those rows up; scratch and "
    "torch without an embedding multiply by the one-hot vector, more work than counted)",
    f"GPU: {GPU_FLOPS / 1e12:g} TFLOP/s achieved; links: 100 GB/s NVLink-class, 25 GB/s PCIe, "
    "1.25 GB/s 10 Gb/s Ethernet",
]


@functools.cache
def vocab_size(source: str, mode: str) -> int:
    """V of a built-in corpus in ``mode``: counted for the packaged ones, known for ptb."""
    if source == "ptb":
        return PTB_VOCAB
    return len(Vocab(read_tokens(source, mode)))


def looked_up(model: ModelConfig, V: int) -> int:
    """The weights a token id selects (a lookup, no multiply): untied embedding or one-hot input."""
    if model.impl == "torch" and model.embedding:
        # Tied, the embedding is also the output layer, which does multiply.
        return 0 if model.tie_weights else V * model.embedding
    return V * num_gates(model.cell) * model.hidden  # one-hot(x) @ W_x is a row of W_x


def step_arithmetic(recipe: str, V: int, N: int) -> dict[str, float]:
    """One data-parallel step of ``recipe`` on N GPUs, from its sizes alone (ASSUMPTIONS).

    P parameters, P_dense of them in matmuls, the gradient bytes, the bytes each GPU sends
    in a ring all-reduce, the global batch's FLOPs, and seconds per GPU: computing its
    B/N streams, and the all-reduce over each link in LINKS.
    """
    config = TrainConfig.from_options(RECIPES[recipe].options)
    P = parameter_count(config.model, V)
    P_dense = P - looked_up(config.model, V)
    gradient_bytes = 4 * P
    sent = 2 * (N - 1) / N * gradient_bytes
    flops = 6 * P_dense * config.batch_size * config.num_steps
    return {
        "P": P,
        "P_dense": P_dense,
        "gradient_bytes": gradient_bytes,
        "sent_bytes": sent,
        "flops": flops,
        "compute_s": flops / N / GPU_FLOPS,
        **{f"allreduce_s {link}": sent / speed for link, speed in LINKS.items()},
    }


def print_arithmetic() -> None:
    """For every recipe and N in ARITHMETIC_PROCESSES: sizes, bytes, FLOPs, and compute time
    over all-reduce time per link (above 1: the all-reduce could hide behind the compute)."""
    print("\nData-parallel arithmetic per training step, on GPUs (not measured):")
    print(f"{'recipe':<18} {'V':>6} {'P':>11} {'P_dense':>11} {'B x T':>8} {'4P MB':>7} "
          f"{'GFLOP':>7}")  # fmt: skip
    for name, recipe in RECIPES.items():
        config = TrainConfig.from_options(recipe.options)
        V = vocab_size(config.source, config.mode)
        a = step_arithmetic(name, V, 1)
        print(f"{name:<18} {V:>6,} {a['P']:>11,} {a['P_dense']:>11,} "
              f"{config.batch_size:>3} x {config.num_steps:<3} {a['gradient_bytes'] / 1e6:>7.1f} "
              f"{a['flops'] / 1e9:>7.1f}")  # fmt: skip
    links = "  ".join(f"{link:>9}" for link in LINKS)
    print(f"\n{'':<18} {'':>3} {'sent MB':>8} {'compute':>8}   {'all-reduce ms at':<31}   "
          "compute / all-reduce at")  # fmt: skip
    print(f"{'recipe':<18} {'N':>3} {'per GPU':>8} {'ms/GPU':>8}   {links}   {links}")
    odd = False
    for name, recipe in RECIPES.items():
        config = TrainConfig.from_options(recipe.options)
        V = vocab_size(config.source, config.mode)
        for N in ARITHMETIC_PROCESSES:
            a = step_arithmetic(name, V, N)
            times = [a[f"allreduce_s {link}"] for link in LINKS]
            mark = "*" if config.batch_size % N else " "
            odd = odd or mark == "*"
            print(f"{name:<18} {N:>2}{mark} {a['sent_bytes'] / 1e6:>8.1f} "
                  f"{a['compute_s'] * 1e3:>8.3f}   "
                  + "  ".join(f"{t * 1e3:>9.3f}" for t in times) + "   "
                  + "  ".join(f"{a['compute_s'] / t:>9.3g}" for t in times))  # fmt: skip
    if odd:
        print("* B is not a multiple of N: rnnlab would refuse it; the row splits B anyway")
    print("Assumptions:")
    for line in ASSUMPTIONS:
        print(f"  - {line}")


# --- The measured runs on this machine --------------------------------------------------------


def torchrun_command() -> list[str]:
    """torchrun: the console script beside this Python, else torch's module that it runs."""
    beside = Path(sys.executable).parent / "torchrun"
    return [str(beside)] if beside.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def train_once(processes: int, threads: int, options: list[str]) -> tuple[str, list[float]]:
    """Train into a fresh run directory; (the command as run, each epoch's tokens/s)."""
    with tempfile.TemporaryDirectory(prefix="rnnlab-ddp-") as tmp:
        run_dir = Path(tmp) / "run"
        if processes == 1:
            launcher = [sys.executable, "-m", "rnnlab"]
        else:
            launcher = torchrun_command() + ["--standalone", "--nproc-per-node", str(processes)]
            launcher += ["-m", "rnnlab"]
        cmd = launcher + ["train", "--out", str(run_dir), "--quiet", "--threads", str(threads)]
        cmd += options
        # OMP_NUM_THREADS too: torchrun would set 1, and libraries other than torch read it.
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        shown = f"OMP_NUM_THREADS={threads} " + shlex.join(cmd)
        print("$", shown, flush=True)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"this run failed with exit status {done.returncode}:\n{done.stderr}")
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        return shown, [json.loads(line)["tokens_per_s"] for line in lines]


def after_warm_up(per_epoch: list[float]) -> float:
    """The mean tokens/s over the epochs after the first (the only one, if just one)."""
    return statistics.mean(per_epoch[1:] or per_epoch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", choices=list(RECIPES), default="shakespeare-quick")
    parser.add_argument("--processes", type=int, default=2, help="N for torchrun (default 2)")
    parser.add_argument("--max-tokens", type=int, default=100_000, help="tokens of the corpus")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    parser.add_argument("--batch-size", type=int, help="global B (default: the recipe's)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each kind (default 2)")
    parser.add_argument("--rows", default=str(ROWS), help="JSON-lines file the rows are added to")
    parser.add_argument("--smoke", action="store_true", help="a few hundred tokens; no row")
    parser.add_argument("--arithmetic", action="store_true", help="only the GPU arithmetic")
    args, extra = parser.parse_known_args(argv)
    if args.arithmetic:
        print_arithmetic()
        return 0
    N = args.processes
    B = args.batch_size or TrainConfig.from_options(RECIPES[args.recipe].options).batch_size
    if N < 2:
        parser.error(f"--processes {N}: give 2 or more (1 process is always measured)")
    if B % N:
        parser.error(f"--batch-size {B} does not split over {N} processes; give a multiple of {N}")
    max_tokens, epochs, repeats = args.max_tokens, args.epochs, args.repeats
    if args.smoke:  # 720 tokens to train on, 5 batches of 16 x 8: start, train, write metrics
        max_tokens, epochs, repeats = 800, 1, 1
        extra = ["--num-steps", "8", *extra]
    # The processes share this machine's CPU cores: what the threads divide.
    options = ["--recipe", args.recipe, "--batch-size", str(B), "--device", "cpu"]
    options += ["--max-tokens", str(max_tokens), "--epochs", str(epochs), *extra]
    cpus = machine_cpus()
    # (processes, threads each); on a 1-CPU machine the first two are the same run.
    kinds = list(dict.fromkeys([(1, cpus), (1, 1), (N, max(1, cpus // N))]))
    measured: dict[tuple[int, int], list[float]] = {kind: [] for kind in kinds}
    for repeat in range(repeats):
        for processes, threads in kinds:  # alternating: a busy spell slows every kind alike
            command, per_epoch = train_once(processes, threads, options)
            tokens_per_s = after_warm_up(per_epoch)
            measured[processes, threads].append(tokens_per_s)
            row = {
                "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "torch": torch.__version__,
                "cpus": cpus,
                "recipe": args.recipe,
                "processes": processes,
                "threads": threads,
                "repeat": repeat + 1,
                "command": command,
                "tokens_per_s": round(tokens_per_s),
                "measure": "mean tokens_per_s of metrics.jsonl over the epochs after the first",
                "tokens_per_s_per_epoch": [round(x) for x in per_epoch],
            }
            if not args.smoke:
                append_row(Path(args.rows), row)
    base = statistics.mean(measured[1, cpus])
    print(f"\n{args.recipe}, global batch {B}: tokens/s, mean over epochs after the first")
    print(f"{'processes':>9} {'threads each':>12} {'tokens/s':>10} {'runs':>20} "
          f"{'vs 1 x ' + str(cpus):>9}")  # fmt: skip
    for (processes, threads), figures in measured.items():
        mean = statistics.mean(figures)
        runs = " ".join(f"{x:,.0f}" for x in figures)
        print(f"{processes:>9} {threads:>12} {mean:>10,.0f} {runs:>20} {mean / base:>9.2f}")
    print_arithmetic()
    return 0


if __name__ == "__main__":
    sys.exit(main())
