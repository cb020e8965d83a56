"""How far the Triton recurrences' "tf32" precision moves results, emulated on the CPU.

    python3 benchmarks/tf32_error.py

Triton's interpreter multiplies in float32 whatever tl.dot's precision, so the
tf32 error cannot be seen there. This script emulates it in torch: the two
products the kernels do with tl.dot (h_{t-1} @ W_h forward, dGates_t @ W_h^T
backward) get their operands cut to tf32's 10 mantissa bits (rounded to
nearest, or truncated, the worse case), accumulate in float32, and everything
else stays float32 (dW_h is a torch matmul after the kernel). Printed: the
largest normwise relative error max|a - b| / max|b| of outputs and gradients
against float64, next to plain float32's.
"""

from __future__ import annotations

import torch

from rnnlab.models import layout
from rnnlab.models.cells import CELLS as CELL_REGISTRY

# The helpers defined inside loops below read that iteration's variables and are called
# before the next iteration starts, so the late binding B023 warns about cannot bite.
# ruff: noqa: B023


def to_tf32(x: torch.Tensor, mode: str) -> torch.Tensor:
    bits = x.float().contiguous().view(torch.int32)
    if mode == "round":  # to nearest, ties to even, at bit 13
        bits = bits + 0x0FFF + ((bits >> 13) & 1)
    return (bits & ~0x1FFF).view(torch.float32)


class Tf32MatMul(torch.autograd.Function):
    """a @ b with tf32 operands; the gradient w.r.t. a also with tf32 operands (the kernel's
    dh_{t-1} = dGates @ W_h^T), the one w.r.t. b in float32 (dW_h, one torch matmul)."""

    @staticmethod
    def forward(ctx, a, b, mode):
        ctx.save_for_backward(a, b)
        ctx.mode = mode
        return to_tf32(a, mode) @ to_tf32(b, mode)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return to_tf32(grad, ctx.mode) @ to_tf32(b, ctx.mode).T, a.T @ grad, None


def run(kind, layer, X, h0, c0, matmul):
    """The recurrence of a scratch layer with h @ W_h done by ``matmul``."""
    H = h0.shape[1]
    W_x, W_h, b = layout.stacked(layer, kind)
    b_hh = layout.hidden_bias(layer, kind)
    h, c, outputs = h0, c0, []
    for xw in X @ W_x + b:
        hw = matmul(h, W_h) + b_hh
        if kind == "rnn":
            h = torch.tanh(xw + hw)
        elif kind == "gru":
            r = torch.sigmoid(xw[:, :H] + hw[:, :H])
            z = torch.sigmoid(xw[:, H : 2 * H] + hw[:, H : 2 * H])
            h = z * h + (1 - z) * torch.tanh(xw[:, 2 * H :] + r * hw[:, 2 * H :])
        else:
            a = xw + hw
            i, f = torch.sigmoid(a[:, :H]), torch.sigmoid(a[:, H : 2 * H])
            c = f * c + i * torch.tanh(a[:, 2 * H : 3 * H])
            h = torch.sigmoid(a[:, 3 * H :]) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs)


def main():
    for kind, T, B, H in [
        ("rnn", 35, 32, 512),
        ("gru", 35, 32, 512),
        ("lstm", 35, 32, 512),
        ("lstm", 100, 16, 1024),
    ]:
        torch.manual_seed(0)
        layer64 = CELL_REGISTRY[kind].new_layer(28, H).double()
        with torch.no_grad():
            for p in layer64.parameters():
                p.normal_(0, 1.0 / p.shape[0] ** 0.5 if p.dim() == 2 else 0.5)
        X = torch.randn(T, B, 28, dtype=torch.float64)
        h0 = torch.randn(B, H, dtype=torch.float64) * 0.5
        c0 = torch.randn(B, H, dtype=torch.float64) * 0.5
        w = torch.randn(T, B, H, dtype=torch.float64)

        def results(layer, dtype, matmul):
            layer.zero_grad()
            out = run(kind, layer, X.to(dtype), h0.to(dtype), c0.to(dtype), matmul)
            (out.double() * w).sum().backward()
            return [out.detach()] + [p.grad for p in layer.parameters()]

        want = results(layer64, torch.float64, torch.matmul)
        layer32 = CELL_REGISTRY[kind].new_layer(28, H)
        layer32.load_state_dict({k: v.float() for k, v in layer64.state_dict().items()})
        line = f"{kind:4s} T={T:3d} B={B:2d} H={H:4d}"
        for name, mm in [
            ("float32", torch.matmul),
            ("tf32 round", lambda a, b: Tf32MatMul.apply(a, b, "round")),
            ("tf32 truncate", lambda a, b: Tf32MatMul.apply(a, b, "truncate")),
        ]:
            got = results(layer32, torch.float32, mm)
            err = max(
                ((g.double() - v).abs().max() / v.abs().max()).item() for g, v in zip(got, want)
            )
            line += f"  {name} {err:.1e}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
