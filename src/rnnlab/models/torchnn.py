"""The same language models on torch.nn's recurrent layers (d2l 8.6, 9.3, 9.4).

Same interface as :mod:`rnnlab.models.scratch`: forward(X (B, T), state) ->
(logits (T*B, V), state) and begin_state(B, device). Adds what the scratch
models leave out: nn.Embedding input instead of one-hot; dropout on the input,
between layers and on the output, either a fresh mask per element (torch.nn's)
or one mask per stream reused at every step (locked, or variational, dropout;
Gal & Ghahramani 2016, Merity et al. 2017); weight tying (the output layer
shares the embedding matrix; Press & Wolf 2017, Inan et al. 2017), which needs
embedding size == hidden size; and an adaptive softmax output layer (Grave et
al. 2017), with which forward returns the features (T*B, H) that its
``adaptive`` module turns into log-probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RnnlabError
from .cells import CELLS, state_of, state_parts, zero_state
from .layout import torch_nn_parameters
from .scratch import ScratchLM

# The recurrent layer of each cell is its registry entry's torch_class (with its
# torch_options); locked dropout calls the entry's kernel, the function that class calls,
# a layer at a time on the layer's own parameters of the nn module.
LAYER_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # torch.nn's names, _l{k}

# Each tail cluster of the adaptive softmax projects H features down to H // 4**(i+1)
# before its own output matrix (Grave et al. 2017: rarer words, smaller capacity).
ADAPTIVE_DIV = 4

# Tied weights start uniform in [-0.1, 0.1] (word_language_model's and AWD-LSTM's range).
TIED_INIT_RANGE = 0.1


def adaptive_cutoffs(vocab_size: int, hidden: int, cutoffs: Sequence[int] = ()) -> list[int]:
    """The adaptive softmax's cluster boundaries for V = ``vocab_size`` token ids.

    Token ids below the first cutoff form the head, scored for every position;
    each later range [c_i, c_{i+1}) is a tail cluster. Ids are most frequent first
    (see :mod:`rnnlab.vocab`), so the head holds the frequent tokens. Empty
    ``cutoffs`` means V//20 and V//4 (those below 1 dropped). Raises RnnlabError
    where a cutoff is not below V, where nothing is left for a tail, or where
    the last cluster's projection would have no units.
    """
    V = vocab_size
    if cutoffs:
        chosen = list(cutoffs)
        if chosen[-1] >= V:
            raise RnnlabError(
                f"--cutoffs {','.join(map(str, chosen))} must each be below the vocabulary "
                f"size {V:,}; give smaller cutoffs, or leave --cutoffs out for {V // 20},"
                f"{V // 4}"
            )
    else:
        chosen = sorted({c for c in (V // 20, V // 4) if 0 < c < V})
        if not chosen:
            raise RnnlabError(
                f"a vocabulary of {V} tokens is too small for --adaptive-softmax; leave it out"
            )
    width = hidden // ADAPTIVE_DIV ** len(chosen)
    if width == 0:
        raise RnnlabError(
            f"--hidden {hidden} is too small for {len(chosen)} adaptive softmax clusters: "
            f"the last one would project to {hidden} // {ADAPTIVE_DIV ** len(chosen)} = 0 "
            f"units; give --hidden at least {ADAPTIVE_DIV ** len(chosen)} or fewer --cutoffs"
        )
    return chosen


class Dropout(nn.Module):
    """Dropout on x (T, B, F): each entry kept with probability 1-p and scaled by 1/(1-p).

    Draws what F.dropout(x, p) draws, from torch's global generator. After
    :meth:`share_masks`, the mask is drawn for all the streams of a larger batch and
    only this batch's rows of it are used: a process that trains some streams of a
    data-parallel run then drops out exactly what one process training them all would.
    Identity in eval mode and for p = 0.
    """

    locked = False

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.streams: slice | None = None  # this batch's rows of the batch masks are drawn for
        self.total_streams = 0

    def share_masks(self, streams: slice, total: int) -> None:
        """Draw masks for ``total`` streams and keep rows ``streams`` (see the class)."""
        self.streams, self.total_streams = streams, total

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """A fresh mask for x (T, B, F): (T, B, F), or (1, B, F) when ``locked``."""
        keep = 1.0 - self.p
        shape = [1 if self.locked else x.shape[0], *x.shape[1:]]
        if self.streams is not None:
            shape[1] = self.total_streams
        mask = x.new_empty(shape).bernoulli_(keep).div_(keep)
        return mask if self.streams is None else mask[:, self.streams]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * self.mask(x)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LockedDropout(Dropout):
    """Dropout with one mask per stream, the same at every time step (Gal & Ghahramani 2016).

    x (T, B, F) -> x * m, m (1, B, F) with entries 0 (probability p) or 1/(1-p), so
    E[x * m] = x. Identity in eval mode and for p = 0.
    """

    locked = True


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
        self.rnn = CELLS[cell].torch_class(
            embedding or vocab_size,
            hidden,
            layers,
            dropout=dropout if layers > 1 else 0.0,
            bidirectional=bidirectional,
            **CELLS[cell].torch_options,
        )

    def begin_state(self, batch_size: int, device=None):
        """Zero state (L*directions, B, H), or a tuple of them for a state of several parts."""
        weight = next(self.rnn.parameters())
        shape = (self.rnn.num_layers * self.num_directions, batch_size, self.hidden)
        device = device if device is not None else weight.device
        return zero_state(self.cell, shape, device, weight.dtype)

    def embed(self, X: torch.Tensor) -> torch.Tensor:
        """X (B, T) -> the first layer's inputs (T, B, E), or one-hot (T, B, V)."""
        if self.embedding is not None:
            return self.embedding(X.T)
        return F.one_hot(X.T, self.vocab_size).to(next(self.rnn.parameters()).dtype)

    def encode(self, X: torch.Tensor, state):
        """X (B, T) -> outputs (T, B, H*directions), state."""
        return self.rnn(self.embed(X), state)


class TorchLM(RNNEncoder):
    """Language model: nn.RNN/GRU/LSTM + a linear output layer (or an adaptive softmax).

    dropout: on each layer's output (between layers by nn.RNN/GRU/LSTM, and on the
    last layer's output by ``drop``); dropout_input: on the first layer's input.
    With ``locked_dropout`` both draw one mask per stream per forward call
    (:class:`LockedDropout`); training then runs stacked layers one at a time, on
    the same parameters, so the state_dict does not depend on it. With
    ``adaptive_softmax`` the output layer is ``adaptive``, an
    nn.AdaptiveLogSoftmaxWithLoss over :func:`adaptive_cutoffs`, and forward
    returns the (dropped-out) features it reads instead of logits.
    """

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
        *,
        dropout_input: float = 0.0,
        locked_dropout: bool = False,
        adaptive_softmax: bool = False,
        cutoffs: Sequence[int] = (),
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
        if tie_weights and adaptive_softmax:
            raise RnnlabError("tied weights are not supported with an adaptive softmax")
        # Locked dropout between layers is applied here, so nn.RNN/GRU/LSTM gets none.
        super().__init__(
            vocab_size, hidden, layers, cell, 0.0 if locked_dropout else dropout, embedding
        )
        self.dropout, self.locked_dropout = dropout, locked_dropout
        Drop = LockedDropout if locked_dropout else Dropout
        self.drop = Drop(dropout)
        self.drop_input = Drop(dropout_input) if dropout_input else None
        self.linear: nn.Linear | None = None
        self.adaptive: nn.AdaptiveLogSoftmaxWithLoss | None = None
        if adaptive_softmax:
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(
                hidden,
                vocab_size,
                adaptive_cutoffs(vocab_size, hidden, cutoffs),
                div_value=ADAPTIVE_DIV,
                head_bias=True,  # as the full softmax's bias: the frequent tokens' prior
            )
        else:
            self.linear = nn.Linear(hidden, vocab_size)
            if tie_weights and self.embedding is not None:
                # The shared matrix is also the output layer, so it starts small, as in
                # word_language_model and AWD-LSTM (uniform in +-0.1): nn.Embedding's
                # N(0, 1) would start the logits with a spread of about sqrt(H).
                nn.init.uniform_(self.embedding.weight, -TIED_INIT_RANGE, TIED_INIT_RANGE)
                self.linear.weight = self.embedding.weight

    def forward(self, X: torch.Tensor, state):
        """X (B, T), state -> logits (T*B, V), state; features (T*B, H) with ``adaptive``."""
        inputs = self.embed(X)  # (T, B, E) or one-hot (T, B, V)
        if self.drop_input is not None:
            inputs = self.drop_input(inputs)
        own_masks = self.locked_dropout or self.drop.streams is not None
        if own_masks and self.training and self.dropout > 0 and self.rnn.num_layers > 1:
            outputs, state = self._layers_one_at_a_time(inputs, state)
        else:
            outputs, state = self.rnn(inputs, state)  # (T, B, H)
        features = self.drop(outputs).reshape(-1, self.hidden)  # (T*B, H)
        if self.linear is None:
            return features, state
        return self.linear(features), state

    def share_masks(self, streams: slice, total: int) -> None:
        """Train on rows ``streams`` of batches of ``total`` streams, dropping out exactly
        what the whole batch would (:meth:`Dropout.share_masks`): for data-parallel
        training. Stacked layers then run one at a time, the masks between them drawn here."""
        for drop in (self.drop, self.drop_input):
            if drop is not None:
                drop.share_masks(streams, total)

    def _layers_one_at_a_time(self, inputs: torch.Tensor, state):
        """inputs (T, B, D), state (L, B, H) or a pair -> outputs (T, B, H), new state.

        What ``self.rnn`` computes, one layer at a time with ``self.drop``'s mask on the
        input of every layer above the first (the last layer's output is forward's).
        """
        kernel = CELLS[self.cell].kernel
        x, last = inputs, []
        for k in range(self.rnn.num_layers):
            if k > 0:
                x = self.drop(x)
            weights = [getattr(self.rnn, f"{name}_l{k}") for name in LAYER_WEIGHTS]
            hx = state_of(part[k : k + 1] for part in state_parts(state))
            x, *layer_last = kernel(x, hx, weights, True, 1, 0.0, self.training, False, False)
            last.append(layer_last)  # each part (1, B, H)
        return x, state_of(torch.cat(parts) for parts in zip(*last))  # (L, B, H) per part

    @torch.no_grad()
    def copy_from_scratch(self, scratch: ScratchLM) -> TorchLM:
        """Load the weights of a one-hot ScratchLM of the same shape (for equivalence tests)."""
        if self.embedding is not None or self.linear is None:
            raise RnnlabError(
                "only a one-hot model with a full softmax has the scratch model's parameters"
            )
        for name, value in torch_nn_parameters(scratch.layers, self.cell).items():
            getattr(self.rnn, name).copy_(value)
        self.linear.weight.copy_(scratch.W_hq.T)
        self.linear.bias.copy_(scratch.b_q)
        return self
