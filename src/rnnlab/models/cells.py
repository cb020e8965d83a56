"""The recurrent cells: each one's step from raw tensors, and one registry entry that says
everything else that differs between them.

Shapes, named once: B batch size, T time steps, D input size of a layer, H hidden units,
G gates. A layer maps inputs (T, B, D) and its state to outputs (T, B, H) and its last
state. A state has one part, h (B, H), or several (the LSTM's (h, c)); a model's state
stacks its L layers: one tensor (L, B, H) per part, a tuple of them where there are several
(torch.nn's layout, so the two can be compared directly). :func:`map_state`,
:func:`state_parts` and :func:`state_of` work for any number of parts.

Parameters are drawn from N(0, 0.01^2) with zero biases, as in the book.

A :class:`Cell` entry holds the name, the gates (the names of each gate's W_x, W_h and b,
in cuDNN's order: what ``layout`` stacks), the state's parts, the book's layer (below),
torch.nn's class and options (``models.torchnn``), torch's whole-network function behind
that class (what the fused model and locked dropout call), the recurrence family that
``models.fused.cpu`` computes it with, and, for the plain RNN family, its nonlinearity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


def normal(*shape) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * 0.01)


def zeros(*shape) -> nn.Parameter:
    return nn.Parameter(torch.zeros(*shape))


@dataclass(frozen=True)
class Activation:
    """A nonlinearity of the RNN family: f, f in place, and f' from f's output."""

    apply: Callable[[torch.Tensor], torch.Tensor]
    apply_: Callable[[torch.Tensor], torch.Tensor]
    grad_from_output: Callable[[torch.Tensor], torch.Tensor]


ACTIVATIONS = {
    # tanh'(x) = 1 - tanh(x)^2; the 1 broadcasts, so no ones buffer is made
    "tanh": Activation(
        torch.tanh, torch.Tensor.tanh_, lambda t: torch.addcmul(t.new_ones(()), t, t, value=-1)
    ),
    # relu'(x) = 1 where relu(x) > 0, else 0 (0 at 0, as torch's autograd takes it)
    "relu": Activation(torch.relu, torch.Tensor.relu_, lambda r: (r > 0).to(r.dtype)),
}


class RNNLayer(nn.Module):
    """Vanilla RNN layer (d2l 8.5): H_t = f(X_t W_xh + H_{t-1} W_hh + b_h), f = tanh, or
    relu for the ReLU RNN (``rnn-relu``: the cell of Le et al. 2015's IRNN, without its
    identity initialisation of W_hh)."""

    def __init__(self, num_inputs: int, num_hiddens: int, nonlinearity: str = "tanh"):
        super().__init__()
        self.W_xh = normal(num_inputs, num_hiddens)
        self.W_hh = normal(num_hiddens, num_hiddens)
        self.b_h = zeros(num_hiddens)
        self.f = ACTIVATIONS[nonlinearity].apply

    def forward(self, inputs: torch.Tensor, H: torch.Tensor):
        """inputs (T, B, D), H (B, H) -> outputs (T, B, H), last H (B, H)."""
        outputs = []
        for X in inputs:
            H = self.f(X @ self.W_xh + H @ self.W_hh + self.b_h)
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


@dataclass(frozen=True)
class Cell:
    """What one recurrent cell is, for every part of rnnlab that differs by cell."""

    name: str
    layer: type[nn.Module]  # the book's layer, above
    gates: tuple[tuple[str, str, str], ...]  # each gate's (W_x, W_h, b) names, cuDNN's order
    state_parts: int  # 1: h; 2: (h, c)
    torch_class: Callable[..., nn.RNNBase]  # torch.nn's layer of the same function
    kernel: Callable[..., Any]  # torch's function behind it: (input, hx, weights, ...) -> ...
    family: str  # the recurrence models.fused.cpu computes it with: rnn, gru or lstm
    layer_options: dict[str, Any] = field(default_factory=dict)  # for ``layer``
    torch_options: dict[str, Any] = field(default_factory=dict)  # for ``torch_class``
    # the GRU's: a bias on the recurrent side of its candidate gate (b_hh), beside b_h
    recurrent_bias: str | None = None

    @property
    def num_gates(self) -> int:
        return len(self.gates)

    @property
    def activation(self) -> Activation:
        """The nonlinearity of a cell of the RNN family."""
        return ACTIVATIONS[self.layer_options.get("nonlinearity", "tanh")]

    def new_layer(self, num_inputs: int, num_hiddens: int) -> nn.Module:
        return self.layer(num_inputs, num_hiddens, **self.layer_options)


CELLS: dict[str, Cell] = {
    "rnn": Cell("rnn", RNNLayer, (("W_xh", "W_hh", "b_h"),), 1, nn.RNN, torch.rnn_tanh, "rnn"),
    "gru": Cell(
        "gru",
        GRULayer,
        (("W_xr", "W_hr", "b_r"), ("W_xz", "W_hz", "b_z"), ("W_xh", "W_hh", "b_h")),
        1,
        nn.GRU,
        torch.gru,
        "gru",
        recurrent_bias="b_hh",
    ),
    "lstm": Cell(
        "lstm",
        LSTMLayer,
        (
            ("W_xi", "W_hi", "b_i"),
            ("W_xf", "W_hf", "b_f"),
            ("W_xc", "W_hc", "b_c"),
            ("W_xo", "W_ho", "b_o"),
        ),
        2,
        nn.LSTM,
        torch.lstm,
        "lstm",
    ),
    "rnn-relu": Cell(
        "rnn-relu",
        RNNLayer,
        (("W_xh", "W_hh", "b_h"),),
        1,
        nn.RNN,
        torch.rnn_relu,
        "rnn",
        layer_options={"nonlinearity": "relu"},
        torch_options={"nonlinearity": "relu"},
    ),
}


# ---- states of any number of parts ----


def state_parts(state) -> tuple[torch.Tensor, ...]:
    """A state's parts: (h,) or (h, c) (each (L, B, H), or (B, H) for one layer)."""
    return state if isinstance(state, tuple) else (state,)


def state_of(parts) -> Any:
    """The state made of ``parts``: the one tensor, or a tuple of several."""
    parts = tuple(parts)
    return parts[0] if len(parts) == 1 else parts


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state) -> Any:
    """``fn`` applied to every part of ``state`` (None stays None)."""
    if state is None:
        return None
    return state_of(fn(part) for part in state_parts(state))


def zero_state(cell: str, shape, device=None, dtype=None) -> Any:
    """The zero state of ``cell``: a tensor of ``shape`` (L, B, H) per part."""
    parts = CELLS[cell].state_parts
    return state_of(torch.zeros(shape, device=device, dtype=dtype) for _ in range(parts))


def layer_state(state, layer: int) -> Any:
    """Layer ``layer``'s part of a model's state: (B, H) per part."""
    return map_state(lambda part: part[layer], state)


def stack_states(states: list) -> Any:
    """The layers' last states, in order, stacked into a model's state: (L, B, H) per part."""
    return state_of(torch.stack(parts) for parts in zip(*map(state_parts, states)))
