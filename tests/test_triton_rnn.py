"""The Triton recurrences equal a float64 plain-loop reference (forward, final states, gradients).

They run only under ``--impl triton``, which is experimental: they have never run on a
GPU. Which code runs by default (cuDNN on CUDA) is tested in tests/test_fused.py.

There is no GPU here, so the kernels run in Triton's interpreter (TRITON_INTERPRET=1),
which executes them with numpy on CPU tensors. Triton decides between compiling and
interpreting when a kernel is *defined* (at import of triton_rnn), so the checks run
in a child process started with TRITON_INTERPRET=1 in its environment: whatever
other test modules import, and in whatever order, cannot change the mode here.
The child is this file run as a script; it prints one JSON line of errors. Both
schedules (persistent and per-step) are checked, with every output buffer
filled with NaN first so that an element the kernels never write fails.

What the interpreter does not check: tl.dot's tf32 modes (the interpreter
multiplies in float32 whatever the precision) and memory ordering between
threads (it runs one program as numpy operations on whole blocks, so a missing
barrier would go unnoticed). A second child compiles every kernel ahead of time
to H100 (sm_90a) machine code, which needs no GPU. benchmarks/gpu_check.py
repeats the numerical checks on CUDA.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from rnnlab.errors import RnnlabError
from rnnlab.models import layout

# The cells triton_rnn has kernels for (its KIND_IDS, checked in the child process, which
# alone imports it); other cells are refused by --impl triton's check.
KERNEL_CELLS = ("rnn", "gru", "lstm")

SHAPES = [(5, 3, 16), (4, 19, 96)]  # (T, B, H): one program, one tile; two programs, 3x6 tiles
TOLERANCE = 1e-4  # max |kernel - reference| / max |reference|, per tensor


def reference(cell, XW, W_h, b_hh, h0, c0):
    """The recurrence written plainly, step by step: outputs (T, B, H), hT, cT or None."""
    H = h0.shape[1]
    h, c, outputs = h0, c0, []
    for xw in XW:
        a = xw + h @ W_h + b_hh if cell != "gru" else None
        if cell == "rnn":
            h = torch.tanh(a)
        elif cell == "gru":
            hw = h @ W_h + b_hh
            r = torch.sigmoid(xw[:, :H] + hw[:, :H])
            z = torch.sigmoid(xw[:, H : 2 * H] + hw[:, H : 2 * H])
            n = torch.tanh(xw[:, 2 * H :] + r * hw[:, 2 * H :])
            h = z * h + (1 - z) * n
        else:
            i, f = torch.sigmoid(a[:, :H]), torch.sigmoid(a[:, H : 2 * H])
            g, o = torch.tanh(a[:, 2 * H : 3 * H]), torch.sigmoid(a[:, 3 * H :])
            c = f * c + i * g
            h = o * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs), h, c


def check(recurrence, cell, T, B, H, seed):
    """Largest normwise relative error of each result and gradient, kernel vs float64."""
    gen = torch.Generator().manual_seed(seed)
    G = layout.num_gates(cell)

    def rand(*shape, std=0.5):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * std

    # XW, biases, states of std 0.5 and W_h of std H^-1/2 (so h @ W_h is of the size of h):
    # pre-activations of order 1, where the nonlinearities curve but do not saturate.
    inputs = {
        "XW": rand(T, B, G * H),
        "W_h": rand(H, G * H, std=H**-0.5),
        "b_hh": rand(G * H),
        "h0": rand(B, H),
        "c0": rand(B, H) if cell == "lstm" else None,
    }
    # Random weights on every result so that every gradient path is exercised.
    weights = [rand(T, B, H, std=1.0), rand(B, H, std=1.0), rand(B, H, std=1.0)]

    def run(fn, dtype):
        leaves = {
            k: (v.to(dtype).clone().requires_grad_() if v is not None else None)
            for k, v in inputs.items()
        }
        results = fn(cell, *leaves.values())
        loss = sum((r.double() * w).sum() for r, w in zip(results, weights) if r is not None)
        loss.backward()
        grads = {"d" + k: v.grad for k, v in leaves.items() if v is not None}
        names = ["outputs", "hT", "cT"]
        return {**{n: r for n, r in zip(names, results) if r is not None}, **grads}

    want = run(reference, torch.float64)
    got = run(recurrence, torch.float32)
    assert set(got) == set(want), (sorted(got), sorted(want))
    return {
        name: ((got[name].double() - want[name]).abs().max() / want[name].abs().max()).item()
        for name in want
    }


def interpreter_main():
    """Child process: run every check under the interpreter, print errors as JSON."""
    assert os.environ.get("TRITON_INTERPRET") == "1"
    from rnnlab.experimental import triton_rnn

    assert tuple(triton_rnn.KIND_IDS) == KERNEL_CELLS

    def nan_buffer(*shape, like):  # an element the kernels forget to write stays NaN
        return torch.full(shape, float("nan"), dtype=like.dtype, device=like.device)

    triton_rnn.new_buffer = nan_buffer
    results = {}
    for schedule in triton_rnn.SCHEDULES:

        def recurrence(*args, schedule=schedule):
            return triton_rnn.recurrence(*args, schedule=schedule)

        for cell in KERNEL_CELLS:
            for seed, (T, B, H) in enumerate(SHAPES):
                key = f"{schedule}-{cell}-T{T}-B{B}-H{H}"
                results[key] = check(recurrence, cell, T, B, H, seed)
    print(json.dumps(results))


def compile_main():
    """Child process: compile every kernel to sm_90 (H100) machine code, no GPU needed."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from rnnlab.experimental import triton_rnn as tr

    kernels = {
        "forward": (tr._forward_kernel, ["XW", "W_h", "b_hh", "HS", "CS", "SAVE"]),
        "backward": (
            tr._backward_kernel,
            ["DOUT", "W_h", "HS", "CS", "SAVE", "DXW", "DHN", "DHZ", "DHBUF", "DCBUF"],
        ),
    }
    sizes = {}
    cases = [
        ("rnn", 512, "ieee", "persistent"),
        ("gru", 512, "ieee", "persistent"),
        ("lstm", 1024, "ieee", "persistent"),
        ("lstm", 1024, "tf32", "per_step"),
    ]
    for cell, H, precision, schedule in cases:
        per_step = schedule == "per_step"
        tile = tr._tile(H, tr.PER_STEP_TILES) if per_step else tr._tile(H)
        for name, (fn, pointers) in kernels.items():
            for phases in (1, 2) if per_step and name == "backward" else (3,):
                constants = {
                    "H": H,
                    "KIND": tr.KIND_IDS[cell],
                    "BB": tr.BLOCK_B,
                    "BH": tile,
                    "BK": tr.BLOCK_K,
                    "NJ": H // tile if per_step else 1,
                    "PRECISION": precision,
                }
                if name == "backward":
                    constants["PHASES"] = phases
                signature = {
                    **{p: "*fp32" for p in pointers},
                    "T0": "i32",
                    "T1": "i32",
                    "B": "i32",
                    **{c: "constexpr" for c in constants},
                }
                compiled = triton.compile(
                    ASTSource(fn, signature, constants),
                    target=GPUTarget("cuda", 90, 32),
                    options={"num_warps": tr.NUM_WARPS, "num_stages": 1},
                )
                key = f"{cell}-{H}-{precision}-{schedule}-{name}-{phases}"
                sizes[key] = len(compiled.asm["cubin"])
    print(json.dumps(sizes))


def run_child(mode):
    env = dict(
        os.environ,
        TRITON_INTERPRET="1" if mode == "interpret" else "0",
        TRITON_DEFAULT_FP_FUSION="1",
    )
    done = subprocess.run(
        [sys.executable, __file__, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def interpreter_errors():
    pytest.importorskip("triton")
    return run_child("interpret")


@pytest.mark.parametrize("T,B,H", SHAPES)
@pytest.mark.parametrize("cell", KERNEL_CELLS)
@pytest.mark.parametrize("schedule", ["persistent", "per_step"])
@pytest.mark.slow
def test_triton_recurrence_matches_float64_reference_in_interpreter(
    interpreter_errors, schedule, cell, T, B, H
):
    errors = interpreter_errors[f"{schedule}-{cell}-T{T}-B{B}-H{H}"]
    expected = {"outputs", "hT", "dXW", "dW_h", "db_hh", "dh0"} | (
        {"cT", "dc0"} if cell == "lstm" else set()
    )
    assert set(errors) == expected
    bad = {name: err for name, err in errors.items() if not err <= TOLERANCE}  # NaN is bad
    assert not bad, f"relative errors above {TOLERANCE}: {bad}"


@pytest.mark.slow
def test_triton_kernels_compile_to_h100_machine_code():
    """Ahead-of-time compilation for sm_90 (no GPU needed): catches what the interpreter
    accepts but the compiler does not (layouts, dot shapes, constexpr use)."""
    pytest.importorskip("triton")
    from triton.backends import backends

    if "nvidia" not in backends:
        pytest.skip("this Triton build has no NVIDIA backend to compile for")
    sizes = run_child("compile")
    assert len(sizes) == 9 and all(size > 0 for size in sizes.values()), sizes


def test_reference_matches_scratch_layers():
    """The test's reference is the scratch models' function (via the stacked layout)."""
    from rnnlab.models.cells import CELLS as REGISTRY

    torch.manual_seed(0)
    T, B, D, H = 4, 3, 5, 8
    for cell in KERNEL_CELLS:
        layer = REGISTRY[cell].new_layer(D, H).double()
        with torch.no_grad():
            for p in layer.parameters():
                p.normal_(0, 0.5)
        X = torch.randn(T, B, D, dtype=torch.float64)
        h0 = torch.randn(B, H, dtype=torch.float64)
        c0 = torch.randn(B, H, dtype=torch.float64)
        W_x, W_h, b = layout.stacked(layer, cell)
        XW = X @ W_x + b
        out, hT, cT = reference(cell, XW, W_h, layout.hidden_bias(layer, cell), h0, c0)
        want_out, want_last = layer(X, (h0, c0) if cell == "lstm" else h0)
        torch.testing.assert_close(out, want_out)
        if cell == "lstm":
            torch.testing.assert_close((hT, cT), want_last)
        else:
            torch.testing.assert_close(hT, want_last)


def test_unsupported_inputs_are_refused_with_a_message():
    pytest.importorskip("triton")
    from rnnlab.experimental import triton_rnn

    assert not triton_rnn.supported("lstm", 512, torch.float64)
    assert not triton_rnn.supported("lstm", 500, torch.float32)
    if not torch.cuda.is_available():
        assert not triton_rnn.supported("lstm", 512, torch.float32)
    XW, W_h, b, h0 = torch.zeros(2, 1, 16), torch.zeros(16, 16), torch.zeros(16), torch.zeros(1, 16)
    with pytest.raises(RnnlabError, match="precision"):
        triton_rnn.recurrence("rnn", XW, W_h, b, h0, precision="fp8")
    with pytest.raises(RnnlabError, match="float32"):
        triton_rnn.recurrence("rnn", XW.double(), W_h.double(), b.double(), h0.double())
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        with pytest.raises(RnnlabError, match="CUDA"):
            triton_rnn.recurrence("rnn", XW, W_h, b, h0)


if __name__ == "__main__":
    compile_main() if sys.argv[1:] == ["compile"] else interpreter_main()
