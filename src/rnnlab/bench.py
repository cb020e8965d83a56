"""Training speed of the scratch, torch.nn and fused models, measured side by side.

Every implementation trains on the same batches (The Time Machine, letters mode,
sequential sampling, SGD with lr 1, gradients clipped to norm 1) from the same
initial weights. After a warm-up, the timed batches are interleaved: each
implementation in turn runs one batch, round after round, so that a shared or
busy machine slows all of them alike, and tokens/s is computed from the median
time of a batch, which a burst of load on a shared machine hardly moves. The
device is synchronized before every clock reading.

    rows = run_bench(BenchConfig(cells=("lstm",), hidden=(256,)))
    print(format_table(rows))

Row keys: impl, cell, hidden, layers, batch, steps, device, tokens_per_s,
vs_scratch, vs_torch (tokens/s relative to the scratch / torch model of the same
size, None where that one was not run) and peak_mem_mb: on CUDA, the most memory
allocated during the implementation's warm-up steps beyond what was allocated
before them (activations, gradients, workspace); on the CPU None, since the
process's peak resident size is one high-water mark shared by every model in it.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import torch

from . import batches as batches_mod
from . import corpus, files, tokenize, train, vocab
from .config import BenchConfig, ModelConfig
from .errors import RnnlabError
from .models import ScratchLM, TorchLM, build_model


def _time_machine_ids() -> torch.Tensor:
    tokens = tokenize.tokenize(corpus.read_text("timemachine"), "letters")
    return torch.tensor(vocab.Vocab(tokens)[tokens], dtype=torch.long)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Runner:
    """One implementation's model, optimizer and carried state, with its measured time."""

    def __init__(self, impl: str, model, device: torch.device, clip: float, batch_size: int):
        self.impl, self.model, self.device = impl, model, device
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        self.step = train.make_step(model, optimizer, clip)
        self.state = model.begin_state(batch_size, device)
        self.seconds: list[float] = []  # time of each timed batch
        self.peak_mem_mb: float | None = None

    def run(self, X: torch.Tensor, Y: torch.Tensor) -> float:
        """Train on one batch X, Y (B, T); returns the seconds it took."""
        _sync(self.device)
        start = time.perf_counter()
        _, _, self.state = self.step(X, Y, self.state)
        _sync(self.device)
        return time.perf_counter() - start


def _models(
    impls: Sequence[str], cell: str, V: int, H: int, layers: int, seed: int, device: torch.device
) -> dict[str, torch.nn.Module]:
    """The models to compare, all starting from the scratch model's initial weights."""
    torch.manual_seed(seed)
    config = ModelConfig(cell=cell, impl="scratch", hidden=H, layers=layers)
    reference = ScratchLM(V, H, layers, cell)
    models = {}
    for impl in impls:
        model = build_model(replace(config, impl=impl), V)
        if isinstance(model, TorchLM):
            model.copy_from_scratch(reference)
        else:
            model.load_state_dict(reference.state_dict())
        models[impl] = model.to(device)
    return models


def run_bench(cfg: BenchConfig, corpus_ids: torch.Tensor | None = None) -> list[dict]:
    """Train each implementation for ``cfg.batches`` timed batches; one row per (cell, H, impl).

    corpus_ids: token ids (N,) to train on instead of The Time Machine (for tests).
    """
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, corpus_ids)
    finally:
        torch.set_num_threads(threads_before)


def _run(cfg: BenchConfig, corpus_ids: torch.Tensor | None) -> list[dict]:
    dev = train.resolve_device(cfg.device)
    batch_size, num_steps, layers, seed = cfg.batch_size, cfg.num_steps, cfg.layers, cfg.seed
    ids = _time_machine_ids() if corpus_ids is None else corpus_ids.long()
    V = int(ids.max()) + 1
    X_all, Y_all = batches_mod.epoch_batches(ids, batch_size, num_steps, "sequential", seed, 0)
    X_all, Y_all = X_all.to(dev), Y_all.to(dev)
    # wraps round a short corpus
    order = [i % len(X_all) for i in range(cfg.warmup + cfg.batches)]
    warm, timed = order[: cfg.warmup], order[cfg.warmup :]
    rows: list[dict] = []
    for cell in cfg.cells:
        for H in cfg.hidden:
            models = _models(cfg.impls, cell, V, H, layers, seed, dev)
            runners = [_Runner(impl, m, dev, 1.0, batch_size) for impl, m in models.items()]
            for runner in runners:
                if dev.type == "cuda":
                    _sync(dev)
                    torch.cuda.reset_peak_memory_stats(dev)
                    before = torch.cuda.memory_allocated(dev)
                for i in warm:
                    runner.run(X_all[i], Y_all[i])
                if dev.type == "cuda":
                    runner.peak_mem_mb = (torch.cuda.max_memory_allocated(dev) - before) / 2**20
            # Round robin, starting each round one implementation later, so that every
            # implementation sees the same load and none always follows the same one.
            for rnd, i in enumerate(timed):
                for k in range(len(runners)):
                    runner = runners[(rnd + k) % len(runners)]
                    runner.seconds.append(runner.run(X_all[i], Y_all[i]))
            speed = {r.impl: batch_size * num_steps / statistics.median(r.seconds) for r in runners}
            for runner in runners:
                tps = speed[runner.impl]
                rows.append(
                    dict(
                        impl=runner.impl,
                        cell=cell,
                        hidden=H,
                        layers=layers,
                        batch=batch_size,
                        steps=num_steps,
                        device=dev.type,
                        tokens_per_s=tps,
                        vs_scratch=tps / speed["scratch"] if "scratch" in speed else None,
                        vs_torch=tps / speed["torch"] if "torch" in speed else None,
                        peak_mem_mb=runner.peak_mem_mb,
                    )
                )
    return rows


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned plain-text table."""
    header = [
        "impl",
        "cell",
        "hidden",
        "layers",
        "batch",
        "steps",
        "device",
        "tokens/s",
        "vs scratch",
        "vs torch",
        "peak MB",
    ]
    body = [
        [
            r["impl"],
            r["cell"],
            str(r["hidden"]),
            str(r["layers"]),
            str(r["batch"]),
            str(r["steps"]),
            r["device"],
            _fmt(r["tokens_per_s"], ",.0f"),
            _fmt(r["vs_scratch"], ".2f"),
            _fmt(r["vs_torch"], ".2f"),
            _fmt(r["peak_mem_mb"], ".1f"),
        ]
        for r in rows
    ]
    widths = [max(len(line[k]) for line in [header] + body) for k in range(len(header))]
    left = {0, 1, 6}  # text columns; numbers are right-aligned

    def line(cells):
        return "  ".join(
            c.ljust(w) if k in left else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])


def save_rows(cfg: BenchConfig, rows: list[dict]) -> None:
    """Write the rows to ``cfg.out`` as JSON, with the date, torch's version and the threads."""
    if not cfg.out:
        raise RnnlabError("no file to write the benchmark's rows to; give --out FILE")
    meta = dict(
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        torch=torch.__version__,
        threads=cfg.threads or torch.get_num_threads(),
        config=asdict(cfg),
    )
    data = json.dumps(dict(meta=meta, rows=rows), indent=2, default=list).encode("utf-8")
    try:
        files.atomic_write(Path(cfg.out), data)
    except OSError as e:
        raise RnnlabError(
            f"cannot write --out {cfg.out} ({e.strerror or e}); choose another file"
        ) from None
