"""Language models behind one interface.

Every model takes X (B, T) token ids and a state, and returns logits (T*B, V)
(time-major rows) and the new state; ``begin_state(B, device)`` gives the zero
state. ``build_model`` makes one from a few settings.
"""
from __future__ import annotations

from ..errors import RnnlabError
from .scratch import ScratchLM
from .torchnn import RNNEncoder, TorchLM

KINDS = ("rnn", "gru", "lstm")
IMPLS = ("scratch", "torch", "fused")


def build_model(impl: str, kind: str, vocab_size: int, num_hiddens: int, num_layers: int = 1,
                dropout: float = 0.0, embedding_dim: int = 0, tie_weights: bool = False):
    """A language model of the given implementation and kind."""
    if kind not in KINDS:
        raise RnnlabError(f"unknown model {kind!r}; choose one of {', '.join(KINDS)}")
    if impl == "torch":
        return TorchLM(vocab_size, num_hiddens, num_layers, kind, dropout, embedding_dim, tie_weights)
    if impl in ("scratch", "fused"):
        extras = [name for name, value in (("--dropout", dropout), ("--embedding", embedding_dim),
                                           ("--tie-weights", tie_weights)) if value]
        if extras:
            raise RnnlabError(f"{', '.join(extras)} need(s) --impl torch; the {impl} models are "
                             f"the book's one-hot models")
        if impl == "scratch":
            return ScratchLM(vocab_size, num_hiddens, num_layers, kind)
        from .fused import FusedLM
        return FusedLM(vocab_size, num_hiddens, num_layers, kind)
    raise RnnlabError(f"unknown implementation {impl!r}; choose one of {', '.join(IMPLS)}")


__all__ = ["ScratchLM", "TorchLM", "RNNEncoder", "build_model", "KINDS", "IMPLS"]
