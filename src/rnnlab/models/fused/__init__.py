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

Which code runs the recurrences is decided by :func:`path_for`, from the cell,
the device and the sizes alone: torch's whole-network kernel (cuDNN on CUDA,
oneDNN on the CPU) fed the scratch parameters in torch.nn's layout, or the torch
code of :mod:`rnnlab.models.fused.cpu` (any device). ``--impl triton`` (experimental:
rnnlab.experimental.triton_model) is this model with :meth:`FusedLM.recurrence` replaced
by Triton kernels on CUDA. cpu.py and Triton share the signature

    recurrence(kind, XW (T, B, G*H), W_h (H, G*H), b_hh (G*H,), h0 (B, H), c0 (B, H) or None)
        -> outputs (T, B, H), hT (B, H), cT (B, H) or None

Memory: a training step on cpu.py's recurrences needs, on top of the weights, about
4 * (P + T*B*(L*F*H + 2*V) + T*B*(K*H + 2*H + V)) bytes in float32 (P parameters;
F, K = 1, 3 for the RNN, 5, 12 for the GRU, 7, 10 for the LSTM): the derivation and a
measurement are in :mod:`rnnlab.models.fused.cpu`. In torch's kernel the workspace is
the kernel's own; ``rnnlab bench`` reports every implementation's measured peak.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..cells import CELLS, state_of, state_parts
from ..layout import hidden_bias, stacked, torch_nn_parameters
from ..layout import pack as pack_layer
from ..scratch import ScratchLM
from . import cpu

# Cells whose whole recurrence runs faster on the CPU in torch's own kernel (oneDNN's
# fused LSTM) than in cpu.py: measured side by side in docs/fused-cpu.md, where the GRU
# measured slower through the kernel than in cpu.py, and torch.nn's RNN slower than cpu.py's.
TORCH_KERNEL_CELLS = ("lstm",)

PATHS = ("torch-kernel", "torch-ops")


def path_for(cell: str, device_type: str, vocab_size: int, hidden: int) -> str:
    """Which code computes a fused model's recurrences: one of :data:`PATHS`.

    Every path computes the scratch model's function from the scratch parameters.

    * "torch-kernel": torch's whole-network kernel for the cell (its entry's ``kernel``), fed
      the parameters in torch.nn's layout (``layout.torch_nn_parameters``). It takes
      one-hot inputs, so layer 0 costs it a (T*B, V) x (V, G*H) product that the row
      lookup of the other paths avoids: chosen only while V <= H (characters, not words).
      On CUDA for every cell: there it is cuDNN, the code torch.nn's own recurrent layers
      run on a GPU; what rnnlab adds, the layout conversion, is tested on the CPU against
      the scratch model in float64 (tests/test_fused.py). On the CPU for the cells of
      :data:`TORCH_KERNEL_CELLS` only (the LSTM: oneDNN measured faster than cpu.py).
    * "torch-ops": everything else; the recurrence of :mod:`rnnlab.models.fused.cpu`,
      torch operations with a hand-written backward pass, which runs on any device and is
      checked against the scratch model and by gradcheck. On the CPU: the RNN and GRU
      (measured faster there than torch's kernel), and the LSTM when V > H; on CUDA: V > H.
    """
    if device_type == "cuda":
        return "torch-kernel" if vocab_size <= hidden else "torch-ops"
    if device_type == "cpu" and cell in TORCH_KERNEL_CELLS and vocab_size <= hidden:
        return "torch-kernel"
    return "torch-ops"


class FusedLM(ScratchLM):
    """ScratchLM with whole-sequence recurrences: forward(X, state) -> (logits (T*B, V), state)."""

    # Fixed shapes and no host synchronisation in forward and backward, so a training step
    # can be captured as a CUDA graph (--cuda-graph, rnnlab.experimental.cuda_graph).
    # Declared from the code, not yet verified on a GPU.
    cuda_graph_safe = True

    def __init__(self, vocab_size: int, hidden: int, layers: int = 1, cell: str = "rnn"):
        super().__init__(vocab_size, hidden, layers, cell)
        self._pack()

    def path(self, device_type: str) -> str:
        """The code that computes this model's recurrences on ``device_type`` (path_for)."""
        return path_for(self.cell, device_type, self.vocab_size, self.hidden)

    def recurrence(self, XW: torch.Tensor) -> Callable:
        """The function that runs a layer's recurrence over XW (T, B, G*H): cpu.py's."""
        return cpu.recurrence

    def _pack(self, device_type: str | None = None) -> None:
        """Lay the gate parameters out as torch's kernel reads them (``layout.pack``), so
        that no weight or gradient is copied per step, where the kernel runs them.

        ``device_type``: where the parameters are (default: where they are now).
        """
        device_type = device_type or self.W_hq.device.type
        if device_type == "cpu":
            # As measured (docs/fused-cpu.md): the LSTM packed whatever V; the RNN and GRU
            # not, since cpu.py runs them from layout.stacked's contiguous copies.
            pack = self.cell in TORCH_KERNEL_CELLS
        else:
            pack = self.path(device_type) == "torch-kernel"
        if pack:
            for layer in self.layers:
                pack_layer(layer, self.cell)

    def _apply(self, fn, recurse=True):
        # .to(), .double(), .cuda() ... give parameters new memory: pack that again.
        super()._apply(fn, recurse)
        self._pack()
        return self

    def forward(self, X: torch.Tensor, state):
        """X (B, T) token ids, state as from begin_state -> logits (T*B, V), new state."""
        path = self.path(X.device.type)
        if path == "torch-kernel":
            return self._forward_in_torch_kernel(X, state)
        B, T = X.shape
        H = self.hidden
        inputs = torch.empty(0)  # (T, B, H): the outputs of the layer below, once there is one
        parts = state_parts(state)  # (h,) or (h, c), each (L, B, H)
        last: list[tuple[torch.Tensor, ...]] = []
        for i, layer in enumerate(self.layers):
            W_x, W_h, b = stacked(layer, self.cell)  # (D, G*H), (H, G*H), (G*H,)
            if i == 0:
                XW = F.embedding(X.T, W_x) + b  # (T, B, G*H): the rows one-hot(X) @ W_x selects
            else:
                XW = torch.addmm(b, inputs.reshape(T * B, H), W_x).view(T, B, -1)
            h0, c0 = parts[0][i], (parts[1][i] if len(parts) > 1 else None)
            recurrence = self.recurrence(XW)
            inputs, hT, cT = recurrence(self.cell, XW, W_h, hidden_bias(layer, self.cell), h0, c0)
            last.append((hT,) if cT is None else (hT, cT))
        logits = torch.addmm(self.b_q, inputs.reshape(T * B, H), self.W_hq)  # (T*B, V)
        return logits, state_of(torch.stack(layers) for layers in zip(*last))

    def _forward_in_torch_kernel(self, X: torch.Tensor, state):
        """The same function, with every layer's recurrence in torch's kernel for the cell.

        X (B, T) token ids, state (L, B, H) or a pair of them -> logits (T*B, V), new state.
        The scratch parameters are handed to the kernel in torch.nn's layout, W_ih (G*H, D)
        and W_hh (G*H, H) in cuDNN's gate order, as views of their packed blocks
        (``layout.pack``; copies where the layer is not packed), so gradients reach them.
        """
        params = torch_nn_parameters(self.layers, self.cell)
        # one-hot(X.T) (T, B, V), written straight in the weights' dtype
        inputs = self.W_hq.new_zeros(*X.T.shape, self.vocab_size).scatter_(2, X.T[..., None], 1)
        outputs, *last = CELLS[self.cell].kernel(
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
        return logits, state_of(last)


__all__ = [
    "FusedLM",
    "PATHS",
    "TORCH_KERNEL_CELLS",
    "path_for",
]
