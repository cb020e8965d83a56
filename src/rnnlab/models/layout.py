"""How a scratch layer's per-gate parameters stack into the matrices fast code uses.

torch.nn and the fused implementations keep all gates of a layer in one matrix;
the gate order is cuDNN's (GRU: reset, update, candidate; LSTM: input, forget,
candidate, output), as each cell's entry in ``rnnlab.models.cells`` lists them.
``stacked`` builds the column-stacked matrices

    W_x (D, G*H),  W_h (H, G*H),  b (G*H,)

from a scratch layer, differentiably, so gradients flow back to the scratch
parameters. G is 1 (RNN), 3 (GRU) or 4 (LSTM).

Stacking copies every weight once per forward pass (and the gradients once per
backward pass). ``pack`` removes both copies: it moves a layer's gate parameters
into one block per kind, laid out as torch.nn's W_ih (G*H, D), W_hh (G*H, H) and
bias (G*H,), each scratch parameter becoming a transposed slice of its block
(same names, shapes and values). ``torch_nn_parameters`` and ``stacked`` then
return views of the blocks, and their backward passes hand each parameter its
slice of the block's gradient. Anything that gives a parameter new memory
(``.double()``, ``load_state_dict(assign=True)``) only undoes the packing: the
functions check it on every call and copy as before when it does not hold.
"""

from __future__ import annotations

import torch
from torch import nn

from .cells import CELLS


def num_gates(kind: str) -> int:
    return CELLS[kind].num_gates


def stacked(layer: nn.Module, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W_x (D, G*H), W_h (H, G*H), b (G*H,)) of a scratch layer, in cuDNN's gate order."""
    names = CELLS[kind].gates
    if is_packed(layer, kind):
        W_ih, W_hh, b = _blocks(layer, kind)
        return W_ih.t(), W_hh.t(), b
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
        names = CELLS[kind].gates
        if is_packed(layer, kind):
            W_ih, W_hh, b = _blocks(layer, kind)
        else:
            W_ih = torch.cat([getattr(layer, x).t() for x, _, _ in names])
            W_hh = torch.cat([getattr(layer, h).t() for _, h, _ in names])
            b = torch.cat([getattr(layer, b) for _, _, b in names])
        params[f"weight_ih_l{i}"] = W_ih
        params[f"weight_hh_l{i}"] = W_hh
        params[f"bias_ih_l{i}"] = b
        params[f"bias_hh_l{i}"] = hidden_bias(layer, kind)
    return params


@torch.no_grad()
def pack(layer: nn.Module, kind: str) -> None:
    """Move the gate parameters of scratch ``layer`` into torch.nn-shaped blocks, in place.

    Per kind of parameter one block: W_ih (G*H, D), W_hh (G*H, H), bias (G*H,); the
    parameter of gate k (D, H) becomes rows [k*H, (k+1)*H) of its block, transposed.
    The Parameter objects stay the same (an optimizer holding them is unaffected);
    values are kept. Their gradients are then strided as the parameters are.
    """
    names = CELLS[kind].gates
    for k in range(3):  # input weights, recurrent weights, biases
        params = [getattr(layer, n[k]) for n in names]
        block = torch.cat([p.t() if p.dim() == 2 else p for p in params])  # (G*H, D) or (G*H,)
        H = params[0].shape[-1]
        for g, p in enumerate(params):
            part = block[g * H : (g + 1) * H]
            p.data = part.t() if p.dim() == 2 else part
            if p.grad is not None:  # keep a gradient's values, in the parameter's new layout
                p.grad = torch.empty_like(p).copy_(p.grad)


def is_packed(layer: nn.Module, kind: str) -> bool:
    """Whether ``pack`` laid out ``layer``'s parameters and they still share its blocks."""
    names = CELLS[kind].gates
    return all(_is_block([getattr(layer, n[k]) for n in names]) for k in range(3))


def _is_block(params: list[torch.Tensor]) -> bool:
    """Whether the gate tensors (D, H) or (H,) are consecutive slices of one (G*H, ...) block."""
    first = params[0]
    size = first.numel()
    stride = (1, first.shape[0]) if first.dim() == 2 else (1,)
    storage = first.untyped_storage().data_ptr()
    return all(
        p.untyped_storage().data_ptr() == storage
        and p.shape == first.shape
        and p.stride() == stride
        and p.storage_offset() == first.storage_offset() + g * size
        for g, p in enumerate(params)
    )


class _Blocks(torch.autograd.Function):
    """A packed layer's three blocks as differentiable views (no copy), in one autograd node.

    Inputs: the G input weights (D, H), the G recurrent weights (H, H) and the G biases
    (H,) of a packed layer; outputs W_ih (G*H, D), W_hh (G*H, H), b (G*H,).
    """

    @staticmethod
    def forward(ctx, *params: torch.Tensor):
        G = len(params) // 3
        ctx.gates = G
        W_x, W_h, b = params[0], params[G], params[2 * G]
        (D, H), (Hh, _) = W_x.shape, W_h.shape
        return (
            W_x.as_strided((G * H, D), (D, 1)),
            W_h.as_strided((G * H, Hh), (Hh, 1)),
            b.as_strided((G * H,), (1,)),
        )

    @staticmethod
    def backward(ctx, dW_ih, dW_hh, db):
        G = ctx.gates
        grads: list[torch.Tensor | None] = []
        for grad in (dW_ih, dW_hh):
            grads += [None] * G if grad is None else [part.t() for part in grad.chunk(G)]
        grads += [None] * G if db is None else list(db.chunk(G))
        return tuple(grads)


def _blocks(layer: nn.Module, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W_ih (G*H, D), W_hh (G*H, H), b (G*H,)) of a packed layer, as views of its blocks."""
    names = CELLS[kind].gates
    return _Blocks.apply(*(getattr(layer, n[k]) for k in range(3) for n in names))


def hidden_bias(layer: nn.Module, kind: str) -> torch.Tensor:
    """The bias on the recurrent side (G*H,): zero, but for a cell's ``recurrent_bias`` (the
    GRU's b_hh), which sits in the last gate's block."""
    cell = CELLS[kind]
    first_bias = getattr(layer, cell.gates[0][2])
    H = first_bias.shape[0]
    if cell.recurrent_bias is None:
        return first_bias.new_zeros(cell.num_gates * H)
    return torch.cat(
        [first_bias.new_zeros((cell.num_gates - 1) * H), getattr(layer, cell.recurrent_bias)]
    )
