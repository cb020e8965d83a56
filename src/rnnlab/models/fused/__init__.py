"""The scratch models, computed fast: same parameters, same function, whole-sequence recurrences.

Shapes: B batch size, T time steps, V vocabulary size, H hidden units, L layers,
G gates (1 RNN, 3 GRU, 4 LSTM).

:class:`FusedLM` is a :class:`~rnnlab.models.scratch.ScratchLM` (same constructor,
parameters and ``state_dict`` keys, so a checkpoint loads into either) whose
forward pass regroups the work into big products:

    X (B, T)
      -> layer 0's input projection by row lookup   XW = W_x[X.T] + b     (T, B, G*H)
         (one-hot(X) @ W_x only selects rows of W_x)
      -> layers above: one product for all steps    XW = outputs W_x + b  (T*B, H) @ (H, G*H)
      -> the recurrence of each layer, one autograd node per sequence     (T, B, H)
      -> the output layer as one product            outputs W_hq + b_q    (T*B, V)

The recurrence runs as a Triton kernel when the tensors are on a CUDA device
and ``rnnlab.models.fused.triton_rnn`` is importable and supports the layer
(``triton_rnn.supported(kind, H, dtype)``); otherwise as the torch code of
:mod:`rnnlab.models.fused.cpu`, which runs on any device. Both share the signature

    recurrence(kind, XW (T, B, G*H), W_h (H, G*H), b_hh (G*H,), h0 (B, H), c0 (B, H) or None)
        -> outputs (T, B, H), hT (B, H), cT (B, H) or None
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .. import layout
from ..scratch import ScratchLM
from . import cpu

_triton_rnn: Any = None  # the module once imported; False if it could not be


def _triton():
    """``rnnlab.models.fused.triton_rnn``, or None where it (or Triton) cannot be imported."""
    global _triton_rnn
    if _triton_rnn is None:
        try:
            from . import triton_rnn

            _triton_rnn = triton_rnn
        except ImportError:
            _triton_rnn = False
    return _triton_rnn or None


def recurrence_for(kind: str, XW: torch.Tensor) -> Callable:
    """The recurrence function to run layer ``kind`` on XW (T, B, G*H): Triton or torch."""
    if XW.is_cuda:
        kernels = _triton()
        H = XW.shape[-1] // layout.num_gates(kind)
        if kernels is not None and kernels.supported(kind, H, XW.dtype):
            return kernels.recurrence
    return cpu.recurrence


# Cells whose whole recurrence runs faster on the CPU in torch's own kernel (oneDNN's
# fused LSTM) than in cpu.py: measured side by side in docs/fused-cpu.md. The kernel
# computes the scratch function from the scratch parameters, stacked as torch.nn stacks
# them (the same conversion tests/test_models.py checks against nn.LSTM in float64).
TORCH_KERNEL_CELLS = ("lstm",)

# torch's whole-network recurrences, as nn.RNN/GRU/LSTM call them: (input (T, B, D), state,
# flat weights [W_ih, W_hh, b_ih, b_hh per layer], has_biases, num_layers, dropout, train,
# bidirectional, batch_first) -> (outputs (T, B, H), h_T) or (outputs, h_T, c_T).
KERNELS: dict[str, Callable[..., Any]] = {
    "rnn": torch.rnn_tanh,
    "gru": torch.gru,
    "lstm": torch.lstm,
}


class FusedLM(ScratchLM):
    """ScratchLM with whole-sequence recurrences: forward(X, state) -> (logits (T*B, V), state)."""

    # Fixed shapes and no host synchronisation in forward and backward, so a training
    # step can be captured as a CUDA graph (train.make_step).
    cuda_graph_safe = True

    def __init__(self, vocab_size: int, hidden: int, layers: int = 1, cell: str = "rnn"):
        super().__init__(vocab_size, hidden, layers, cell)
        self._pack()

    def _pack(self) -> None:
        """Lay the gate parameters out as torch's kernel reads them (``layout.pack``), so
        that no weight or gradient is copied per step, for the cells that run there."""
        if self.cell in TORCH_KERNEL_CELLS:
            for layer in self.layers:
                layout.pack(layer, self.cell)

    def _apply(self, fn, recurse=True):
        # .to(), .double(), .cuda() ... give parameters new memory: pack that again.
        super()._apply(fn, recurse)
        self._pack()
        return self

    def forward(self, X: torch.Tensor, state):
        """X (B, T) token ids, state as from begin_state -> logits (T*B, V), new state."""
        # One-hot inputs cost the kernel a (T*B, V) x (V, G*H) product, which the row lookup
        # below avoids: worth it only while V is no larger than the recurrent H (characters).
        if self.cell in TORCH_KERNEL_CELLS and not X.is_cuda and self.vocab_size <= self.hidden:
            return self._forward_in_torch_kernel(X, state)
        B, T = X.shape
        H = self.hidden
        inputs = torch.empty(0)  # (T, B, H): the outputs of the layer below, once there is one
        last_h: list[torch.Tensor] = []
        last_c: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            W_x, W_h, b = layout.stacked(layer, self.cell)  # (D, G*H), (H, G*H), (G*H,)
            if i == 0:
                XW = F.embedding(X.T, W_x) + b  # (T, B, G*H): the rows one-hot(X) @ W_x selects
            else:
                XW = torch.addmm(b, inputs.reshape(T * B, H), W_x).view(T, B, -1)
            if self.cell == "lstm":
                h0, c0 = state[0][i], state[1][i]
            else:
                h0, c0 = state[i], None
            recurrence = recurrence_for(self.cell, XW)
            inputs, hT, cT = recurrence(
                self.cell, XW, W_h, layout.hidden_bias(layer, self.cell), h0, c0
            )
            last_h.append(hT)
            last_c.append(cT)
        logits = torch.addmm(self.b_q, inputs.reshape(T * B, H), self.W_hq)  # (T*B, V)
        if self.cell == "lstm":
            return logits, (torch.stack(last_h), torch.stack(last_c))
        return logits, torch.stack(last_h)

    def _forward_in_torch_kernel(self, X: torch.Tensor, state):
        """The same function, with every layer's recurrence in torch's kernel for the cell.

        The scratch parameters are handed to the kernel in torch.nn's layout, W_ih (G*H, D)
        and W_hh (G*H, H) in cuDNN's gate order, as views of their packed blocks
        (``layout.pack``), so gradients reach them and nothing is copied.
        """
        params = layout.torch_nn_parameters(self.layers, self.cell)
        inputs = F.one_hot(X.T, self.vocab_size).to(self.W_hq.dtype)  # (T, B, V)
        outputs, *last = KERNELS[self.cell](
            inputs,
            state,
            list(params.values()),
            True,
            len(self.layers),
            0.0,
            self.training,
            False,
            False,
        )  # has biases, layers, dropout, train, bidirectional, batch first
        logits = torch.addmm(self.b_q, outputs.reshape(-1, self.hidden), self.W_hq)  # (T*B, V)
        return logits, tuple(last) if self.cell == "lstm" else last[0]


__all__ = ["FusedLM", "recurrence_for"]
