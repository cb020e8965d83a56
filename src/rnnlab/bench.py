"""Training speed of the scratch, torch.nn and fused models, measured side by side.

Every implementation trains on the same batches (The Time Machine, letters mode,
sequential sampling, SGD with lr 1, gradients clipped to norm 1) from the same
initial weights. After a warm-up, the timed batches are interleaved: each
implementation in turn runs one batch, round after round, so that a shared or
busy machine slows all of them alike, and tokens/s is computed from the median
time of a batch, which a burst of load on a shared machine hardly moves. The
device is synchronized before every clock reading.

    rows = run_bench(device="cpu", kinds=("lstm",), hidden_sizes=(256,))
    print(format_table(rows))

Row keys: impl, model, hidden, layers, batch, steps, device, tokens_per_s,
vs_scratch, vs_torch (tokens/s relative to the scratch / torch model of the same
size, None where that one was not run) and peak_mem_mb: on CUDA, the most memory
allocated during the implementation's warm-up steps beyond what was allocated
before them (activations, gradients, workspace); on the CPU None, since the
process's peak resident size is one high-water mark shared by every model in it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

from . import batches as batches_mod
from . import corpus, tokenize, train, vocab
from .errors import RnnlabError
from .models import KINDS, build_model

IMPLS = ("scratch", "torch", "fused")


def _time_machine_ids() -> torch.Tensor:
    tokens = tokenize.tokenize(corpus.read_text("timemachine"), "letters")
    return torch.tensor(vocab.Vocab(tokens)[tokens], dtype=torch.long)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_step(impl: str, model, optimizer, device: torch.device, clip: float) -> Callable:
    """step(X, Y, state) -> (loss, norm, state): the graphed CUDA step for fused, if available."""
    if device.type == "cuda" and impl == "fused":
        try:
            from .cuda_graph import GraphedTrainStep
        except ImportError:
            GraphedTrainStep = None
        if GraphedTrainStep is not None:
            return GraphedTrainStep(model, optimizer, clip)

    def step(X, Y, state):
        return train.train_step(model, optimizer, X, Y, state, clip)
    return step


class _Runner:
    """One implementation's model, optimizer and carried state, with its measured time."""

    def __init__(self, impl: str, model, device: torch.device, clip: float, batch_size: int):
        self.impl, self.model, self.device = impl, model, device
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        self.step = _make_step(impl, model, optimizer, device, clip)
        self.state = model.begin_state(batch_size, device)
        self.seconds: List[float] = []  # time of each timed batch
        self.peak_mem_mb: Optional[float] = None

    def run(self, X: torch.Tensor, Y: torch.Tensor) -> float:
        """Train on one batch X, Y (B, T); returns the seconds it took."""
        _sync(self.device)
        start = time.perf_counter()
        _, _, self.state = self.step(X, Y, self.state)
        _sync(self.device)
        return time.perf_counter() - start


def _models(impls: Sequence[str], kind: str, V: int, H: int, layers: int, seed: int,
            device: torch.device) -> Dict[str, torch.nn.Module]:
    """The models to compare, all starting from the scratch model's initial weights."""
    torch.manual_seed(seed)
    reference = build_model("scratch", kind, V, H, layers)
    models = {}
    for impl in impls:
        model = build_model(impl, kind, V, H, layers)
        if impl == "torch":
            model.copy_from_scratch(reference)
        else:
            model.load_state_dict(reference.state_dict())
        models[impl] = model.to(device)
    return models


def run_bench(device: str = "cpu", impls: Sequence[str] = IMPLS,
              kinds: Sequence[str] = ("rnn", "gru", "lstm"),
              hidden_sizes: Sequence[int] = (256, 512), batch_size: int = 32, num_steps: int = 35,
              layers: int = 1, batches: int = 20, warmup: int = 3, seed: int = 0,
              corpus_ids: Optional[torch.Tensor] = None) -> List[dict]:
    """Train each implementation for ``batches`` timed batches; one row per (model, size, impl).

    corpus_ids: token ids (N,) to train on instead of The Time Machine (for tests).
    """
    for impl in impls:
        if impl not in IMPLS:
            raise RnnlabError(f"unknown implementation {impl!r}; choose from {', '.join(IMPLS)}")
    for kind in kinds:
        if kind not in KINDS:
            raise RnnlabError(f"unknown model {kind!r}; choose from {', '.join(KINDS)}")
    if batches < 1 or warmup < 0:
        raise RnnlabError(f"need batches >= 1 and warmup >= 0 (got {batches}, {warmup})")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RnnlabError("--device cuda was asked for but torch sees no CUDA device; "
                         "use --device cpu")
    ids = _time_machine_ids() if corpus_ids is None else corpus_ids.long()
    V = int(ids.max()) + 1
    X_all, Y_all = batches_mod.epoch_batches(ids, batch_size, num_steps, "sequential", seed, 0)
    X_all, Y_all = X_all.to(dev), Y_all.to(dev)
    order = [i % len(X_all) for i in range(warmup + batches)]  # wraps round a short corpus
    warm, timed = order[:warmup], order[warmup:]
    rows: List[dict] = []
    for kind in kinds:
        for H in hidden_sizes:
            models = _models(impls, kind, V, H, layers, seed, dev)
            runners = [_Runner(impl, m, dev, 1.0, batch_size) for impl, m in models.items()]
            for runner in runners:
                if dev.type == "cuda":
                    _sync(dev)
                    torch.cuda.reset_peak_memory_stats(dev)
                    before = torch.cuda.memory_allocated(dev)
                for i in warm:
                    runner.run(X_all[i], Y_all[i])
                if dev.type == "cuda":
                    runner.peak_mem_mb = (torch.cuda.max_memory_allocated(dev) - before) / 2 ** 20
            # Round robin, starting each round one implementation later, so that every
            # implementation sees the same load and none always follows the same one.
            for rnd, i in enumerate(timed):
                for k in range(len(runners)):
                    runner = runners[(rnd + k) % len(runners)]
                    runner.seconds.append(runner.run(X_all[i], Y_all[i]))
            speed = {r.impl: batch_size * num_steps / statistics.median(r.seconds)
                     for r in runners}
            for runner in runners:
                tps = speed[runner.impl]
                rows.append(dict(
                    impl=runner.impl, model=kind, hidden=H, layers=layers, batch=batch_size,
                    steps=num_steps, device=dev.type, tokens_per_s=tps,
                    vs_scratch=tps / speed["scratch"] if "scratch" in speed else None,
                    vs_torch=tps / speed["torch"] if "torch" in speed else None,
                    peak_mem_mb=runner.peak_mem_mb))
    return rows


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(rows: List[dict]) -> str:
    """The rows as an aligned plain-text table."""
    header = ["impl", "model", "hidden", "layers", "batch", "steps", "device", "tokens/s",
              "vs scratch", "vs torch", "peak MB"]
    body = [[r["impl"], r["model"], str(r["hidden"]), str(r["layers"]), str(r["batch"]),
             str(r["steps"]), r["device"], _fmt(r["tokens_per_s"], ",.0f"),
             _fmt(r["vs_scratch"], ".2f"), _fmt(r["vs_torch"], ".2f"),
             _fmt(r["peak_mem_mb"], ".1f")] for r in rows]
    widths = [max(len(line[k]) for line in [header] + body) for k in range(len(header))]
    left = {0, 1, 6}  # text columns; numbers are right-aligned

    def line(cells):
        return "  ".join(c.ljust(w) if k in left else c.rjust(w)
                         for k, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Training tokens/s of the scratch, torch and "
                                                 "fused models on The Time Machine.")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--kinds", default="rnn,gru,lstm", help="comma-separated models")
    parser.add_argument("--impls", default=",".join(IMPLS), help="comma-separated implementations")
    parser.add_argument("--hidden", default="256,512", help="comma-separated hidden sizes")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-steps", type=int, default=35)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads for every implementation (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--out", help="also write the rows as JSON to this file")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        hidden = [int(h) for h in args.hidden.split(",")]
    except ValueError:
        raise RnnlabError(f"--hidden takes comma-separated integers, got {args.hidden!r}") from None
    threads_before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rows = run_bench(device=args.device, impls=args.impls.split(","),
                         kinds=args.kinds.split(","), hidden_sizes=hidden,
                         batch_size=args.batch_size, num_steps=args.num_steps,
                         layers=args.layers, batches=args.batches, warmup=args.warmup,
                         seed=args.seed)
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads_before)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    if args.out:
        meta = dict(date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), torch=torch.__version__,
                    threads=threads, argv=list(sys.argv[1:] if argv is None else argv))
        with open(args.out, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=2)
    return 0
