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

One row per (cell, H, B, T, implementation), B and T running over every
``batch_size`` and ``num_steps`` given. Row keys: impl, cell, hidden, layers,
batch, steps, device, tokens_per_s; vs_scratch, vs_torch (tokens/s relative to
the scratch / torch model of the same size, None where that one was not run);
floor_tokens_per_s, floor_fraction (below; None with ``no_floor``); peak_mem_mb.

**The floor.** A training step of L layers cannot avoid these matrix products
(G gates; the first layer's one-hot input product is a row lookup, so not counted):

    per layer, each of T steps   h_{t-1} W_h        (B, H) @ (H, G*H)     forward
                                 dgates_t W_h^T     (B, G*H) @ (G*H, H)   backward
    per layer, once              H_prev^T dGates    (H, T*B) @ (T*B, G*H) dW_h
    layers above the first       X W_x, dGates W_x^T, X^T dGates          (T*B, H) by (H, G*H)
    output layer                 outputs W_hq, dlogits W_hq^T, outputs^T dlogits   V columns

The floor is timed in the same rounds as the implementations, on preallocated
tensors, and ``floor_tokens_per_s`` = B*T / its median time: a step made of
nothing but those products. ``floor_fraction`` = tokens_per_s / floor_tokens_per_s,
how close an implementation comes to it (1.0 would leave no time for the gate
arithmetic, the loss, clipping and the update).

**Peak memory** is measured over the warm-up steps after the first (which also
initialises libraries), so it needs ``warmup`` >= 2 (else None). On CUDA: the most
memory allocated during them beyond what was allocated before them (activations,
gradients, workspace). On the CPU (Linux): how far the process's peak resident
set size rose during them above its size before; freed heap memory is first given
back to the system (``malloc_trim``) and the peak reset (``/proc/self/clear_refs``),
so one implementation's freed buffers do not hide the next one's. None where the
system offers neither.
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
from . import corpus, files, heap, rundir, tokenize, train, vocab
from .command_config import BenchConfig
from .config import ModelConfig
from .errors import RnnlabError
from .models import ScratchLM, TorchLM, build_model
from .models.layout import num_gates


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


class _Floor:
    """The matrix products a training step cannot avoid (module docstring), on fixed tensors."""

    def __init__(self, cell: str, V: int, H: int, layers: int, B: int, T: int, device):
        GH = num_gates(cell) * H
        new = lambda *shape: torch.randn(*shape, device=device) * 0.01  # noqa: E731
        self.device, self.T, self.layers = device, T, layers
        self.W_h, self.W_x, self.W_hq = new(H, GH), new(H, GH), new(H, V)
        self.h, self.dh, self.gates = new(B, H), new(B, H), new(B, GH)
        self.X, self.dX = new(T * B, H), new(T * B, H)  # a layer's inputs, and their gradient
        self.dG, self.XW = new(T * B, GH), new(T * B, GH)  # gate gradients, input projection
        self.dW = new(H, GH)
        self.logits, self.dlogits, self.dW_hq = new(T * B, V), new(T * B, V), new(H, V)
        self.seconds: list[float] = []

    def run(self, X=None, Y=None) -> float:
        """Run every product once; returns the seconds it took."""
        _sync(self.device)
        start = time.perf_counter()
        W_hT = self.W_h.t()
        for layer in range(self.layers):
            for _ in range(self.T):
                torch.mm(self.h, self.W_h, out=self.gates)  # forward, per step
            for _ in range(self.T):
                torch.mm(self.gates, W_hT, out=self.dh)  # backward, per step
            torch.mm(self.X.t(), self.dG, out=self.dW)  # dW_h over all steps
            if layer > 0:
                torch.mm(self.X, self.W_x, out=self.XW)
                torch.mm(self.dG, self.W_x.t(), out=self.dX)
                torch.mm(self.X.t(), self.dG, out=self.dW)  # dW_x
        torch.mm(self.X, self.W_hq, out=self.logits)
        torch.mm(self.dlogits, self.W_hq.t(), out=self.dX)
        torch.mm(self.X.t(), self.dlogits, out=self.dW_hq)
        _sync(self.device)
        return time.perf_counter() - start


def _status_kib(key: str) -> int | None:
    """A size line (VmRSS, VmHWM) of /proc/self/status in KiB; None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _start_rss_peak() -> int | None:
    """Give freed heap memory back, reset the peak resident size; the RSS now (KiB) or None."""
    malloc_trim = getattr(heap.libc(), "malloc_trim", None)
    if malloc_trim is None:
        return None
    malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS (Linux 4.0 and later)
    except OSError:
        return None
    return _status_kib("VmRSS")


def _peak_growth_mb(rss_before: int | None) -> float | None:
    """How far the peak RSS rose above ``rss_before`` (KiB), in MiB."""
    peak = _status_kib("VmHWM")
    if rss_before is None or peak is None:
        return None
    return max(peak - rss_before, 0) / 1024


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
    An ``out`` that can't be written is refused first, not after the minutes of timing.
    The process keeps freed memory from then on (rnnlab.heap), as a training run does.
    """
    if cfg.out:
        files.check_writable(Path(cfg.out), "--out")
        rundir.refuse_run_file(Path(cfg.out), "--out")
    heap.keep_freed_memory()
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, corpus_ids)
    finally:
        torch.set_num_threads(threads_before)


def _run(cfg: BenchConfig, corpus_ids: torch.Tensor | None) -> list[dict]:
    dev = train.resolve_device(cfg.device)
    ids = _time_machine_ids() if corpus_ids is None else corpus_ids.long()
    V = int(ids.max()) + 1
    rows: list[dict] = []
    for cell in cfg.cells:
        for H in cfg.hidden:
            for batch_size in cfg.batch_size:
                for num_steps in cfg.num_steps:
                    rows += _time_one(cfg, ids, V, cell, H, batch_size, num_steps, dev)
    return rows


def _time_one(cfg: BenchConfig, ids, V: int, cell: str, H: int, B: int, T: int, dev) -> list[dict]:
    """The rows of one (cell, H, B, T): every implementation, and the floor, timed in rounds."""
    X_all, Y_all = batches_mod.epoch_batches(ids, B, T, "sequential", cfg.seed, 0)
    X_all, Y_all = X_all.to(dev), Y_all.to(dev)
    # wraps round a short corpus
    order = [i % len(X_all) for i in range(cfg.warmup + cfg.batches)]
    warm, timed = order[: cfg.warmup], order[cfg.warmup :]
    models = _models(cfg.impls, cell, V, H, cfg.layers, cfg.seed, dev)
    runners = [_Runner(impl, m, dev, 1.0, B) for impl, m in models.items()]
    for runner in runners:
        # The first warm-up step also initialises libraries (kernels, thread pools, caches);
        # memory is measured over the steps after it, which all need the same.
        for k, i in enumerate(warm):
            if k == 1:
                if dev.type == "cuda":
                    _sync(dev)
                    torch.cuda.reset_peak_memory_stats(dev)
                    before = torch.cuda.memory_allocated(dev)
                else:
                    rss_before = _start_rss_peak()
            runner.run(X_all[i], Y_all[i])
        if len(warm) >= 2:
            if dev.type == "cuda":
                runner.peak_mem_mb = (torch.cuda.max_memory_allocated(dev) - before) / 2**20
            else:
                runner.peak_mem_mb = _peak_growth_mb(rss_before)
    timers: list[_Runner | _Floor] = list(runners)
    floor = None if cfg.no_floor else _Floor(cell, V, H, cfg.layers, B, T, dev)
    if floor is not None:
        for _ in warm:
            floor.run()
        timers.append(floor)
    # Round robin, starting each round one timer later, so that every implementation
    # sees the same load and none always follows the same one.
    for rnd, i in enumerate(timed):
        for k in range(len(timers)):
            timer = timers[(rnd + k) % len(timers)]
            timer.seconds.append(timer.run(X_all[i], Y_all[i]))
    tokens = B * T
    speed = {r.impl: tokens / statistics.median(r.seconds) for r in runners}
    floor_speed = tokens / statistics.median(floor.seconds) if floor is not None else None
    rows = []
    for runner in runners:
        tps = speed[runner.impl]
        rows.append(
            dict(
                impl=runner.impl,
                cell=cell,
                hidden=H,
                layers=cfg.layers,
                batch=B,
                steps=T,
                device=dev.type,
                tokens_per_s=tps,
                vs_scratch=tps / speed["scratch"] if "scratch" in speed else None,
                vs_torch=tps / speed["torch"] if "torch" in speed else None,
                floor_tokens_per_s=floor_speed,
                floor_fraction=tps / floor_speed if floor_speed else None,
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
        "floor tok/s",
        "of floor",
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
            _fmt(r["floor_tokens_per_s"], ",.0f"),
            _fmt(r["floor_fraction"], ".2f"),
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
        files.atomic_write(Path(cfg.out), data, follow_links=True)
    except OSError as e:
        raise RnnlabError(
            f"cannot write --out {cfg.out} ({e.strerror or e}); choose another file"
        ) from None
