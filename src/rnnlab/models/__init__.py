"""Language models behind one interface.

Every model takes X (B, T) token ids and a state, and returns logits (T*B, V)
(time-major rows) and the new state; ``begin_state(B, device)`` gives the zero
state. ``build_model(config, V)`` makes the one a ``ModelConfig`` describes.

Adding a cell or an implementation touches this module (its name in ``CELLS`` or
``IMPLS``) and the module that computes it; the configuration, the command line
and the docs take their lists from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from .scratch import LAYERS, ScratchLM
from .torchnn import RECURRENT, RNNEncoder, TorchLM

if TYPE_CHECKING:  # config imports this module for its lists of choices
    from ..config import ModelConfig

# The recurrent cells: the book's layer in scratch.py, torch.nn's in torchnn.py.
CELLS = tuple(LAYERS)
assert CELLS == tuple(RECURRENT), "scratch.py and torchnn.py must offer the same cells"

# Each implementation and what it is, in the words the command line's --help shows.
IMPLS = {
    "scratch": "the book's loops over raw tensors (models/scratch.py)",
    "torch": "torch.nn's RNN/GRU/LSTM; adds embedding, dropout and weight tying",
    "fused": "the scratch model's function and parameters, computed fast",
}
ONE_HOT_IMPLS = ("scratch", "fused")  # the book's one-hot models: the same parameters


def usable_impl(impl: str) -> tuple[str, str | None]:
    """The implementation that will run for ``impl``, and why it differs (or None).

    ``fused`` falls back to ``scratch`` (the same function and parameters, only
    slower) where its module cannot be imported.
    """
    if impl == "fused":
        try:
            from . import fused  # noqa: F401
        except ImportError as e:
            return "scratch", f"the fused implementation is not available ({e})"
    return impl, None


def build_model(config: ModelConfig, vocab_size: int) -> nn.Module:
    """The language model ``config`` describes, for a vocabulary of ``vocab_size`` (V) tokens."""
    impl, _ = usable_impl(config.impl)
    if impl == "torch":
        return TorchLM(
            vocab_size,
            config.hidden,
            config.layers,
            config.cell,
            config.dropout,
            config.embedding,
            config.tie_weights,
        )
    if impl == "scratch":
        return ScratchLM(vocab_size, config.hidden, config.layers, config.cell)
    from .fused import FusedLM

    return FusedLM(vocab_size, config.hidden, config.layers, config.cell)


__all__ = [
    "ScratchLM",
    "TorchLM",
    "RNNEncoder",
    "build_model",
    "usable_impl",
    "CELLS",
    "IMPLS",
    "ONE_HOT_IMPLS",
]
