"""Check the GPU paths on CUDA, then time them: run this on an H100 (written without one).

    python3 benchmarks/gpu_check.py            # checks, then the timing table (a few minutes)
    python3 benchmarks/gpu_check.py --quick    # fewer repeats
    TRITON_INTERPRET=1 python3 benchmarks/gpu_check.py --cpu-dry-run   # the checks, tiny, on CPU

1. Correctness on CUDA (exits with status 1 if a check fails):
   a. the Triton recurrences (rnnlab.experimental.triton_rnn) against the scratch
      layers run in float64, outputs, final states and all gradients, relative
      error max|a - b| / max|b| <= 1e-4, or 10x torch's own float32 error if that
      is larger (precision "ieee"); the tf32 modes' errors are printed, not checked;
   b. the fused model (--impl fused: cuDNN through torch on CUDA while V <= H) and
      the triton model (--impl triton, experimental) against the scratch model
      with the same weights (logits and gradients, float32 both, <= 1e-4);
   c. the CUDA-graphed step (rnnlab.experimental.cuda_graph.graphed_step, --cuda-graph,
      experimental) against train.train_step over a few steps (loss, norm,
      state, parameters, <= 1e-5).
2. Timing of one layer's recurrence, forward + backward (Triton schedules and
   precisions, and the cuDNN layer), to see where the time goes; then
   timing of one training step (forward, loss, backward, clipping, SGD) at the
   issue's two set-ups, for scratch, torch (cuDNN), fused (cuDNN), triton (each
   schedule), the last two also with the CUDA-graphed step: CUDA events around
   STEPS steps, median of REPEATS runs, tokens/s = B*T / step time, and the peak
   memory allocated during the timed steps (parameters, gradients and optimizer
   state included).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch

from rnnlab import train
from rnnlab.config import ModelConfig
from rnnlab.experimental import cuda_graph, triton_rnn
from rnnlab.experimental.cuda_graph import GraphedTrainStep
from rnnlab.models import build_model, layout
from rnnlab.models.cells import CELLS as CELL_REGISTRY

# The helpers defined inside loops below read that iteration's variables and are called
# before the next iteration starts, so the late binding B023 warns about cannot bite.
# ruff: noqa: B023

SETUPS = [  # name, kind, V, H, L, B, T
    ("rnn 512, batch 32, 35 steps", "rnn", 28, 512, 1, 32, 35),
    ("lstm 2x1024, batch 64, 100 steps", "lstm", 28, 1024, 2, 64, 100),
]
TOLERANCE = 1e-4
GRAPHED_IMPLS = ("fused", "triton")  # the models that declare cuda_graph_safe


def model_of(impl, kind, V, H, L=1):
    """The model ``rnnlab train --impl IMPL --cell KIND --hidden H --layers L`` builds."""
    return build_model(ModelConfig(cell=kind, impl=impl, hidden=H, layers=L), V)


def graphed_step(model, optimizer, device):
    """The --cuda-graph step; on the CPU (--cpu-dry-run) GraphedTrainStep's eager fallback."""
    if device.type == "cuda" and getattr(model, "cuda_graph_safe", False):
        return cuda_graph.graphed_step(model, optimizer, 1.0)
    return GraphedTrainStep(model, optimizer, clip=1.0)  # torch's models: capture them anyway


def rel_error(got, want):
    return ((got.double() - want.double()).abs().max() / want.double().abs().max()).item()


KERNEL_SHAPES = [
    ("rnn", 35, 32, 512),
    ("gru", 35, 32, 512),
    ("lstm", 35, 32, 512),
    ("lstm", 100, 64, 1024),
    ("gru", 7, 20, 96),
    ("rnn", 3, 1, 16),
]
DRY_RUN_SHAPES = [("rnn", 3, 2, 16), ("gru", 3, 17, 32), ("lstm", 2, 3, 16)]


def check_kernels(device, shapes) -> bool:
    """1a: Triton recurrence vs float64 scratch layer, via the stacked layout."""
    ok = True
    for kind, T, B, H in shapes:
        torch.manual_seed(0)
        D = 28
        layer = CELL_REGISTRY[kind].new_layer(D, H).to(device, torch.float64)
        with torch.no_grad():
            for p in layer.parameters():  # big enough that the nonlinearities matter
                p.normal_(0, 1.0 / p.shape[0] ** 0.5 if p.dim() == 2 else 0.5)
        X = torch.randn(T, B, D, device=device, dtype=torch.float64)
        h0 = torch.randn(B, H, device=device, dtype=torch.float64) * 0.5
        c0 = torch.randn(B, H, device=device, dtype=torch.float64) * 0.5
        w_out = torch.randn(T, B, H, device=device, dtype=torch.float64)
        w_h = torch.randn(B, H, device=device, dtype=torch.float64)

        def run(lay, dtype, fn):
            lay.zero_grad()
            W_x, W_h, b = layout.stacked(lay, kind)
            state = [s.detach().to(dtype).clone().requires_grad_() for s in (h0, c0)]
            out, hT, cT = fn(X.to(dtype) @ W_x + b, W_h, layout.hidden_bias(lay, kind), *state)
            loss = (out.double() * w_out).sum() + (hT.double() * w_h).sum()
            if cT is not None:
                loss = loss + (cT.double() * w_h).sum()
            loss.backward()
            grads = [p.grad.clone() for p in lay.parameters()] + [state[0].grad]
            if kind == "lstm":
                grads.append(state[1].grad)
            return [out, hT] + grads

        def reference(XW, W_h, b_hh, h0_, c0_):
            out, last = layer(X, (h0_, c0_) if kind == "lstm" else h0_)  # float64 layer
            return (out, last[0], last[1]) if kind == "lstm" else (out, last, None)

        want = run(layer, torch.float64, reference)
        layer32 = copy.deepcopy(layer).float()
        # float32 itself drifts from float64 over many steps; allow 10x that drift if larger.
        layer_f32 = copy.deepcopy(layer).float()

        def reference32(XW, W_h, b_hh, h0_, c0_):
            out, last = layer_f32(X.float(), (h0_, c0_) if kind == "lstm" else h0_)
            return (out, last[0], last[1]) if kind == "lstm" else (out, last, None)

        drift = max(
            rel_error(g, w) for g, w in zip(run(layer_f32, torch.float32, reference32), want)
        )
        tolerance = max(TOLERANCE, 10 * drift)
        print(f"  torch float32 {kind:4s} T={T:3d} B={B:2d} H={H:4d} max rel error {drift:.2e}")
        for schedule in triton_rnn.SCHEDULES:
            for precision in triton_rnn.PRECISIONS:
                got = run(
                    layer32,
                    torch.float32,
                    lambda *a: triton_rnn.recurrence(
                        kind,
                        *a[:4],
                        a[4] if kind == "lstm" else None,
                        precision=precision,
                        schedule=schedule,
                    ),
                )
                err = max(rel_error(g, w) for g, w in zip(got, want))
                good = err <= tolerance or precision != "ieee"
                ok &= good
                verdict = "" if precision != "ieee" else ("ok" if good else "FAIL")
                print(
                    f"  kernel {kind:4s} T={T:3d} B={B:2d} H={H:4d} {schedule:10s} "
                    f"{precision:6s} max rel error {err:.2e} {verdict}"
                )
    return ok


def check_models(device) -> bool:
    """1b and 1c: fused and triton models == scratch model; graphed step == train_step."""
    ok = True
    for kind in ("rnn", "gru", "lstm"):
        torch.manual_seed(0)
        ref = model_of("scratch", kind, 28, 64, 2).to(device)
        with torch.no_grad():
            for p in ref.parameters():
                p.normal_(0, 0.2)
        X = torch.randint(28, (16, 12), device=device)
        Y = torch.randint(28, (16, 12), device=device)
        logits, _ = ref(X, ref.begin_state(16, device))
        train.sequence_loss(logits, Y).backward()
        want = [logits] + [p.grad for p in ref.parameters()]
        for impl in ("fused", "triton"):
            model = model_of(impl, kind, 28, 64, 2).to(device)
            model.load_state_dict(ref.state_dict())
            logits, _ = model(X, model.begin_state(16, device))
            train.sequence_loss(logits, Y).backward()
            got = [logits] + [p.grad for p in model.parameters()]
            err = max(rel_error(g, w) for g, w in zip(got, want))
            ok &= err <= TOLERANCE
            print(
                f"  {impl} model {kind:4s} ({model.path(device.type)}) vs scratch: max rel "
                f"error {err:.2e} {'ok' if err <= TOLERANCE else 'FAIL'}"
            )

        for impl in ("fused", "triton", "torch"):
            torch.manual_seed(0)
            model_a = model_of(impl, kind, 28, 64, 2).to(device)
            model_b = copy.deepcopy(model_a)
            opt_a = train.make_optimizer("adam", model_a.parameters(), 1e-2)
            opt_b = train.make_optimizer("adam", model_b.parameters(), 1e-2)
            step = graphed_step(model_b, opt_b, device)
            state_a = state_b = model_a.begin_state(16, device)
            errs = []
            try:
                for _ in range(5):
                    loss_a, norm_a, state_a = train.train_step(model_a, opt_a, X, Y, state_a, 1.0)
                    loss_b, norm_b, state_b = step(X, Y, state_b)
                    errs += [rel_error(loss_b, loss_a), rel_error(norm_b, norm_a)]
            except Exception as error:  # noqa: BLE001 - e.g. a cuDNN call that cannot be captured
                print(f"  graphed step {impl:6s} {kind:4s}: {type(error).__name__}: {error}")
                ok &= impl not in GRAPHED_IMPLS
                continue
            errs += [rel_error(q, p) for p, q in zip(model_a.parameters(), model_b.parameters())]
            err = max(errs)
            ok &= err <= 1e-5
            print(
                f"  graphed step {impl:6s} {kind:4s} (adam) vs train_step: max rel error "
                f"{err:.2e} {'ok' if err <= 1e-5 else 'FAIL'}"
            )
    return ok


def median_seconds(run, steps, repeats, device):
    """Median over ``repeats`` of the seconds per call of ``run()``, timed over ``steps`` calls
    with CUDA events (on the CPU, for --cpu-dry-run, with the wall clock)."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                run()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000 / steps)
        else:
            began = time.perf_counter()
            for _ in range(steps):
                run()
            times.append((time.perf_counter() - began) / steps)
    return statistics.median(times)


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_bytes(device):
    return torch.cuda.max_memory_allocated() if device.type == "cuda" else float("nan")


def time_training(impl, graphed, kind, V, H, L, B, T, steps, repeats, device):
    """Median seconds per training step and peak bytes allocated while timing."""
    torch.manual_seed(0)
    model = model_of(impl, kind, V, H, L).to(device)
    optimizer = train.make_optimizer("sgd", model.parameters(), 1.0)
    data = [
        (torch.randint(V, (B, T), device=device), torch.randint(V, (B, T), device=device))
        for _ in range(4)
    ]
    # as rnnlab train makes it
    step = (
        cuda_graph.graphed_step(model, optimizer, 1.0)
        if graphed
        else train.make_step(model, optimizer, 1.0)
    )

    carry = {"state": model.begin_state(B, device), "i": 0}

    def run():  # one step on the next batch, the state carried as in sequential sampling
        X, Y = data[carry["i"] % len(data)]
        _, _, carry["state"] = step(X, Y, carry["state"])
        carry["i"] += 1

    for _ in range(5):  # compile kernels, capture the graph, warm the caches
        run()
    reset_peak(device)
    seconds = median_seconds(run, steps, repeats, device)
    return seconds, peak_bytes(device)


def time_recurrences(kind, H, B, T, schedule, precision, steps, repeats, device):
    """Median seconds of one layer's recurrence, forward + backward, without a graph:
    the Triton kernels (schedule, precision) or, for schedule "cudnn", torch's nn layer
    (which also does the input projection, D = H)."""
    torch.manual_seed(0)
    G = layout.num_gates(kind)
    if schedule == "cudnn":
        layer = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[kind](H, H)
        layer = layer.to(device)
        X = torch.randn(T, B, H, device=device, requires_grad=True)

        def run():
            out, _ = layer(X)
            out.sum().backward()
    else:
        XW = (torch.randn(T, B, G * H, device=device) * 0.5).requires_grad_()
        W_h = (torch.randn(H, G * H, device=device) / H**0.5).requires_grad_()
        b = torch.zeros(G * H, device=device, requires_grad=True)
        h0 = torch.zeros(B, H, device=device, requires_grad=True)
        c0 = torch.zeros(B, H, device=device, requires_grad=True) if kind == "lstm" else None

        def run():
            out, _, _ = triton_rnn.recurrence(
                kind, XW, W_h, b, h0, c0, precision=precision, schedule=schedule
            )
            out.sum().backward()

    for _ in range(3):
        run()
    reset_peak(device)
    return median_seconds(run, steps, repeats, device), peak_bytes(device)


def print_recurrence_table(layers, steps, repeats, device):
    print(f"\none layer's recurrence, forward + backward, eager, median of {repeats} x {steps}")
    print(f"{'layer':28s} {'implementation':22s} {'ms':>9s} {'peak MiB':>9s}")
    for kind, H, B, T in layers:
        name = f"{kind} H={H} B={B} T={T}"
        for schedule, precision in (
            ("cudnn", ""),
            ("persistent", "ieee"),
            ("persistent", "tf32"),
            ("per_step", "ieee"),
            ("per_step", "tf32"),
        ):
            label = f"{schedule} {precision}".strip()
            try:
                seconds, peak = time_recurrences(
                    kind, H, B, T, schedule, precision or "ieee", steps, repeats, device
                )
            except Exception as error:  # noqa: BLE001 - report it, carry on with the other rows
                print(f"{name:28s} {label:22s} failed: {type(error).__name__}: {error}")
                continue
            print(f"{name:28s} {label:22s} {seconds * 1e3:9.3f} {peak / 2**20:9.1f}", flush=True)


def uses_triton(impl, device) -> bool:
    """Whether the ``impl`` model runs the Triton kernels here (counts launches)."""
    count = [0]
    kernel = triton_rnn._forward_kernel

    class Counting:
        def __getitem__(self, grid):
            count[0] += 1
            return kernel[grid]

    triton_rnn._forward_kernel = Counting()
    try:
        model = model_of(impl, "lstm", 28, 64).to(device)
        model(torch.zeros(2, 3, dtype=torch.long, device=device), model.begin_state(2, device))
    finally:
        triton_rnn._forward_kernel = kernel
    return count[0] > 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--skip-checks", action="store_true")
    parser.add_argument(
        "--cpu-dry-run",
        action="store_true",
        help="run the checks and one timing row of each kind at tiny shapes on "
        "the CPU, with TRITON_INTERPRET=1 (tests this script without a GPU; "
        "the times mean nothing)",
    )
    args = parser.parse_args()
    if args.cpu_dry_run:
        device = torch.device("cpu")
        ok = check_kernels(device, DRY_RUN_SHAPES) & check_models(device)
        print_recurrence_table([("lstm", 16, 3, 2)], 1, 1, device)
        for impl in ("fused", "triton"):  # no graph: --cuda-graph needs CUDA
            print(impl, time_training(impl, False, "gru", 5, 16, 2, 3, 4, 1, 1, device))
        return 0 if ok else 1
    if not torch.cuda.is_available():
        print("no CUDA device: this script checks and times the GPU path; nothing to do")
        return 2
    device = torch.device("cuda")
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
        f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}"
    )
    for impl in ("fused", "triton"):
        paths = ", ".join(
            f"{kind} {model_of(impl, kind, V, H, 1).path('cuda')}" for _, kind, V, H, *_ in SETUPS
        )
        print(f"--impl {impl}: {paths}; runs the Triton kernels: {uses_triton(impl, device)}")
    if not args.skip_checks:
        print("correctness on CUDA:")
        ok = check_kernels(device, KERNEL_SHAPES)
        ok &= check_models(device)
        if not ok:
            print("a correctness check FAILED: not timing")
            return 1
    steps, repeats = (10, 3) if args.quick else (30, 7)
    print_recurrence_table([("rnn", 512, 32, 35), ("lstm", 1024, 64, 100)], steps, repeats, device)
    print(f"\ntraining step (SGD, clip 1), median of {repeats} x {steps} steps")
    print(f"{'set-up':34s} {'impl':25s} {'ms/step':>9s} {'tokens/s':>12s} {'peak MiB':>9s}")
    for name, kind, V, H, L, B, T in SETUPS:
        for impl, schedule in (
            ("scratch", None),
            ("torch", None),
            ("fused", None),
            ("triton", "persistent"),
            ("triton", "per_step"),
        ):
            triton_rnn.DEFAULT_SCHEDULE = schedule or "persistent"
            for graphed in (False, True) if impl in GRAPHED_IMPLS else (False,):
                label = impl + (f" {schedule}" if schedule else "") + (" +graph" if graphed else "")
                try:
                    seconds, peak = time_training(
                        impl, graphed, kind, V, H, L, B, T, steps, repeats, device
                    )
                except Exception as error:  # noqa: BLE001 - report it, carry on with the other rows
                    print(f"{name:34s} {label:25s} failed: {type(error).__name__}: {error}")
                    continue
                print(
                    f"{name:34s} {label:25s} {seconds * 1e3:9.3f} {B * T / seconds:12,.0f} "
                    f"{peak / 2**20:9.1f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
