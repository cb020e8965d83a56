"""Record the curve rnnlab.d2l.train_ch8 draws on the book's 8.5 set-up, cut to a few epochs.

    RNNLAB_DATA_DIR=/work/shared/data python tests/data/make_d2l_curve.py

Runs tests/d2l_notes/ch08_5_rnn_scratch.py as it is (The Time Machine's first
10,000 characters, batch 32, 35 steps, the scratch RNN with 512 hidden units,
SGD lr 1; sequential, then random partitioning) on the CPU, in float32, with one
torch thread and ``random`` and torch seeded. Each of its two ``train_ch8``
calls is cut from the book's 500 epochs to EPOCHS, by wrapping it from outside.
It writes tests/data/d2l_ch08_5_curve.json: every epoch's perplexity (what
``train_epoch_ch8`` returned), the points ``train_ch8`` plotted and the lines it
printed. tests/test_d2l_reproduce.py runs the same function and compares.

Run it again only when a change is meant to change the curve (or torch changes
its arithmetic), and say why in the commit.
"""
from __future__ import annotations

import contextlib
import io
import json
import platform
import random
import re
import runpy
import sys
import tempfile
from pathlib import Path

import torch

from rnnlab import d2l

NOTE = Path(__file__).resolve().parents[1] / "d2l_notes" / "ch08_5_rnn_scratch.py"
RECORD = Path(__file__).resolve().parent / "d2l_ch08_5_curve.json"
EPOCHS = 20  # 2 of train_ch8's 10-epoch progress lines and plot points per run
SEED = 0  # for both random (the batches) and torch (the weights)
THREADS = 1
# The speed in the closing line changes from run to run; everything else in it is recorded.
SPEED = re.compile(r"[\d.]+ tokens/sec")


def run_note_cut_short(epochs: int = EPOCHS, seed: int = SEED, plots: Path | None = None):
    """Run the 8.5 note with each train_ch8 cut to ``epochs``; returns one dict per train_ch8 call.

    Each dict: the arguments the script passed (``asked_epochs`` is the book's 500),
    ``perplexities`` (one per epoch), ``plotted`` (the Animator's points) and
    ``printed`` (the lines train_ch8 printed, tokens/sec masked). The plots go to
    ``plots`` (a temporary folder if None). Threads and the patched names are
    restored on return; the seeds of ``random`` and torch are not.
    """
    runs = []
    real_train, real_epoch = d2l.train_ch8, d2l.train_epoch_ch8
    real_animator, real_try_gpu = d2l.Animator, d2l.try_gpu
    threads = torch.get_num_threads()

    def recording_epoch(*args, **kwargs):
        ppl, speed = real_epoch(*args, **kwargs)
        runs[-1]["perplexities"].append(ppl)
        return ppl, speed

    def recording_animator(*args, **kwargs):
        animator = real_animator(*args, path=Path(folder) / f"train-{len(runs)}.png", **kwargs)
        runs[-1]["animator"] = animator
        return animator

    def short_train(net, train_iter, vocab, lr, num_epochs, device, use_random_iter=False):
        runs.append({"asked_epochs": num_epochs, "lr": lr, "use_random_iter": use_random_iter,
                     "batch_size": train_iter.batch_size, "num_steps": train_iter.num_steps,
                     "num_hiddens": net.num_hiddens, "perplexities": []})
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            real_train(net, train_iter, vocab, lr, epochs, device, use_random_iter)
        animator = runs[-1].pop("animator")
        runs[-1]["plotted"] = {"epochs": animator.X[0], "perplexities": animator.Y[0]}
        runs[-1]["printed"] = [SPEED.sub("<speed> tokens/sec", line)
                               for line in out.getvalue().splitlines()]

    with contextlib.ExitStack() as stack:
        folder = plots if plots is not None else stack.enter_context(tempfile.TemporaryDirectory())
        try:
            torch.set_num_threads(THREADS)
            d2l.train_ch8, d2l.train_epoch_ch8 = short_train, recording_epoch
            d2l.Animator = recording_animator
            d2l.try_gpu = lambda i=0: torch.device("cpu")  # the record is of a CPU run
            random.seed(seed)
            torch.manual_seed(seed)
            with contextlib.redirect_stdout(io.StringIO()):  # the note's shapes and tensors
                runpy.run_path(str(NOTE), run_name="__main__")
        finally:
            d2l.train_ch8, d2l.train_epoch_ch8 = real_train, real_epoch
            d2l.Animator, d2l.try_gpu = real_animator, real_try_gpu
            torch.set_num_threads(threads)
    return runs


def main() -> None:
    runs = run_note_cut_short()
    record = {
        "what": f"rnnlab.d2l.train_ch8 on {NOTE.relative_to(NOTE.parents[2])}, "
                f"each train_ch8 cut to {EPOCHS} epochs",
        "made_by": "tests/data/make_d2l_curve.py",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": THREADS,
        "seeds": {"random": SEED, "torch": SEED},
        "epochs": EPOCHS,
        "device": "cpu",
        "dtype": "float32",
        "runs": runs,
    }
    RECORD.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    for run in runs:
        kind = "random" if run["use_random_iter"] else "sequential"
        print(kind, " ".join(f"{p:.4f}" for p in run["perplexities"]), *run["printed"][-3:],
              sep="\n")
    print(f"wrote {RECORD}", file=sys.stderr)


if __name__ == "__main__":
    main()
