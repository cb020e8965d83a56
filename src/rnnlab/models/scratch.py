"""The textbook recurrent language model, written from raw tensors (d2l 8.5, 9.1-9.3).

Shapes, named once: B batch size, T time steps, V vocabulary size, D input
size of a layer (V for the first, H above it), H hidden units, L layers.

    X (B, T) token ids
      -> one-hot of X.T          (T, B, V)   time-major, so a loop walks the steps
      -> each layer, each step   (T, B, H)   H_t = f(X_t W_x + H_{t-1} W_h + b)
      -> outputs @ W_hq + b_q    (T*B, V)    logits; row t*B + b is step t of stream b

The state is a tensor (L, B, H) for the RNN and GRU and a pair (H, C) of such
tensors for the LSTM, the same layout torch.nn uses, so the two can be compared
directly. Each cell's layer (its step, one line per formula) is in
``rnnlab.models.cells``; this file stacks them between the one-hot input and the
output layer. Faster implementations of the same functions live in
``rnnlab.models.fused`` and are tested against these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cells import CELLS, layer_state, normal, stack_states, zero_state, zeros


class ScratchLM(nn.Module):
    """A character/word language model on the cells' layers (d2l's RNNModelScratch).

    forward(X, state) -> (logits (T*B, V), state); begin_state(B, device) -> zero state.
    """

    def __init__(self, vocab_size: int, hidden: int, layers: int = 1, cell: str = "rnn"):
        super().__init__()
        self.vocab_size, self.hidden, self.cell = vocab_size, hidden, cell
        self.layers = nn.ModuleList(
            CELLS[cell].new_layer(vocab_size if i == 0 else hidden, hidden) for i in range(layers)
        )
        self.W_hq = normal(hidden, vocab_size)
        self.b_q = zeros(vocab_size)

    def begin_state(self, batch_size: int, device=None):
        """Zero state: (L, B, H), or a tuple of them for a cell whose state has parts."""
        shape = (len(self.layers), batch_size, self.hidden)
        device = device if device is not None else self.W_hq.device
        return zero_state(self.cell, shape, device, self.W_hq.dtype)

    def forward(self, X: torch.Tensor, state):
        """X (B, T) token ids, state as from begin_state -> logits (T*B, V), new state."""
        inputs = F.one_hot(X.T, self.vocab_size).to(self.W_hq.dtype)  # (T, B, V)
        last: list = []
        for i, layer in enumerate(self.layers):
            inputs, layer_last = layer(inputs, layer_state(state, i))  # inputs: (T, B, H)
            last.append(layer_last)
        logits = inputs.reshape(-1, self.hidden) @ self.W_hq + self.b_q  # (T*B, V)
        return logits, stack_states(last)
