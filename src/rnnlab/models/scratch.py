"""The textbook recurrent language models, written from raw tensors (d2l 8.5, 9.1-9.3).

Shapes, named once: B batch size, T time steps, V vocabulary size, D input
size of a layer (V for the first, H above it), H hidden units, L layers.

    X (B, T) token ids
      -> one-hot of X.T          (T, B, V)   time-major, so a loop walks the steps
      -> each layer, each step   (T, B, H)   H_t = f(X_t W_x + H_{t-1} W_h + b)
      -> outputs @ W_hq + b_q    (T*B, V)    logits; row t*B + b is step t of stream b

The state is a tensor (L, B, H) for the RNN and GRU and a pair (H, C) of such
tensors for the LSTM, the same layout torch.nn uses, so the two can be compared
directly. Parameters are drawn from N(0, 0.01^2) with zero biases, as in the book.

This file is what a learner reads: plain loops, one line per formula. Faster
implementations of the same functions live in ``rnnlab.models.fused`` and are
tested against these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def normal(*shape) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * 0.01)


def zeros(*shape) -> nn.Parameter:
    return nn.Parameter(torch.zeros(*shape))


class RNNLayer(nn.Module):
    """Vanilla RNN layer (d2l 8.5): H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h)."""

    def __init__(self, num_inputs: int, num_hiddens: int):
        super().__init__()
        self.W_xh = normal(num_inputs, num_hiddens)
        self.W_hh = normal(num_hiddens, num_hiddens)
        self.b_h = zeros(num_hiddens)

    def forward(self, inputs: torch.Tensor, H: torch.Tensor):
        """inputs (T, B, D), H (B, H) -> outputs (T, B, H), last H (B, H)."""
        outputs = []
        for X in inputs:
            H = torch.tanh(X @ self.W_xh + H @ self.W_hh + self.b_h)
            outputs.append(H)
        return torch.stack(outputs), H


class GRULayer(nn.Module):
    """Gated recurrent unit layer (d2l 9.1, Cho et al. 2014).

    Z = sigmoid(X W_xz + H W_hz + b_z)                 update gate
    R = sigmoid(X W_xr + H W_hr + b_r)                 reset gate
    H~ = tanh(X W_xh + b_h + R * (H W_hh + b_hh))      candidate state
    H = Z * H + (1 - Z) * H~

    The reset gate multiplies (H W_hh + b_hh), as cuDNN and torch.nn.GRU do; the
    book (following Cho et al.) writes (R * H) W_hh, a slightly different function.
    We use torch's form so that this code can be checked equal to nn.GRU.
    """

    def __init__(self, num_inputs: int, num_hiddens: int):
        super().__init__()
        self.W_xz, self.W_hz, self.b_z = (
            normal(num_inputs, num_hiddens),
            normal(num_hiddens, num_hiddens),
            zeros(num_hiddens),
        )
        self.W_xr, self.W_hr, self.b_r = (
            normal(num_inputs, num_hiddens),
            normal(num_hiddens, num_hiddens),
            zeros(num_hiddens),
        )
        self.W_xh, self.W_hh, self.b_h = (
            normal(num_inputs, num_hiddens),
            normal(num_hiddens, num_hiddens),
            zeros(num_hiddens),
        )
        self.b_hh = zeros(num_hiddens)

    def forward(self, inputs: torch.Tensor, H: torch.Tensor):
        """inputs (T, B, D), H (B, H) -> outputs (T, B, H), last H (B, H)."""
        outputs = []
        for X in inputs:
            Z = torch.sigmoid(X @ self.W_xz + H @ self.W_hz + self.b_z)
            R = torch.sigmoid(X @ self.W_xr + H @ self.W_hr + self.b_r)
            H_tilde = torch.tanh(X @ self.W_xh + self.b_h + R * (H @ self.W_hh + self.b_hh))
            H = Z * H + (1 - Z) * H_tilde
            outputs.append(H)
        return torch.stack(outputs), H


class LSTMLayer(nn.Module):
    """Long short-term memory layer (d2l 9.2, Hochreiter & Schmidhuber 1997).

    I, F, O = sigmoid(X W_x? + H W_h? + b_?)   input, forget, output gates
    C~ = tanh(X W_xc + H W_hc + b_c)           candidate memory
    C = F * C + I * C~;  H = O * tanh(C)
    """

    def __init__(self, num_inputs: int, num_hiddens: int):
        super().__init__()
        self.W_xi, self.W_hi, self.b_i = (
            normal(num_inputs, num_hiddens),
            normal(num_hiddens, num_hiddens),
            zeros(num_hiddens),
        )
        self.W_xf, self.W_hf, self.b_f = (
            normal(num_inputs, num_hiddens),
            normal(num_hiddens, num_hiddens),
            zeros(num_hiddens),
        )
        self.W_xo, self.W_ho, self.b_o = (
            normal(num_inputs, num_hiddens),
            normal(num_hiddens, num_hiddens),
            zeros(num_hiddens),
        )
        self.W_xc, self.W_hc, self.b_c = (
            normal(num_inputs, num_hiddens),
            normal(num_hiddens, num_hiddens),
            zeros(num_hiddens),
        )

    def forward(self, inputs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        """inputs (T, B, D), state (H, C) each (B, H) -> outputs (T, B, H), last (H, C)."""
        H, C = state
        outputs = []
        for X in inputs:
            I = torch.sigmoid(X @ self.W_xi + H @ self.W_hi + self.b_i)
            F_ = torch.sigmoid(X @ self.W_xf + H @ self.W_hf + self.b_f)
            O = torch.sigmoid(X @ self.W_xo + H @ self.W_ho + self.b_o)
            C_tilde = torch.tanh(X @ self.W_xc + H @ self.W_hc + self.b_c)
            C = F_ * C + I * C_tilde
            H = O * torch.tanh(C)
            outputs.append(H)
        return torch.stack(outputs), (H, C)


LAYERS = {"rnn": RNNLayer, "gru": GRULayer, "lstm": LSTMLayer}


class ScratchLM(nn.Module):
    """A character/word language model built from the layers above (d2l's RNNModelScratch).

    forward(X, state) -> (logits (T*B, V), state); begin_state(B, device) -> zero state.
    """

    def __init__(self, vocab_size: int, hidden: int, layers: int = 1, cell: str = "rnn"):
        super().__init__()
        self.vocab_size, self.hidden, self.cell = vocab_size, hidden, cell
        Layer = LAYERS[cell]
        self.layers = nn.ModuleList(
            Layer(vocab_size if i == 0 else hidden, hidden) for i in range(layers)
        )
        self.W_hq = normal(hidden, vocab_size)
        self.b_q = zeros(vocab_size)

    def begin_state(self, batch_size: int, device=None):
        """Zero state: (L, B, H), or a pair of them for the LSTM."""
        shape = (len(self.layers), batch_size, self.hidden)
        dtype = self.W_hq.dtype
        device = device if device is not None else self.W_hq.device
        if self.cell == "lstm":
            return (
                torch.zeros(shape, device=device, dtype=dtype),
                torch.zeros(shape, device=device, dtype=dtype),
            )
        return torch.zeros(shape, device=device, dtype=dtype)

    def forward(self, X: torch.Tensor, state):
        """X (B, T) token ids, state as from begin_state -> logits (T*B, V), new state."""
        inputs = F.one_hot(X.T, self.vocab_size).to(self.W_hq.dtype)  # (T, B, V)
        last: list = []
        for i, layer in enumerate(self.layers):
            layer_state = (state[0][i], state[1][i]) if self.cell == "lstm" else state[i]
            inputs, layer_last = layer(inputs, layer_state)  # inputs becomes (T, B, H)
            last.append(layer_last)
        logits = inputs.reshape(-1, self.hidden) @ self.W_hq + self.b_q  # (T*B, V)
        if self.cell == "lstm":
            return logits, (torch.stack([h for h, _ in last]), torch.stack([c for _, c in last]))
        return logits, torch.stack(last)
