"""How a scratch layer's per-gate parameters stack into the matrices fast code uses.

torch.nn and the fused implementations keep all gates of a layer in one matrix;
the gate order is cuDNN's (GRU: reset, update, candidate; LSTM: input, forget,
candidate, output). ``stacked`` builds the column-stacked matrices

    W_x (D, G*H),  W_h (H, G*H),  b (G*H,)

from a scratch layer, differentiably, so gradients flow back to the scratch
parameters. G is 1 (RNN), 3 (GRU) or 4 (LSTM).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

GATES: dict[str, list[tuple[str, str, str]]] = {
    "rnn": [("W_xh", "W_hh", "b_h")],
    "gru": [("W_xr", "W_hr", "b_r"), ("W_xz", "W_hz", "b_z"), ("W_xh", "W_hh", "b_h")],
    "lstm": [
        ("W_xi", "W_hi", "b_i"),
        ("W_xf", "W_hf", "b_f"),
        ("W_xc", "W_hc", "b_c"),
        ("W_xo", "W_ho", "b_o"),
    ],
}


def num_gates(kind: str) -> int:
    return len(GATES[kind])


def stacked(layer: nn.Module, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W_x (D, G*H), W_h (H, G*H), b (G*H,)) of a scratch layer, in cuDNN's gate order."""
    names = GATES[kind]
    W_x = torch.cat([getattr(layer, x) for x, _, _ in names], dim=1)
    W_h = torch.cat([getattr(layer, h) for _, h, _ in names], dim=1)
    b = torch.cat([getattr(layer, bias) for _, _, bias in names])
    return W_x, W_h, b


def torch_nn_parameters(layers, kind: str) -> dict[str, torch.Tensor]:
    """The parameters of scratch ``layers`` named and shaped as torch.nn.RNN/GRU/LSTM has them.

    weight_ih_l{i} (G*H, D), weight_hh_l{i} (G*H, H), bias_ih_l{i} and bias_hh_l{i} (G*H,),
    each built from the gate matrices transposed and stacked in one copy, differentiably.
    """
    params = {}
    for i, layer in enumerate(layers):
        names = GATES[kind]
        params[f"weight_ih_l{i}"] = torch.cat([getattr(layer, x).t() for x, _, _ in names])
        params[f"weight_hh_l{i}"] = torch.cat([getattr(layer, h).t() for _, h, _ in names])
        params[f"bias_ih_l{i}"] = torch.cat([getattr(layer, b) for _, _, b in names])
        params[f"bias_hh_l{i}"] = hidden_bias(layer, kind)
    return params


def hidden_bias(layer: nn.Module, kind: str) -> torch.Tensor:
    """The bias on the recurrent side (G*H,): zero, but for the GRU candidate's b_hh."""
    if kind == "gru":
        b_r, b_z, b_hh = (cast(torch.Tensor, getattr(layer, n)) for n in ("b_r", "b_z", "b_hh"))
        return torch.cat([torch.zeros_like(b_r), torch.zeros_like(b_z), b_hh])
    first_bias = getattr(layer, GATES[kind][0][2])
    return first_bias.new_zeros(num_gates(kind) * first_bias.shape[0])
