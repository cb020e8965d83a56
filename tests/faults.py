"""Run the rnnlab command with one fault injected from outside: a kill or a diverging step.

    python tests/faults.py crash-at-batch 40 -- train timemachine --out runs/x ...
    python tests/faults.py crash-in-save 2 -- train ...
    python tests/faults.py crash-in-best-save 2 -- train ...
    python tests/faults.py nan-at-batch 40 -- train ...
    torchrun --nproc-per-node 2 tests/faults.py --rank 1 crash-at-batch 9 -- train ...
    torchrun --nproc-per-node 2 tests/faults.py --float64 -- train ...

The library has no test hooks: this launcher wraps the function to break, then
calls the command line's ``main`` in the same process.

* crash-at-batch N: SIGKILL before the update step of global batch N + 1 (after N
  batches of this process have trained).
* crash-in-save N: SIGKILL in the Nth checkpoint this process writes, after its
  first file (the weights) is written and before the switch to it.
* crash-in-best-save N: the same in the Nth best checkpoint (RUN/best/).
* nan-at-batch N: the update of global batch N turns every parameter and the loss
  into NaN, as a diverging run would.
* interrupt-launcher-at-batch N: before batch N + 1, send SIGINT to the parent process
  (torchrun's agent, as Ctrl-C in its terminal would), and pause 2 s, so that the
  signal the agent passes on arrives before that update.

Options before the fault: ``--rank R`` injects it only into the process torchrun gives
rank R; ``--float64`` makes torch's default dtype float64, so that every model trains
in double precision (the reference precision of the data-parallel tests).
"""

from __future__ import annotations

import os
import signal
import sys
import time

import torch

from rnnlab import cli, files, train


def signal_at_batch(n: int, pid, signum: int, pause: float = 0.0) -> None:
    """Before the update of batch n + 1, send ``signum`` to the process ``pid()``, then wait
    ``pause`` seconds before that update."""
    make_step = train.make_step
    done = [0]

    def counting_make_step(model, optimizer, clip, **options):
        step = make_step(model, optimizer, clip, **options)

        def signals_at_n(X, Y, state):
            if done[0] == n:
                os.kill(pid(), signum)
                time.sleep(pause)
            done[0] += 1
            return step(X, Y, state)

        return signals_at_n

    train.make_step = counting_make_step


def crash_at_batch(n: int) -> None:
    signal_at_batch(n, os.getpid, signal.SIGKILL)


def interrupt_launcher_at_batch(n: int) -> None:
    # The launcher passes the signal on to every rank; the pause lets it arrive before this
    # rank's next update even on a busy machine (the other ranks wait for that update).
    signal_at_batch(n, os.getppid, signal.SIGINT, pause=2.0)


def crash_in_save(n: int, series: str = "checkpoints") -> None:
    atomic_write = files.atomic_write
    saves = [0]

    def dies_in_nth_save(path, data):
        atomic_write(path, data)
        folder = path.parent
        if (folder.parent.name, path.name) == (series, "model.safetensors"):
            saves[0] += 1  # the weights are the first file of every checkpoint
            if saves[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)

    files.atomic_write = dies_in_nth_save


def crash_in_best_save(n: int) -> None:
    crash_in_save(n, series="best")


def nan_at_batch(n: int) -> None:
    make_step = train.make_step
    done = [0]

    def poisoning_make_step(model, optimizer, clip, **options):
        step = make_step(model, optimizer, clip, **options)

        def diverges_at_n(X, Y, state):
            loss, norm, state = step(X, Y, state)
            done[0] += 1
            if done[0] == n:
                with torch.no_grad():
                    for p in model.parameters():
                        p.fill_(float("nan"))
                loss = loss * float("nan")
            return loss, norm, state

        return diverges_at_n

    train.make_step = poisoning_make_step


FAULTS = {
    "crash-at-batch": crash_at_batch,
    "crash-in-save": crash_in_save,
    "crash-in-best-save": crash_in_best_save,
    "nan-at-batch": nan_at_batch,
    "interrupt-launcher-at-batch": interrupt_launcher_at_batch,
}
USAGE = "usage: faults.py [--float64] [--rank R] [FAULT N] -- ARGS..."

if __name__ == "__main__":
    words = sys.argv[1:]
    assert "--" in words, USAGE
    options, argv = words[: words.index("--")], words[words.index("--") + 1 :]
    if "--float64" in options:
        options.remove("--float64")
        torch.set_default_dtype(torch.float64)
    rank = None
    if "--rank" in options:
        at = options.index("--rank")
        rank = int(options[at + 1])
        del options[at : at + 2]
    if options:
        fault, count = options
        assert fault in FAULTS, USAGE
        if rank is None or rank == int(os.environ.get("RANK", "0")):
            FAULTS[fault](int(count))
    sys.exit(cli.main(argv))
