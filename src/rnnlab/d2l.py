"""The RNN chapters of Dive into Deep Learning (d2l 0.17, PyTorch, chapters 8-9) on rnnlab.

Replace ``from d2l import torch as d2l`` with ``from rnnlab import d2l`` and the
chapters' code runs as it is: the same names, signatures, defaults, return
values and printed lines, built on rnnlab's corpus, tokenizer and vocabulary.

    from torch import nn
    from rnnlab import d2l
    train_iter, vocab = d2l.load_data_time_machine(batch_size=32, num_steps=35)
    net = d2l.RNNModel(nn.GRU(len(vocab), 256), len(vocab)).to(d2l.try_gpu())
    d2l.train_ch8(net, train_iter, vocab, 1, 500, d2l.try_gpu())

Shapes: B batch size, T time steps, V vocabulary size, H hidden units.

Kept from the book on purpose, because results and printed text depend on them:

* ``read_time_machine`` cleans each line on its own, so joining the lines (as
  ``load_corpus_time_machine`` does) puts *no separator* between them: the
  last word of a line runs into the first word of the next.
* ``seq_data_iter_sequential`` draws its offset with ``random.randint(0, T)``,
  which includes T; ``seq_data_iter_random`` draws from [0, T - 1]. Both use
  Python's ``random`` module, lazily at the first batch, so ``random.seed(s)``
  gives the book's batches.
* ``RNNModel.begin_state(device, batch_size=1)`` takes the device first, but
  ``RNNModelScratch.begin_state(batch_size, device)`` the batch size first;
  the book's code calls both with keywords.
* ``tokenize`` with an unknown token type prints an error and returns None.
* ``train_ch8`` prints a 50-character prediction every 10 epochs, then the
  final perplexity line and two predictions. Its plot is live: in a notebook,
  one picture in the cell's output, replaced at every point (the book's clears
  the cell, hiding those predictions; here they stay, around the picture); in a
  script, a PNG file rewritten at every point. See :mod:`rnnlab.d2l_plot`
  (``$RNNLAB_D2L_PLOTS``, default the current folder).

Guide: docs/d2l.md
"""

from __future__ import annotations

import collections
import math
import random
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import corpus as _corpus
from . import train as _train
from .batches import sequential_partition
from .d2l_plot import Animator, plot, set_axes, set_figsize, use_svg_display
from .tokenize import d2l_lines
from .vocab import Vocab as _RnnlabVocab

__all__ = [  # noqa: RUF022 - grouped as the book introduces them, not sorted
    "try_gpu",
    "try_all_gpus",
    "Timer",
    "Accumulator",
    "sgd",
    "read_time_machine",
    "tokenize",
    "count_corpus",
    "Vocab",
    "load_corpus_time_machine",
    "seq_data_iter_random",
    "seq_data_iter_sequential",
    "SeqDataLoader",
    "load_data_time_machine",
    "RNNModelScratch",
    "RNNModel",
    "predict_ch8",
    "grad_clipping",
    "train_epoch_ch8",
    "train_ch8",
    "Animator",
    "plot",
    "set_axes",
    "set_figsize",
    "use_svg_display",
]


# ---------------------------------------------------------------- devices and small utilities


def try_gpu(i: int = 0) -> torch.device:
    """GPU number ``i`` if there is one, else the CPU."""
    if torch.cuda.device_count() >= i + 1:
        return torch.device(f"cuda:{i}")
    return torch.device("cpu")


def try_all_gpus():
    """Every GPU, or ``[cpu]`` if there is none."""
    gpus = [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    return gpus or [torch.device("cpu")]


class Timer:
    """A stopwatch that remembers every lap."""

    def __init__(self):
        self.times = []
        self.start()

    def start(self) -> None:
        self.tik = time.time()

    def stop(self) -> float:
        """End the current lap; returns its length in seconds."""
        self.times.append(time.time() - self.tik)
        return self.times[-1]

    def avg(self) -> float:
        return sum(self.times) / len(self.times)

    def sum(self) -> float:
        return sum(self.times)

    def cumsum(self):
        return np.array(self.times).cumsum().tolist()


class Accumulator:
    """``n`` running sums, added to together (e.g. total loss and number of tokens)."""

    def __init__(self, n: int):
        self.data = [0.0] * n

    def add(self, *args) -> None:
        # detach: float() of a tensor that requires grad works, but recent torch warns about it
        self.data = [
            total + float(x.detach() if isinstance(x, torch.Tensor) else x)
            for total, x in zip(self.data, args)
        ]

    def reset(self) -> None:
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx):
        return self.data[idx]


def sgd(params, lr: float, batch_size: int) -> None:
    """Minibatch SGD in place: p -= lr * p.grad / batch_size, then zero the gradients."""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


# ---------------------------------------------------------------- text and vocabulary (8.2)


def read_time_machine():
    """The Time Machine as a list of cleaned lines (3,221 of them).

    Each line of the file: every run of non-letters becomes one space, then strip
    and lowercase. The file is the copy shipped with rnnlab, checked against d2l's
    SHA-1 (:mod:`rnnlab.corpus`).
    """
    text = _corpus.read_text("timemachine")
    lines = d2l_lines(text)
    if text.endswith("\n"):  # the book reads with readlines(): no empty line after the last "\n"
        lines.pop()
    return lines


def tokenize(lines, token: str = "word"):
    """Split each line into words (``token='word'``) or characters (``'char'``): a list per line.

    Any other ``token`` prints ``ERROR: unknown token type: ...`` and returns None,
    as the book's function does.
    """
    if token == "word":
        return [line.split() for line in lines]
    if token == "char":
        return [list(line) for line in lines]
    print("ERROR: unknown token type: " + token)
    return None


def count_corpus(tokens) -> collections.Counter:
    """Token counts of a flat list of tokens, or of a list of lines of tokens."""
    if len(tokens) == 0 or isinstance(tokens[0], list):
        tokens = [token for line in tokens for token in line]
    return collections.Counter(tokens)


class Vocab(_RnnlabVocab):
    """The book's ``Vocab``: ``<unk>`` at index 0, then ``reserved_tokens``, then by frequency.

    ``tokens`` is a flat list or a list of lines (a 2-D list). Tokens seen fewer than
    ``min_freq`` times are left out; ``vocab[token]`` gives 0 for them. Ties in
    frequency keep the order of first appearance. ``token_freqs`` lists
    (token, count) pairs, most frequent first. One difference from the book: a
    repeated reserved token, or ``<unk>`` among them, is listed once, so indices
    stay dense.
    """

    def __init__(self, tokens=None, min_freq: int = 0, reserved_tokens=None):
        super().__init__(
            tokens if tokens is not None else [],
            min_freq,
            reserved_tokens if reserved_tokens is not None else [],
        )


def load_corpus_time_machine(max_tokens: int = -1):
    """(corpus, vocab): The Time Machine as a list of character indices and its 28-token vocabulary.

    The lines are joined with no separator (the book's quirk, see the module
    docstring): 170,580 indices in all, or the first ``max_tokens`` if it is > 0.
    """
    tokens = tokenize(read_time_machine(), "char")
    vocab = Vocab(tokens)
    corpus = [vocab[token] for line in tokens for token in line]
    if max_tokens > 0:
        corpus = corpus[:max_tokens]
    return corpus, vocab


# ---------------------------------------------------------------- minibatches (8.3)


def seq_data_iter_random(corpus, batch_size: int, num_steps: int):
    """Batches (X, Y) of shape (B, T) from random, non-overlapping pieces of ``corpus``.

    Drop a random first 0..T-1 tokens (``random.randint(0, T - 1)``), cut the rest
    into pieces of T tokens, shuffle their starts with ``random.shuffle``, and take
    B pieces per batch. Y is X one token later. Neighbouring batches are unrelated.
    """
    corpus = torch.as_tensor(corpus)[random.randint(0, num_steps - 1) :]
    num_subseqs = (len(corpus) - 1) // num_steps
    starts = list(range(0, num_subseqs * num_steps, num_steps))
    random.shuffle(starts)
    steps = torch.arange(num_steps)
    for i in range(0, batch_size * (num_subseqs // batch_size), batch_size):
        idx = torch.tensor(starts[i : i + batch_size]).reshape(-1, 1) + steps  # (B, T)
        yield corpus[idx], corpus[idx + 1]


def seq_data_iter_sequential(corpus, batch_size: int, num_steps: int):
    """Batches (X, Y) of shape (B, T) in which row b of a batch continues row b of the last.

    Drop a random first 0..T tokens (``random.randint(0, T)``: T included, as in the
    book), lay the rest out as B equal rows, and walk along them T columns at a
    time (the picture is in :mod:`rnnlab.batches`). Y is X one token later.
    """
    offset = random.randint(0, num_steps)
    ids = torch.as_tensor(corpus)
    if (len(ids) - offset - 1) // batch_size < num_steps:
        return  # too short for one batch: no batches, as in the book
    X, Y = sequential_partition(ids, batch_size, num_steps, offset)  # (num_batches, B, T)
    yield from zip(X, Y)


class SeqDataLoader:
    """The Time Machine's character indices as an iterable of (X, Y) batches, new each epoch."""

    def __init__(self, batch_size, num_steps, use_random_iter, max_tokens):
        self.data_iter_fn = seq_data_iter_random if use_random_iter else seq_data_iter_sequential
        self.corpus, self.vocab = load_corpus_time_machine(max_tokens)
        self.batch_size, self.num_steps = batch_size, num_steps

    def __iter__(self):
        return self.data_iter_fn(self.corpus, self.batch_size, self.num_steps)


def load_data_time_machine(batch_size, num_steps, use_random_iter=False, max_tokens=10000):
    """(data_iter, vocab) for the first ``max_tokens`` characters of The Time Machine."""
    data_iter = SeqDataLoader(batch_size, num_steps, use_random_iter, max_tokens)
    return data_iter, data_iter.vocab


# ---------------------------------------------------------------- models (8.5, 8.6)


class RNNModelScratch:
    """A model from raw tensors: ``get_params`` makes them, ``forward_fn`` runs the recurrence.

    ``net(X, state)``: X (B, T) token ids becomes one-hot X.T (T, B, V) float32, and
    ``forward_fn(inputs, state, params)`` returns (logits (T*B, V), new state).
    ``begin_state(batch_size, device)`` calls ``init_state(batch_size, H, device)``.
    """

    def __init__(self, vocab_size, num_hiddens, device, get_params, init_state, forward_fn):
        self.vocab_size, self.num_hiddens = vocab_size, num_hiddens
        self.params = get_params(vocab_size, num_hiddens, device)
        self.init_state, self.forward_fn = init_state, forward_fn

    def __call__(self, X, state):
        inputs = F.one_hot(X.T, self.vocab_size).type(torch.float32)  # (T, B, V)
        return self.forward_fn(inputs, state, self.params)

    def begin_state(self, batch_size, device):
        return self.init_state(batch_size, self.num_hiddens, device)


class RNNModel(nn.Module):
    """A torch.nn recurrent layer (nn.RNN, GRU, LSTM; deep or bidirectional) + a linear output.

    forward(inputs (B, T), state) -> (logits (T*B, V), state). The linear layer
    reads H features, or 2H when the layer is bidirectional. The state is a
    tensor (L * directions, B, H), or a pair (h, c) of them for an LSTM.
    """

    def __init__(self, rnn_layer, vocab_size, **kwargs):
        super().__init__(**kwargs)
        self.rnn = rnn_layer
        self.vocab_size = vocab_size
        self.num_hiddens = self.rnn.hidden_size
        self.num_directions = 2 if self.rnn.bidirectional else 1
        self.linear = nn.Linear(self.num_hiddens * self.num_directions, self.vocab_size)

    def forward(self, inputs, state):
        X = F.one_hot(inputs.T.long(), self.vocab_size).to(torch.float32)  # (T, B, V)
        Y, state = self.rnn(X, state)  # Y (T, B, H * directions)
        return self.linear(Y.reshape(-1, Y.shape[-1])), state

    def begin_state(self, device, batch_size=1):
        shape = (self.num_directions * self.rnn.num_layers, batch_size, self.num_hiddens)
        if isinstance(self.rnn, nn.LSTM):
            return torch.zeros(shape, device=device), torch.zeros(shape, device=device)
        return torch.zeros(shape, device=device)


# ---------------------------------------------------------------- prediction and training (8.5)


def predict_ch8(prefix, num_preds, net, vocab, device):
    """``prefix`` followed by ``num_preds`` greedy predictions, as one string.

    The prefix is fed one character at a time to warm the state up; then each
    step feeds the last output back in and appends the most likely next token.
    """
    state = net.begin_state(batch_size=1, device=device)
    outputs = [vocab[prefix[0]]]

    def last_output():
        return torch.tensor([outputs[-1]], device=device).reshape(1, 1)  # (B=1, T=1)

    with torch.no_grad():  # no training here: skip building the autograd graph
        for y in prefix[1:]:
            _, state = net(last_output(), state)
            outputs.append(vocab[y])
        for _ in range(num_preds):
            logits, state = net(last_output(), state)  # (1, V)
            outputs.append(int(logits.argmax(dim=1).reshape(1)))
    return "".join(vocab.idx_to_token[i] for i in outputs)


def grad_clipping(net, theta):
    """Scale the gradients of ``net`` so their global L2 norm is at most ``theta`` (8.5.5).

    ``net`` is an nn.Module (its parameters that require gradients) or an
    RNNModelScratch (its ``params``).
    """
    if isinstance(net, nn.Module):
        params = [p for p in net.parameters() if p.requires_grad]
    else:
        params = net.params
    _train.grad_clipping(params, theta)


def _detach_in_place(net, state) -> None:
    # In place, as the book does, so that a caller holding the state sees it cut too.
    if isinstance(net, nn.Module) and not isinstance(state, tuple):
        state.detach_()
    else:
        for s in state:
            s.detach_()


def train_epoch_ch8(net, train_iter, loss, updater, device, use_random_iter):
    """One epoch; returns (perplexity, tokens per second).

    The state starts at zero for every batch with random sampling, and is carried
    (detached) from batch to batch with sequential sampling. ``updater`` is a
    torch optimizer or a function ``updater(batch_size=...)`` such as ``sgd``;
    the loss is already a mean, so the function gets batch_size=1. Gradients are
    clipped to norm 1.
    """
    state, timer = None, Timer()
    metric = Accumulator(2)  # sum of losses, number of tokens
    for X, Y in train_iter:
        if state is None or use_random_iter:
            state = net.begin_state(batch_size=X.shape[0], device=device)
        else:
            _detach_in_place(net, state)
        y = Y.T.reshape(-1)  # time-major, like the logits rows
        X, y = X.to(device), y.to(device)
        y_hat, state = net(X, state)
        l = loss(y_hat, y.long()).mean()
        if isinstance(updater, torch.optim.Optimizer):
            updater.zero_grad()
            l.backward()
            grad_clipping(net, 1)
            updater.step()
        else:
            l.backward()
            grad_clipping(net, 1)
            updater(batch_size=1)
        metric.add(l * y.numel(), y.numel())
    return math.exp(metric[0] / metric[1]), metric[1] / timer.stop()


def train_ch8(net, train_iter, vocab, lr, num_epochs, device, use_random_iter=False):
    """Train a character model with SGD at rate ``lr``, printing as the book does.

    Every 10 epochs: print a 50-character continuation of 'time traveller' and add
    the perplexity to the plot (live in a notebook's cell output, else a PNG file:
    see :mod:`rnnlab.d2l_plot`). At the end:
    ``perplexity P, S tokens/sec on DEVICE`` (for the last epoch), then
    continuations of 'time traveller' and 'traveller'.
    """
    loss = nn.CrossEntropyLoss()
    animator = Animator(
        xlabel="epoch", ylabel="perplexity", legend=["train"], xlim=[10, num_epochs]
    )
    updater: Any  # an optimizer, or the book's sgd as a function of the batch size
    if isinstance(net, nn.Module):
        updater = torch.optim.SGD(net.parameters(), lr)
    else:

        def updater(batch_size):
            return sgd(net.params, lr, batch_size)

    def predict(prefix):
        return predict_ch8(prefix, 50, net, vocab, device)

    for epoch in range(num_epochs):
        ppl, speed = train_epoch_ch8(net, train_iter, loss, updater, device, use_random_iter)
        if (epoch + 1) % 10 == 0:
            print(predict("time traveller"))
            animator.add(epoch + 1, [ppl])
    print(f"perplexity {ppl:.1f}, {speed:.1f} tokens/sec on {device!s}")
    print(predict("time traveller"))
    print(predict("traveller"))
