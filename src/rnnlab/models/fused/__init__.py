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
from ..torchnn import RECURRENT
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


class FusedLM(ScratchLM):
    """ScratchLM with whole-sequence recurrences: forward(X, state) -> (logits (T*B, V), state)."""

    # Fixed shapes and no host synchronisation in forward and backward, so a training
    # step can be captured as a CUDA graph (train.make_step).
    cuda_graph_safe = True

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

        The scratch parameters are stacked into torch.nn's layout, W_ih (G*H, D) and
        W_hh (G*H, H) in cuDNN's gate order, inside the graph, so gradients reach them.
        """
        template = self._torch_template()
        params = layout.torch_nn_parameters(self.layers, self.cell)
        inputs = F.one_hot(X.T, self.vocab_size).to(self.W_hq.dtype)  # (T, B, V)
        outputs, state = torch.func.functional_call(template, params, (inputs, state))
        logits = torch.addmm(self.b_q, outputs.reshape(-1, self.hidden), self.W_hq)  # (T*B, V)
        return logits, state

    def _torch_template(self) -> torch.nn.Module:
        """A torch.nn layer of this shape whose parameters each call replaces (kept out of
        the state_dict, in a plain dict, so checkpoints stay the scratch model's)."""
        kept = self.__dict__.setdefault("_templates", {})
        key = (self.cell, self.vocab_size, self.hidden, len(self.layers), self.W_hq.dtype)
        if key not in kept:
            kept[key] = RECURRENT[self.cell](
                self.vocab_size, self.hidden, len(self.layers), device="meta", dtype=self.W_hq.dtype
            )
        return kept[key]


__all__ = ["FusedLM", "recurrence_for"]
