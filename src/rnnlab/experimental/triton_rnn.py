"""RNN, GRU and LSTM recurrences as Triton kernels for the GPU, forward and backward.

Shapes: T time steps, B batch size, H hidden units, G gates (1 RNN, 3 GRU, 4 LSTM).
Same contract as ``rnnlab.models.fused.cpu.recurrence``:

    recurrence(kind, XW (T, B, G*H), W_h (H, G*H), b_hh (G*H,), h0 (B, H), c0 (B, H) or None)
        -> outputs (T, B, H), hT (B, H), cT (B, H) or None

differentiable w.r.t. XW, W_h, b_hh, h0 and c0. XW is the input projection of
every step (input bias included), computed by the caller as one big matmul; b_hh
is the recurrent-side bias, zero but for the GRU candidate's. Gates are in cuDNN's
order (``rnnlab.models.cells``' entries), with the cells and papers of
``rnnlab.models.fused.cpu``:

    RNN   h = tanh(XW + h W_h + b_hh)
    GRU   r, z = sigmoid(XW_rz + h W_h,rz);  n = tanh(XW_n + r * (h W_hn + b_hn))
          h = z * h + (1 - z) * n
    LSTM  i, f, o = sigmoid(.), g = tanh(.) of XW + h W_h + b_hh
          c = f * c + i * g;  h = o * tanh(c)

Two schedules run the same kernel code (``SCHEDULES``; FusedLM uses
``DEFAULT_SCHEDULE``):

* "persistent": one launch for all T steps. Each program owns BLOCK_B = 16
  batch rows and all H hidden columns of them, so step t+1 needs only values
  the same program wrote, and a block barrier (``tl.debug_barrier``) between
  steps is all the synchronisation there is.
* "per_step": one launch per step (two in the backward pass) over a grid of
  batch blocks x column tiles; the launch boundary is the barrier between
  steps. Meant to run inside a CUDA graph (``rnnlab.experimental.cuda_graph``).

Forward, per step and per tile of BH hidden columns: h_{t-1} (BB, H) @ W_h
(H, BH) for each gate with ``tl.dot``, the gate nonlinearities, then h_t (the
LSTM's c_t, and the gate activations the backward pass needs) written out.
h lives in HS (T+1, B, H) with HS[0] = h0, so the outputs are HS[1:] without a
copy. Backward, t = T-1 .. 0, two phases per step: (1) the gate gradients of
step t, written to dXW[t]; (2) dh_{t-1} = dGates_t @ W_h^T. dW_h = H_prev^T @
dGates and db_hh are then one torch matmul and one sum over all steps.

Precision: float32 tensors and float32 accumulation. ``precision`` is tl.dot's
input precision: "ieee" (the default, float32 FMA on the CUDA cores), "tf32"
(tensor cores, operands cut to 10 mantissa bits: about 1e-3 relative error)
or "tf32x3" (each operand split in two tf32 parts: close to float32's error).

Memory (elements, one layer, besides XW, weights and their gradients):
forward keeps (T+1)BH for h, and for the LSTM (T+1)BH for c, and 4TBH gate
activations (GRU: r, z, n, h W_hn + b_hn); backward adds G*T*B*H for dXW
(GRU: +TBH) and O(BH) of running state.

tests/test_triton_rnn.py checks both schedules in Triton's interpreter;
benchmarks/gpu_check.py checks and times them on CUDA.

Design notes, estimates and what is still to measure: docs/gpu.md
"""

from __future__ import annotations

import os

import torch

from ..errors import RnnlabError
from ..models.layout import num_gates

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU path does not need Triton
    triton = None

KIND_IDS = {"rnn": 0, "gru": 1, "lstm": 2}
PRECISIONS = ("ieee", "tf32", "tf32x3")
MAX_HIDDEN = 1024  # larger H is still correct, but then far from fast (docs/gpu.md)
BLOCK_B = 16  # batch rows per program; tl.dot needs at least 16 rows on the GPU
BLOCK_K = 16  # reduction slice of tl.dot; wider slices spill registers in float32
NUM_WARPS = 8  # with BLOCK_B, BLOCK_K and 64-column tiles: no register spills on sm_90
PER_STEP_TILES = (32, 16)  # narrower column tiles for the per-step schedule: more programs
SCHEDULES = ("persistent", "per_step")
DEFAULT_SCHEDULE = "persistent"


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def supported(kind: str, H: int, dtype: torch.dtype) -> bool:
    """True where these kernels are valid: Triton and CUDA, float32, H % 16 == 0, H <= 1024."""
    return (
        triton is not None
        and torch.cuda.is_available()
        and kind in KIND_IDS
        and dtype == torch.float32
        and H % 16 == 0
        and 16 <= H <= MAX_HIDDEN
    )


def _tile(H: int, sizes=(64, 32, 16)) -> int:
    """The widest column tile of ``sizes`` that divides H."""
    return next(size for size in sizes if H % size == 0)


def new_buffer(*shape, like: torch.Tensor) -> torch.Tensor:
    """An uninitialised buffer for the kernels to fill (every element is written by them)."""
    return torch.empty(shape, dtype=like.dtype, device=like.device)


if triton is not None:

    @triton.jit
    def _tanh(x):
        # libdevice's tanh does not run in the interpreter; this one is accurate to
        # a few float32 ulps: an odd Taylor polynomial near 0 (where 1 - e would
        # cancel), (1 - e) / (1 + e) with e = exp(-2|x|) elsewhere.
        a = tl.abs(x)
        e = tl.exp(-2.0 * a)
        big = (1.0 - e) / (1.0 + e)
        x2 = x * x
        small = a * (
            1.0
            + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0))))
        )
        t = tl.where(a < 0.125, small, big)
        return tl.where(x < 0, -t, t)

    @triton.jit
    def _sigmoid(x):
        return 1.0 / (1.0 + tl.exp(-x))

    @triton.jit(do_not_specialize=["T0", "T1"])
    def _forward_kernel(
        XW,
        W_h,
        b_hh,
        HS,
        CS,
        SAVE,
        T0,
        T1,
        B,
        H: tl.constexpr,
        KIND: tl.constexpr,
        BB: tl.constexpr,
        BH: tl.constexpr,
        BK: tl.constexpr,
        NJ: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """Steps T0 .. T1-1 for batch rows [BB*program_id(0), +BB).

        Program (i, j) computes the column tiles j, j + NJ, j + 2 NJ, ... of H:
        with NJ = 1 all of them (the persistent schedule, steps T0 = 0 .. T1 = T
        in one launch); with NJ = H / BH one tile (the per-step schedule, one
        launch per step). XW (T, B, G*H), W_h (H, G*H), b_hh (G*H,),
        HS (T+1, B, H) with HS[0] = h0, CS (T+1, B, H) with CS[0] = c0 (LSTM),
        SAVE (T, B, 4*H) gate activations (GRU: r, z, n, h W_hn + b_hn;
        LSTM: i, f, g, o). All contiguous.
        """
        G: tl.constexpr = 1 if KIND == 0 else (3 if KIND == 1 else 4)
        GH: tl.constexpr = G * H
        rows = tl.program_id(0) * BB + tl.arange(0, BB)
        row_ok = rows[:, None] < B  # (BB, 1)
        for t in range(T0, T1):
            h_prev = HS + t * B * H
            for j0 in range(tl.program_id(1) * BH, H, NJ * BH):
                cols = j0 + tl.arange(0, BH)
                acc0 = tl.zeros((BB, BH), dtype=tl.float32)
                acc1 = tl.zeros((BB, BH), dtype=tl.float32)
                acc2 = tl.zeros((BB, BH), dtype=tl.float32)
                acc3 = tl.zeros((BB, BH), dtype=tl.float32)
                for k0 in range(0, H, BK):
                    ks = k0 + tl.arange(0, BK)
                    hk = tl.load(h_prev + rows[:, None] * H + ks[None, :], mask=row_ok, other=0.0)
                    w = W_h + ks[:, None] * GH + cols[None, :]  # (BK, BH) of gate 0
                    acc0 = tl.dot(hk, tl.load(w), acc0, input_precision=PRECISION)
                    if G >= 3:
                        acc1 = tl.dot(hk, tl.load(w + H), acc1, input_precision=PRECISION)
                        acc2 = tl.dot(hk, tl.load(w + 2 * H), acc2, input_precision=PRECISION)
                    if G == 4:
                        acc3 = tl.dot(hk, tl.load(w + 3 * H), acc3, input_precision=PRECISION)
                xw = XW + t * B * GH + rows[:, None] * GH + cols[None, :]
                out = rows[:, None] * H + cols[None, :]  # (BB, BH) offsets in a (B, H)
                save = SAVE + t * B * 4 * H + rows[:, None] * 4 * H + cols[None, :]
                if KIND == 0:
                    pre = tl.load(xw, mask=row_ok, other=0.0) + acc0 + tl.load(b_hh + cols)[None, :]
                    h = _tanh(pre)
                elif KIND == 1:
                    r = _sigmoid(
                        tl.load(xw, mask=row_ok, other=0.0) + acc0 + tl.load(b_hh + cols)[None, :]
                    )
                    z = _sigmoid(
                        tl.load(xw + H, mask=row_ok, other=0.0)
                        + acc1
                        + tl.load(b_hh + H + cols)[None, :]
                    )
                    hn = acc2 + tl.load(b_hh + 2 * H + cols)[None, :]
                    n = _tanh(tl.load(xw + 2 * H, mask=row_ok, other=0.0) + r * hn)
                    hp = tl.load(h_prev + out, mask=row_ok, other=0.0)
                    h = z * hp + (1.0 - z) * n
                    tl.store(save, r, mask=row_ok)
                    tl.store(save + H, z, mask=row_ok)
                    tl.store(save + 2 * H, n, mask=row_ok)
                    tl.store(save + 3 * H, hn, mask=row_ok)
                else:
                    i = _sigmoid(
                        tl.load(xw, mask=row_ok, other=0.0) + acc0 + tl.load(b_hh + cols)[None, :]
                    )
                    f = _sigmoid(
                        tl.load(xw + H, mask=row_ok, other=0.0)
                        + acc1
                        + tl.load(b_hh + H + cols)[None, :]
                    )
                    g = _tanh(
                        tl.load(xw + 2 * H, mask=row_ok, other=0.0)
                        + acc2
                        + tl.load(b_hh + 2 * H + cols)[None, :]
                    )
                    o = _sigmoid(
                        tl.load(xw + 3 * H, mask=row_ok, other=0.0)
                        + acc3
                        + tl.load(b_hh + 3 * H + cols)[None, :]
                    )
                    c = f * tl.load(CS + t * B * H + out, mask=row_ok, other=0.0) + i * g
                    h = o * _tanh(c)
                    tl.store(CS + (t + 1) * B * H + out, c, mask=row_ok)
                    tl.store(save, i, mask=row_ok)
                    tl.store(save + H, f, mask=row_ok)
                    tl.store(save + 2 * H, g, mask=row_ok)
                    tl.store(save + 3 * H, o, mask=row_ok)
                tl.store(HS + (t + 1) * B * H + out, h, mask=row_ok)
            # h_t of all columns must be written before any thread reads it at t+1.
            tl.debug_barrier()

    @triton.jit
    def _gate_gradients(
        DOUT,
        HS,
        CS,
        SAVE,
        DXW,
        DHN,
        DHZ,
        DHBUF,
        DCBUF,
        t,
        B,
        rows,
        row_ok,
        j0,
        H: tl.constexpr,
        KIND: tl.constexpr,
        BH: tl.constexpr,
    ):
        """Backward phase 1 for one column tile: the gate gradients of step t."""
        G: tl.constexpr = 1 if KIND == 0 else (3 if KIND == 1 else 4)
        GH: tl.constexpr = G * H
        cur = (t % 2) * B * H
        nxt = ((t + 1) % 2) * B * H
        cols = j0 + tl.arange(0, BH)
        out = rows[:, None] * H + cols[None, :]
        dh = tl.load(DOUT + t * B * H + out, mask=row_ok, other=0.0) + tl.load(
            DHBUF + cur + out, mask=row_ok, other=0.0
        )
        dxw = DXW + t * B * GH + rows[:, None] * GH + cols[None, :]
        save = SAVE + t * B * 4 * H + rows[:, None] * 4 * H + cols[None, :]
        if KIND == 0:
            h = tl.load(HS + (t + 1) * B * H + out, mask=row_ok, other=0.0)
            tl.store(dxw, dh * (1.0 - h * h), mask=row_ok)
        elif KIND == 1:
            r = tl.load(save, mask=row_ok, other=0.0)
            z = tl.load(save + H, mask=row_ok, other=0.0)
            n = tl.load(save + 2 * H, mask=row_ok, other=0.0)
            hn = tl.load(save + 3 * H, mask=row_ok, other=0.0)
            hp = tl.load(HS + t * B * H + out, mask=row_ok, other=0.0)
            dn = dh * (1.0 - z) * (1.0 - n * n)
            tl.store(dxw, dn * hn * r * (1.0 - r), mask=row_ok)
            tl.store(dxw + H, dh * (hp - n) * z * (1.0 - z), mask=row_ok)
            tl.store(dxw + 2 * H, dn, mask=row_ok)
            tl.store(DHN + t * B * H + out, dn * r, mask=row_ok)
            tl.store(DHZ + out, dh * z, mask=row_ok)
        else:
            i = tl.load(save, mask=row_ok, other=0.0)
            f = tl.load(save + H, mask=row_ok, other=0.0)
            g = tl.load(save + 2 * H, mask=row_ok, other=0.0)
            o = tl.load(save + 3 * H, mask=row_ok, other=0.0)
            c = tl.load(CS + (t + 1) * B * H + out, mask=row_ok, other=0.0)
            c_prev = tl.load(CS + t * B * H + out, mask=row_ok, other=0.0)
            tc = _tanh(c)
            dc = tl.load(DCBUF + cur + out, mask=row_ok, other=0.0) + dh * o * (1.0 - tc * tc)
            tl.store(dxw, dc * g * i * (1.0 - i), mask=row_ok)
            tl.store(dxw + H, dc * c_prev * f * (1.0 - f), mask=row_ok)
            tl.store(dxw + 2 * H, dc * i * (1.0 - g * g), mask=row_ok)
            tl.store(dxw + 3 * H, dh * tc * o * (1.0 - o), mask=row_ok)
            tl.store(DCBUF + nxt + out, dc * f, mask=row_ok)

    @triton.jit
    def _hidden_gradient(
        W_h,
        DXW,
        DHN,
        DHZ,
        DHBUF,
        t,
        B,
        rows,
        row_ok,
        j0,
        H: tl.constexpr,
        KIND: tl.constexpr,
        BB: tl.constexpr,
        BH: tl.constexpr,
        BK: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """Backward phase 2 for one column tile: dh_{t-1} = dGates_t (BB, G*H) @ W_h^T (G*H, H)."""
        G: tl.constexpr = 1 if KIND == 0 else (3 if KIND == 1 else 4)
        GH: tl.constexpr = G * H
        nxt = ((t + 1) % 2) * B * H
        cols = j0 + tl.arange(0, BH)
        out = rows[:, None] * H + cols[None, :]
        acc = tl.zeros((BB, BH), dtype=tl.float32)
        for gate in tl.static_range(G):
            for k0 in range(0, H, BK):
                ks = k0 + tl.arange(0, BK)
                if KIND == 1 and gate == 2:  # the candidate's recurrent gradient is r * dn
                    dg = tl.load(
                        DHN + t * B * H + rows[:, None] * H + ks[None, :], mask=row_ok, other=0.0
                    )
                else:
                    dg = tl.load(
                        DXW + t * B * GH + rows[:, None] * GH + gate * H + ks[None, :],
                        mask=row_ok,
                        other=0.0,
                    )
                # W_h^T tile (BK, BH): element [k, j] is W_h[j, gate*H + k].
                w_t = tl.load(W_h + cols[None, :] * GH + gate * H + ks[:, None])
                acc = tl.dot(dg, w_t, acc, input_precision=PRECISION)
        if KIND == 1:
            acc += tl.load(DHZ + out, mask=row_ok, other=0.0)
        tl.store(DHBUF + nxt + out, acc, mask=row_ok)

    @triton.jit(do_not_specialize=["T0", "T1"])
    def _backward_kernel(
        DOUT,
        W_h,
        HS,
        CS,
        SAVE,
        DXW,
        DHN,
        DHZ,
        DHBUF,
        DCBUF,
        T0,
        T1,
        B,
        H: tl.constexpr,
        KIND: tl.constexpr,
        BB: tl.constexpr,
        BH: tl.constexpr,
        BK: tl.constexpr,
        NJ: tl.constexpr,
        PHASES: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """Backpropagation through steps T1-1 down to T0 for batch rows [BB*program_id(0), +BB).

        Each step has two phases: (1) gate gradients from dh = dout_t + dh_rec,
        (2) dh_{t-1} = dGates_t @ W_h^T, which needs the gate gradients of all
        column tiles. PHASES 3 runs both, with block barriers (persistent
        schedule, NJ = 1); 1 or 2 runs one of them for one step (per-step
        schedule: the launch boundary is the barrier). Column tiles are shared
        out as in _forward_kernel.

        DOUT (T, B, H) gradient of the outputs. DHBUF, DCBUF (2, B, H) ping-pong
        buffers of the gradient reaching h_t (c_t) from step t+1: step t reads
        slot t % 2 and writes slot (t + 1) % 2, so after t = 0 slot 1 holds
        dh0 (dc0); the caller puts dhT (dcT) in slot (T - 1) % 2. Writes
        DXW (T, B, G*H) (the gate pre-activation gradients, = dXW), for the GRU
        DHN (T, B, H) (gradient of h W_hn + b_hn) and DHZ (B, H) (dh * z).
        """
        rows = tl.program_id(0) * BB + tl.arange(0, BB)
        row_ok = rows[:, None] < B
        for s in range(T0, T1):
            t = T1 - 1 - (s - T0)
            if PHASES != 2:
                for j0 in range(tl.program_id(1) * BH, H, NJ * BH):
                    _gate_gradients(
                        DOUT,
                        HS,
                        CS,
                        SAVE,
                        DXW,
                        DHN,
                        DHZ,
                        DHBUF,
                        DCBUF,
                        t,
                        B,
                        rows,
                        row_ok,
                        j0,
                        H,
                        KIND,
                        BH,
                    )
                tl.debug_barrier()  # phase 2 reads the gate gradients of every tile
            if PHASES != 1:
                for j0 in range(tl.program_id(1) * BH, H, NJ * BH):
                    _hidden_gradient(
                        W_h,
                        DXW,
                        DHN,
                        DHZ,
                        DHBUF,
                        t,
                        B,
                        rows,
                        row_ok,
                        j0,
                        H,
                        KIND,
                        BB,
                        BH,
                        BK,
                        PRECISION,
                    )
                tl.debug_barrier()  # step t-1 reads dh_{t-1} (and DHZ is rewritten)


def _check(kind: str, XW, W_h, b_hh, h0, c0, precision: str, schedule: str) -> None:
    if triton is None:
        raise RnnlabError(
            "the Triton recurrence needs the triton package; install it or use "
            "the CPU recurrence (rnnlab.models.fused.cpu)"
        )
    if kind not in KIND_IDS:
        raise RnnlabError(f"unknown recurrence {kind!r}; choose one of {', '.join(KIND_IDS)}")
    if precision not in PRECISIONS:
        raise RnnlabError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if schedule not in SCHEDULES:
        raise RnnlabError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    H = h0.shape[1]
    G = num_gates(kind)
    tensors = [XW, W_h, b_hh, h0] + ([c0] if kind == "lstm" else [])
    if not all(x.dtype == torch.float32 for x in tensors):
        raise RnnlabError(
            "the Triton recurrence computes in float32; convert the model with "
            ".float() or use the CPU recurrence"
        )
    if not _interpreting() and not all(x.is_cuda for x in tensors):
        raise RnnlabError(
            "the Triton recurrence needs CUDA tensors; move the model to the GPU "
            "or use the CPU recurrence"
        )
    if H % 16:
        raise RnnlabError(f"the Triton recurrence needs a hidden size divisible by 16, got {H}")
    if XW.dim() != 3 or XW.shape[2] != G * H or W_h.shape != (H, G * H) or b_hh.shape != (G * H,):
        raise RnnlabError(
            f"{kind} recurrence with H={H}: expected XW (T, B, {G * H}), "
            f"W_h ({H}, {G * H}), b_hh ({G * H},); got {tuple(XW.shape)}, "
            f"{tuple(W_h.shape)}, {tuple(b_hh.shape)}"
        )
    if kind == "lstm" and c0 is None:
        raise RnnlabError("the LSTM recurrence needs a cell state c0 (B, H)")
    T, B = XW.shape[0], XW.shape[1]
    if (T + 1) * B * 4 * H >= 2**31:  # the kernels index their buffers with 32-bit offsets
        raise RnnlabError(
            f"T={T}, B={B}, H={H} is too large for the Triton recurrence; use "
            f"shorter sequences or smaller batches"
        )


class _Recurrence(torch.autograd.Function):
    """One autograd node for the whole sequence; see the module docstring."""

    @staticmethod
    def forward(ctx, kind, precision, schedule, XW, W_h, b_hh, h0, c0):
        T, B, _ = XW.shape
        H = h0.shape[1]
        XW, W_h, b_hh = XW.contiguous(), W_h.contiguous(), b_hh.contiguous()
        HS = new_buffer(T + 1, B, H, like=XW)
        HS[0].copy_(h0)
        CS = new_buffer(T + 1, B, H, like=XW) if kind == "lstm" else HS  # HS: unused placeholder
        if kind == "lstm":
            CS[0].copy_(c0)
        SAVE = new_buffer(T, B, 4 * H, like=XW) if kind != "rnn" else HS  # HS: unused placeholder
        args = {
            "H": H,
            "KIND": KIND_IDS[kind],
            "BB": BLOCK_B,
            "BK": BLOCK_K,
            "PRECISION": precision,
            "num_warps": NUM_WARPS,
            "num_stages": 1,
        }
        if schedule == "persistent":
            _forward_kernel[(triton.cdiv(B, BLOCK_B), 1)](
                XW, W_h, b_hh, HS, CS, SAVE, 0, T, B, BH=_tile(H), NJ=1, **args
            )
        else:
            tile = _tile(H, PER_STEP_TILES)
            for t in range(T):
                _forward_kernel[(triton.cdiv(B, BLOCK_B), H // tile)](
                    XW, W_h, b_hh, HS, CS, SAVE, t, t + 1, B, BH=tile, NJ=H // tile, **args
                )
        ctx.kind, ctx.precision, ctx.schedule = kind, precision, schedule
        ctx.save_for_backward(W_h, HS, CS, SAVE)
        if kind == "lstm":
            return HS[1:], HS[T].clone(), CS[T].clone()
        return HS[1:], HS[T].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout, dhT, dcT=None):
        kind = ctx.kind
        precision = ctx.precision
        W_h, HS, CS, SAVE = ctx.saved_tensors
        T, B, H = dout.shape
        G = num_gates(kind)
        dout = dout.contiguous()
        DXW = new_buffer(T, B, G * H, like=dout)
        DHN = new_buffer(T, B, H, like=dout) if kind == "gru" else DXW  # DXW: unused placeholder
        DHZ = new_buffer(B, H, like=dout) if kind == "gru" else DXW
        DHBUF = new_buffer(2, B, H, like=dout)
        DHBUF[(T - 1) % 2].copy_(dhT)
        DCBUF = DHBUF
        if kind == "lstm":
            DCBUF = new_buffer(2, B, H, like=dout)
            DCBUF[(T - 1) % 2].copy_(dcT)
        buffers = (dout, W_h, HS, CS, SAVE, DXW, DHN, DHZ, DHBUF, DCBUF)
        args = {
            "H": H,
            "KIND": KIND_IDS[kind],
            "BB": BLOCK_B,
            "BK": BLOCK_K,
            "PRECISION": precision,
            "num_warps": NUM_WARPS,
            "num_stages": 1,
        }
        if ctx.schedule == "persistent":
            _backward_kernel[(triton.cdiv(B, BLOCK_B), 1)](
                *buffers, 0, T, B, BH=_tile(H), NJ=1, PHASES=3, **args
            )
        else:
            tile = _tile(H, PER_STEP_TILES)
            grid = (triton.cdiv(B, BLOCK_B), H // tile)
            for t in reversed(range(T)):
                for phase in (1, 2):
                    _backward_kernel[grid](
                        *buffers, t, t + 1, B, BH=tile, NJ=H // tile, PHASES=phase, **args
                    )
        # The recurrent-side gate gradients equal dXW except the GRU candidate's (r * dn).
        H_prev = HS[:T].reshape(T * B, H)
        if kind == "gru":
            dG = DXW.reshape(T * B, G * H)
            dW_h = torch.cat([H_prev.T @ dG[:, : 2 * H], H_prev.T @ DHN.reshape(T * B, H)], dim=1)
            db_hh = torch.cat([dG[:, : 2 * H].sum(0), DHN.reshape(T * B, H).sum(0)])
        else:
            dG = DXW.reshape(T * B, G * H)
            dW_h = H_prev.T @ dG
            db_hh = dG.sum(0)
        dc0 = DCBUF[1].clone() if kind == "lstm" else None
        return None, None, None, DXW, dW_h, db_hh, DHBUF[1].clone(), dc0


def recurrence(
    kind: str,
    XW: torch.Tensor,
    W_h: torch.Tensor,
    b_hh: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor | None = None,
    *,
    precision: str = "ieee",
    schedule: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run a whole sequence: XW (T, B, G*H), h0 (B, H) -> outputs (T, B, H), hT, cT or None.

    ``precision`` is tl.dot's input precision: "ieee" (float32, the default),
    "tf32" (tensor cores, about 1e-3 relative error) or "tf32x3".
    ``schedule`` is "persistent" (one launch for all steps) or "per_step" (one
    launch per step, for use inside a CUDA graph); None means DEFAULT_SCHEDULE.
    """
    schedule = schedule or DEFAULT_SCHEDULE
    _check(kind, XW, W_h, b_hh, h0, c0, precision, schedule)
    if kind == "lstm":
        return _Recurrence.apply(kind, precision, schedule, XW, W_h, b_hh, h0, c0)
    outputs, hT = _Recurrence.apply(kind, precision, schedule, XW, W_h, b_hh, h0, None)
    return outputs, hT, None
