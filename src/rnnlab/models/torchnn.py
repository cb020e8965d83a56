"""The same language models on torch.nn's recurrent layers (d2l 8.6, 9.3, 9.4).

Same interface as :mod:`rnnlab.models.scratch`: forward(X (B, T), state) ->
(logits (T*B, V), state) and begin_state(B, device). Adds what the scratch
models leave out: dropout between layers, nn.Embedding input instead of
one-hot, and weight tying (the output layer shares the embedding matrix;
Press & Wolf 2017, Inan et al. 2017), which needs embedding size == hidden size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RnnlabError
from . import layout
from .scratch import ScratchLM

RECURRENT = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class RNNEncoder(nn.Module):
    """A (possibly bidirectional) recurrent encoder over one-hot or embedded tokens.

    X (B, T) -> outputs (T, B, H * directions), state. Bidirectional encoders see
    the whole sequence, which is fine for encoding and wrong for a language model.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden: int,
        layers: int = 1,
        cell: str = "rnn",
        dropout: float = 0.0,
        embedding: int = 0,
        bidirectional: bool = False,
    ):
        super().__init__()
        self.vocab_size, self.hidden, self.cell = vocab_size, hidden, cell
        self.num_directions = 2 if bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, embedding) if embedding else None
        self.rnn = RECURRENT[cell](
            embedding or vocab_size,
            hidden,
            layers,
            dropout=dropout if layers > 1 else 0.0,
            bidirectional=bidirectional,
        )

    def begin_state(self, batch_size: int, device=None):
        """Zero state (L*directions, B, H), or a pair of them for the LSTM."""
        weight = next(self.rnn.parameters())
        shape = (self.rnn.num_layers * self.num_directions, batch_size, self.hidden)
        zeros = torch.zeros(
            shape, device=device if device is not None else weight.device, dtype=weight.dtype
        )
        return (zeros, zeros.clone()) if self.cell == "lstm" else zeros

    def encode(self, X: torch.Tensor, state):
        """X (B, T) -> outputs (T, B, H*directions), state."""
        if self.embedding is not None:
            inputs = self.embedding(X.T)  # (T, B, E)
        else:
            inputs = F.one_hot(X.T, self.vocab_size).to(next(self.rnn.parameters()).dtype)
        return self.rnn(inputs, state)


class TorchLM(RNNEncoder):
    """Language model: nn.RNN/GRU/LSTM + a linear output layer."""

    def __init__(
        self,
        vocab_size: int,
        hidden: int,
        layers: int = 1,
        cell: str = "rnn",
        dropout: float = 0.0,
        embedding: int = 0,
        tie_weights: bool = False,
        bidirectional: bool = False,
    ):
        if bidirectional:
            raise RnnlabError(
                "a bidirectional model cannot be a language model: its backward "
                "direction has already read the token it must predict; use a "
                "unidirectional model (bidirectional RNNs are for encoders)"
            )
        if tie_weights and embedding != hidden:
            raise RnnlabError(
                f"tied weights need an embedding size equal to the hidden size "
                f"(got embedding {embedding}, hidden {hidden})"
            )
        super().__init__(vocab_size, hidden, layers, cell, dropout, embedding)
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden, vocab_size)
        if tie_weights and self.embedding is not None:
            self.linear.weight = self.embedding.weight

    def forward(self, X: torch.Tensor, state):
        """X (B, T), state -> logits (T*B, V), state."""
        outputs, state = self.encode(X, state)  # (T, B, H)
        logits = self.linear(self.drop(outputs).reshape(-1, self.hidden))
        return logits, state

    @torch.no_grad()
    def copy_from_scratch(self, scratch: ScratchLM) -> TorchLM:
        """Load the weights of a one-hot ScratchLM of the same shape (for equivalence tests)."""
        if self.embedding is not None:
            raise RnnlabError("only a one-hot model has the scratch model's parameters")
        for name, value in layout.torch_nn_parameters(scratch.layers, self.cell).items():
            getattr(self.rnn, name).copy_(value)
        self.linear.weight.copy_(scratch.W_hq.T)
        self.linear.bias.copy_(scratch.b_q)
        return self
