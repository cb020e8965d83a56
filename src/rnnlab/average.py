"""An exponential moving average of a model's weights (``rnnlab train --ema DECAY``).

After every update k (from 1), each averaged parameter a of parameter w becomes

    a <- d_k a + (1 - d_k) w,      d_k = min(DECAY, (1 + k) / (10 + k))

so that the first updates, when the weights move most, are not held back by the
initial weights (the ramp of TensorFlow's ExponentialMovingAverage with num_updates).
Averaging the iterates of SGD is Polyak & Juditsky (1992); AWD-LSTM's averaged SGD
(Merity et al. 2017) is the form language models made famous. k is the run's batch
count, which the checkpoint already holds, so a resumed run averages as the
uninterrupted one would.

With --ema the averaged weights are the model: validation scores them, the best
checkpoint is chosen on them, and the checkpoint's model.safetensors holds them (what
``eval``, ``generate`` and ``export`` read). The weights being trained are kept in the
checkpoint's trainer tensors, for --resume.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

RAMP = 10  # d_k's ramp: (1 + k) / (RAMP + k)


def decay_at(decay: float, updates: int) -> float:
    """d_k: the weight the average keeps at update ``updates`` (from 1)."""
    return min(decay, (1 + updates) / (RAMP + updates))


class WeightAverage:
    """The moving average of ``model``'s parameters (buffers are not averaged)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.params: list[torch.Tensor] = list(model.parameters())  # tied weights appear once
        self.averaged = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, updates: int) -> None:
        """Fold the current weights in, after update number ``updates`` (from 1)."""
        weight = 1.0 - decay_at(self.decay, updates)
        torch._foreach_lerp_(self.averaged, [p.detach() for p in self.params], weight)

    @torch.no_grad()
    def restart_from(self, model: nn.Module) -> None:
        """Make the average ``model``'s current parameters (a restored checkpoint's)."""
        for a, p in zip(self.averaged, model.parameters(), strict=True):
            a.copy_(p.detach())

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block, the model's parameters hold the averaged values; after it,
        the training weights again (copied in place, so that the optimizer, a CUDA graph
        or DistributedDataParallel keep the tensors they hold)."""
        with torch.no_grad():
            training = [p.detach().clone() for p in self.params]
            torch._foreach_copy_(self.params, self.averaged)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, training)
