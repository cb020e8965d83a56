"""Whole-sequence RNN, GRU and LSTM recurrences with a hand-written backward pass (BPTT).

Each layer's sequence is one autograd node: the forward pass runs all T steps
into buffers allocated once, and the backward pass is backpropagation through
time (Werbos 1990) written out by hand, ending with dW_h = H_prev^T dGates as
one product over all steps. It computes the scratch layers' function
(``rnnlab.models.scratch``); tests/test_fused.py checks it against them and
with ``torch.autograd.gradcheck`` in float64.

Shapes: T time steps, B batch size, H hidden units, G gates (1 RNN, 3 GRU, 4 LSTM).

    recurrence(kind, XW (T, B, G*H), W_h (H, G*H), b_hh (G*H,), h0 (B, H), c0 (B, H) or None)
        -> outputs (T, B, H), hT (B, H), cT (B, H) or None

XW is the input projection of every step, input bias included; b_hh is the bias
on the recurrent side (zero except the GRU candidate's, see ``layout.hidden_bias``).
Gates are in cuDNN's order (GRU r, z, n; LSTM i, f, g, o), and the GRU is
cuDNN's variant, with the reset gate applied to h W_hn + b_hn:

    RNN   h = f(XW + h W_h + b_hh), f the cell's nonlinearity (tanh)
    GRU   r, z = sigmoid(XW_rz + h W_h,rz + b_rz);  n = tanh(XW_n + r * (h W_hn + b_hn))
          h = z * h + (1 - z) * n
    LSTM  i, f, o = sigmoid(.), g = tanh(.) of XW + h W_h + b_hh
          c = f * c + i * g;  h = o * tanh(c)

(RNN: Elman 1990; GRU: Cho et al. 2014; LSTM: Hochreiter & Schmidhuber 1997,
with the forget gate of Gers et al. 2000.)

Memory, in elements, for one layer (besides XW, the weights and their gradients;
the forward buffers live until backward, the backward ones only during it):

    RNN   forward 1*TBH (outputs, also the tanh activations)
          backward 3*TBH (local derivative, gate gradients = dXW, dh per step)
    GRU   forward 5*TBH (outputs; r, z, h W_hn + b_hn; n)
          backward 12*TBH (h_prev 1, local derivatives 4, dGates_h 3, dh 1, dXW 3)
    LSTM  forward 7*TBH (gate activations 4; c, tanh(c), h 3)
          backward 10*TBH (local derivatives 5, dGates = dXW 4, dh 1)

plus O(BH) for the running state and one or two TBH-sized temporaries while the
local derivatives are computed.

A whole training step of a FusedLM on these recurrences (L layers, V tokens, P
parameters, float32) therefore needs, on top of the weights, about

    bytes = 4 * (P  +  T*B * (L*F*H + 2*V)  +  T*B * (K*H + 2*H + V))

F, K = 1, 3 (RNN), 5, 12 (GRU), 7, 10 (LSTM): the gradients (P); what every layer
keeps for the backward pass, with the logits and their log-softmax (2V); and the
largest backward-pass moment, one layer's buffers above with the outputs' gradient
and its running copy (2H) and the logits' gradient (V). (XW, G*H per row, lives
only during its layer's forward pass and is smaller than its backward buffers.)
A worked example and its measurement are in docs/fused-cpu.md.
The LSTM with V <= H runs in torch's kernel instead (``rnnlab.models.fused``), whose
workspace is oneDNN's.

Works on any device and floating dtype. It is not twice differentiable.

Design notes and measurements: docs/fused-cpu.md
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..cells import CELLS, Activation


def _dW_h(h0: Tensor, outputs: Tensor, dgates: Tensor) -> Tensor:
    """H_prev^T @ dGates over all steps, (H, T*B) @ (T*B, G*H); H_prev = [h0, h_0 .. h_{T-2}]."""
    H, GH = h0.shape[1], dgates.shape[2]
    dW = h0.t() @ dgates[0]
    if outputs.shape[0] > 1:
        dW.addmm_(outputs[:-1].reshape(-1, H).t(), dgates[1:].reshape(-1, GH))
    return dW


def _previous(first: Tensor, seq: Tensor) -> Tensor:
    """(T, B, H) sequence of the values before each step: [first, seq_0 .. seq_{T-2}]."""
    return torch.cat([first.unsqueeze(0), seq[:-1]])


def _sigmoid_grad(s: Tensor) -> Tensor:
    """sigmoid'(x) from s = sigmoid(x): s (1 - s) = s - s^2."""
    return torch.addcmul(s, s, s, value=-1)


def _tanh_grad(t: Tensor) -> Tensor:
    """tanh'(x) from t = tanh(x): 1 - t^2."""
    return torch.addcmul(t.new_ones(()), t, t, value=-1)  # the 1 broadcasts: no ones buffer


# The step-by-step loops, one function each: they write into preallocated
# (T, B, ...) buffers in place and allocate nothing per step.


def _rnn_forward_loop(outputs: Tensor, h: Tensor, W_h: Tensor, f_: Callable) -> None:
    for out in outputs.unbind(0):
        f_(out.addmm_(h, W_h))  # f in place: the cell's nonlinearity
        h = out


def _rnn_backward_loop(dh: Tensor, local: Tensor, dgates: Tensor, W_hT: Tensor) -> None:
    dh_, local_, dgates_ = (x.unbind(0) for x in (dh, local, dgates))
    for t in range(len(dh_) - 1, 0, -1):
        torch.mul(dh_[t], local_[t], out=dgates_[t])
        dh_[t - 1].addmm_(dgates_[t], W_hT)
    torch.mul(dh_[0], local_[0], out=dgates_[0])


def _gru_forward_loop(
    hw: Tensor, XW: Tensor, n: Tensor, outputs: Tensor, h: Tensor, W_h: Tensor
) -> None:
    H = n.shape[-1]
    steps = zip(
        hw.unbind(0),
        hw[..., : 2 * H].unbind(0),
        hw[..., :H].unbind(0),
        hw[..., H : 2 * H].unbind(0),
        hw[..., 2 * H :].unbind(0),
        XW[..., 2 * H :].unbind(0),
        n.unbind(0),
        outputs.unbind(0),
    )
    for hw_t, rz_t, r_t, z_t, hn_t, xn_t, n_t, out_t in steps:
        hw_t.addmm_(h, W_h)
        rz_t.sigmoid_()
        torch.addcmul(xn_t, r_t, hn_t, out=n_t).tanh_()
        torch.lerp(n_t, h, z_t, out=out_t)  # n + z (h - n) = z h + (1 - z) n
        h = out_t


def _gru_backward_loop(
    dh: Tensor, z: Tensor, local: Tensor, dgates_h: Tensor, W_hT: Tensor
) -> None:
    dh_, z_, local_, dgates_h_ = (x.unbind(0) for x in (dh, z, local, dgates_h))
    dh1_ = dh.unsqueeze(2).unbind(0)  # (b, 1, H): broadcast over the three gates
    dgates_h3_ = [g.view(g.shape[0], 3, -1) for g in dgates_h_]
    for t in range(len(dh_) - 1, 0, -1):
        torch.mul(local_[t], dh1_[t], out=dgates_h3_[t])
        dh_[t - 1].addmm_(dgates_h_[t], W_hT)
        dh_[t - 1].addcmul_(dh_[t], z_[t])  # h_t depends on h_{t-1} directly too
    torch.mul(local_[0], dh1_[0], out=dgates_h3_[0])


def _lstm_forward_loop(
    gates: Tensor,
    c: Tensor,
    tanh_c: Tensor,
    outputs: Tensor,
    h: Tensor,
    c_prev: Tensor,
    W_h: Tensor,
) -> None:
    H = c.shape[-1]
    steps = zip(
        gates.unbind(0),
        gates[..., : 2 * H].unbind(0),
        gates[..., :H].unbind(0),
        gates[..., H : 2 * H].unbind(0),
        gates[..., 2 * H : 3 * H].unbind(0),
        gates[..., 3 * H :].unbind(0),
        c.unbind(0),
        tanh_c.unbind(0),
        outputs.unbind(0),
    )
    for g_t, if_t, i_t, f_t, gg_t, o_t, c_t, tc_t, out_t in steps:
        g_t.addmm_(h, W_h)
        if_t.sigmoid_()
        gg_t.tanh_()
        o_t.sigmoid_()
        torch.mul(f_t, c_prev, out=c_t).addcmul_(i_t, gg_t)
        torch.tanh(c_t, out=tc_t)
        torch.mul(o_t, tc_t, out=out_t)
        h, c_prev = out_t, c_t


def _lstm_backward_loop(
    dh: Tensor,
    a_c: Tensor,
    f: Tensor,
    dgates: Tensor,
    local: Tensor,
    dc: Tensor,
    W_hT: Tensor,
) -> None:
    T, b, GH = dgates.shape
    dgates4 = dgates.view(T, b, 4, GH // 4)
    dc1 = dc.unsqueeze(1)  # (b, 1, H): broadcast over the gates i, f, g
    dh_, a_c_, f_, dgates_ = (x.unbind(0) for x in (dh, a_c, f, dgates))
    local_ifg_, local_o_ = local[:, :, :3].unbind(0), local[:, :, 3].unbind(0)
    dgates_ifg_, dgates_o_ = dgates4[:, :, :3].unbind(0), dgates4[:, :, 3].unbind(0)
    for t in range(T - 1, -1, -1):
        dc.addcmul_(dh_[t], a_c_[t])
        torch.mul(local_ifg_[t], dc1, out=dgates_ifg_[t])
        torch.mul(local_o_[t], dh_[t], out=dgates_o_[t])
        dc.mul_(f_[t])
        if t > 0:
            dh_[t - 1].addmm_(dgates_[t], W_hT)


class RNNRecurrence(torch.autograd.Function):
    """h_t = f(XW_t + h_{t-1} W_h + b_hh) over all T steps; f is the cell's activation
    (tanh, or another of rnnlab.models.cells.ACTIVATIONS)."""

    @staticmethod
    def forward(ctx, XW: Tensor, W_h: Tensor, b_hh: Tensor, h0: Tensor, f: Activation):
        outputs = XW + b_hh  # (T, B, H): pre-activations, turned into h_t in place step by step
        _rnn_forward_loop(outputs, h0, W_h, f.apply_)
        ctx.save_for_backward(W_h, h0, outputs)
        ctx.f = f
        return outputs, outputs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_outputs: Tensor, d_hT: Tensor):
        W_h, h0, outputs = ctx.saved_tensors
        local = ctx.f.grad_from_output(outputs)  # (T, B, H) dh_t/dpre_t
        dgates = torch.empty_like(outputs)  # (T, B, H) = dXW
        # dh[t] = dL/dh_t, everything included: the outputs' gradient now, the rest added
        # step by step in place (no per-step copy)
        dh = d_outputs.clone(memory_format=torch.contiguous_format)
        dh[-1] += d_hT
        W_hT = W_h.t()
        _rnn_backward_loop(dh, local, dgates, W_hT)
        dh0 = dgates[0] @ W_hT if ctx.needs_input_grad[3] else None
        dW = _dW_h(h0, outputs, dgates) if ctx.needs_input_grad[1] else None
        db = dgates.sum((0, 1)) if ctx.needs_input_grad[2] else None
        return dgates, dW, db, dh0, None


class GRURecurrence(torch.autograd.Function):
    """The GRU in cuDNN's form (reset gate applied to h W_hn + b_hn) over all T steps."""

    @staticmethod
    def forward(ctx, XW: Tensor, W_h: Tensor, b_hh: Tensor, h0: Tensor):
        T, B, GH = XW.shape
        H = GH // 3
        # hw[t] = [r, z, h W_hn + b_hn]: filled with the parts known before the loop
        # (XW_rz + b_rz, b_hn) so that one addmm_ per step completes all three.
        hw = torch.empty_like(XW)
        torch.add(XW[..., : 2 * H], b_hh[: 2 * H], out=hw[..., : 2 * H])
        hw[..., 2 * H :] = b_hh[2 * H :]
        n = torch.empty(T, B, H, dtype=XW.dtype, device=XW.device)
        outputs = torch.empty_like(n)
        _gru_forward_loop(hw, XW, n, outputs, h0, W_h)
        ctx.save_for_backward(W_h, h0, hw, n, outputs)
        return outputs, outputs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_outputs: Tensor, d_hT: Tensor):
        W_h, h0, hw, n, outputs = ctx.saved_tensors
        T, B, GH = hw.shape
        H = GH // 3
        r, z, hn = hw[..., :H], hw[..., H : 2 * H], hw[..., 2 * H :]
        h_prev = _previous(h0, outputs)
        # With dh the gradient reaching h_t, the gate gradients are dh times:
        #   dn_pre = dh * (1 - z) tanh'(n)                      = dh * a_n
        #   dz_pre = dh * (h_prev - n) sigmoid'(z)              = dh * a_z
        #   dr_pre = dn_pre * hn * sigmoid'(r)                  = dh * a_n hn sigmoid'(r)
        # and on the recurrent side the candidate's gradient is dn_pre * r.
        a_n = torch.rsub(z, 1).mul_(_tanh_grad(n))
        local = torch.empty(T, B, 3, H, dtype=hw.dtype, device=hw.device)
        torch.mul(a_n, hn, out=local[:, :, 0]).mul_(_sigmoid_grad(r))
        torch.sub(h_prev, n, out=local[:, :, 1]).mul_(_sigmoid_grad(z))
        torch.mul(a_n, r, out=local[:, :, 2])
        dgates_h = torch.empty_like(hw)  # gradient of (h W_h + b_hh) per step
        dh = d_outputs.clone(memory_format=torch.contiguous_format)  # gains the rest in place
        dh[-1] += d_hT
        W_hT = W_h.t()
        _gru_backward_loop(dh, z, local, dgates_h, W_hT)
        dh0 = None
        if ctx.needs_input_grad[3]:
            dh0 = dgates_h[0] @ W_hT
            dh0.addcmul_(dh[0], z[0])
        dXW = dgates_h.clone()
        torch.mul(dh, a_n, out=dXW[..., 2 * H :])  # the input side's candidate misses the "* r"
        dW = _dW_h(h0, outputs, dgates_h) if ctx.needs_input_grad[1] else None
        db = dgates_h.sum((0, 1)) if ctx.needs_input_grad[2] else None
        return dXW, dW, db, dh0


class LSTMRecurrence(torch.autograd.Function):
    """The LSTM (gates i, f, g, o) over all T steps."""

    @staticmethod
    def forward(ctx, XW: Tensor, W_h: Tensor, b_hh: Tensor, h0: Tensor, c0: Tensor):
        T, B, GH = XW.shape
        H = GH // 4
        gates = XW + b_hh  # (T, B, 4H): pre-activations, then activations in place
        c = torch.empty(T, B, H, dtype=XW.dtype, device=XW.device)
        tanh_c = torch.empty_like(c)
        outputs = torch.empty_like(c)
        _lstm_forward_loop(gates, c, tanh_c, outputs, h0, c0, W_h)
        ctx.save_for_backward(W_h, h0, c0, gates, c, tanh_c, outputs)
        return outputs, outputs[-1].clone(), c[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_outputs: Tensor, d_hT: Tensor, d_cT: Tensor):
        W_h, h0, c0, gates, c, tanh_c, outputs = ctx.saved_tensors
        T, B, GH = gates.shape
        H = GH // 4
        i, f, g, o = (gates[..., k * H : (k + 1) * H] for k in range(4))
        c_prev = _previous(c0, c)
        # With dh, dc the gradients reaching h_t, c_t (dc also through h_t = o tanh(c_t)):
        #   dc += dh * o tanh'(c)                               = dh * a_c
        #   di, df, dg (pre-activation) = dc * [g sigmoid'(i), c_prev sigmoid'(f), i tanh'(g)]
        #   do (pre-activation)  = dh * tanh(c) sigmoid'(o)
        #   dc_prev = dc * f
        a_c = _tanh_grad(tanh_c).mul_(o)
        local = torch.empty(T, B, 4, H, dtype=gates.dtype, device=gates.device)
        torch.mul(g, _sigmoid_grad(i), out=local[:, :, 0])
        torch.mul(c_prev, _sigmoid_grad(f), out=local[:, :, 1])
        torch.mul(i, _tanh_grad(g), out=local[:, :, 2])
        torch.mul(tanh_c, _sigmoid_grad(o), out=local[:, :, 3])
        del c_prev
        dgates = torch.empty_like(gates)  # = dXW
        dh = d_outputs.clone(memory_format=torch.contiguous_format)  # gains the rest in place
        dh[-1] += d_hT
        dc = d_cT.clone()
        W_hT = W_h.t()
        _lstm_backward_loop(dh, a_c, f, dgates, local, dc, W_hT)
        dh0 = dgates[0] @ W_hT if ctx.needs_input_grad[3] else None
        dW = _dW_h(h0, outputs, dgates) if ctx.needs_input_grad[1] else None
        db = dgates.sum((0, 1)) if ctx.needs_input_grad[2] else None
        return dgates, dW, db, dh0, dc


def recurrence(
    kind: str, XW: Tensor, W_h: Tensor, b_hh: Tensor, h0: Tensor, c0: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Run a layer of cell ``kind`` over all steps: (outputs (T, B, H), hT (B, H), cT (B, H)
    or None), by the recurrence of its family (rnnlab.models.cells)."""
    cell = CELLS[kind]
    if cell.family == "lstm":
        return LSTMRecurrence.apply(XW, W_h, b_hh, h0, c0)
    if cell.family == "gru":
        outputs, hT = GRURecurrence.apply(XW, W_h, b_hh, h0)
    elif cell.family == "rnn":
        outputs, hT = RNNRecurrence.apply(XW, W_h, b_hh, h0, cell.activation)
    else:
        raise ValueError(f"no recurrence for the {cell.family!r} family")
    return outputs, hT, None
