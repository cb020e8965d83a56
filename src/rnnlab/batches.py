"""Minibatches: a 1-D tensor of token ids -> (X, Y) pairs of shape (B, T).

Y is X shifted one token ahead. Two ways to cut the corpus, as in d2l 8.3:

Sequential partitioning (state can be carried from batch to batch). With a
corpus ``a b c d ... x``, B = 2 streams and T = 3 steps, after a random offset
the usable tokens are laid out as B rows, and batch i takes columns
[i*T, (i+1)*T)::

    stream 0:  a b c | d e f | g h i
    stream 1:  j k l | m n o | p q r
               batch0  batch1  batch2

so row b of batch i+1 continues row b of batch i position for position.

Random partitioning: after a random offset the corpus is cut into
non-overlapping subsequences of T tokens, shuffled, and B of them make a
batch; neighbouring batches are unrelated, so each starts from a fresh state.

An epoch's random choices (offset, shuffle) come from a generator seeded with
(seed, epoch): any epoch's batches can be rebuilt exactly, which is what makes
resuming in the middle of an epoch exact.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import RnnlabError
from .options import SAMPLINGS


def min_tokens(batch_size: int, num_steps: int) -> int:
    """The fewest tokens that make one (X, Y) batch: B*T inputs plus one more target."""
    return batch_size * num_steps + 1


def check_sizes(batch_size: int, num_steps: int) -> None:
    if batch_size < 1 or num_steps < 1:
        raise RnnlabError(
            f"batch_size and num_steps must be at least 1, got batch_size "
            f"{batch_size} and num_steps {num_steps}; give positive sizes"
        )


def check_length(n_tokens: int, batch_size: int, num_steps: int, what: str = "the corpus") -> None:
    check_sizes(batch_size, num_steps)
    need = min_tokens(batch_size, num_steps)
    if n_tokens < need:
        raise RnnlabError(
            f"{what} is too short for one batch: it has {n_tokens} tokens, and "
            f"batch_size {batch_size} x num_steps {num_steps} needs at least {need}; "
            f"use more text or a smaller --batch-size/--num-steps"
        )


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator for epoch ``epoch``'s offset and shuffle."""
    if seed < 0 or epoch < 0:  # numpy's SeedSequence takes only non-negative integers
        raise RnnlabError(
            f"seed and epoch must be non-negative, got seed {seed} and epoch "
            f"{epoch}; give a seed of 0 or more"
        )
    return np.random.default_rng([seed, epoch])


def _random_offset(rng: np.random.Generator, n_tokens: int, batch_size: int, num_steps: int) -> int:
    # d2l draws the offset from [0, T); never start so late that no batch fits.
    largest = min(num_steps - 1, n_tokens - min_tokens(batch_size, num_steps))
    return int(rng.integers(0, largest + 1))


def sequential_partition(
    corpus: torch.Tensor, batch_size: int, num_steps: int, offset: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """All of an epoch's sequential batches at once.

    corpus: (N,) token ids. Returns X, Y of shape (num_batches, B, T); batch i is
    ``X[i]``, and ``X[i+1][b]`` continues ``X[i][b]``.
    """
    per_stream = (len(corpus) - offset - 1) // batch_size
    num_batches = per_stream // num_steps
    used = batch_size * per_stream
    Xs = corpus[offset : offset + used].reshape(batch_size, per_stream)
    Ys = corpus[offset + 1 : offset + 1 + used].reshape(batch_size, per_stream)
    # (B, nb*T) -> (B, nb, T) -> (nb, B, T)
    span = num_batches * num_steps
    X = Xs[:, :span].reshape(batch_size, num_batches, num_steps).transpose(0, 1)
    Y = Ys[:, :span].reshape(batch_size, num_batches, num_steps).transpose(0, 1)
    return X.contiguous(), Y.contiguous()


def random_partition(
    corpus: torch.Tensor, batch_size: int, num_steps: int, offset: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """All of an epoch's randomly partitioned batches: X, Y of shape (num_batches, B, T)."""
    num_subseqs = (len(corpus) - offset - 1) // num_steps
    num_batches = num_subseqs // batch_size
    starts = offset + num_steps * torch.from_numpy(rng.permutation(num_subseqs))
    starts = starts[: num_batches * batch_size].reshape(num_batches, batch_size, 1)
    idx = starts + torch.arange(num_steps)  # (nb, B, T) positions in the corpus
    return corpus[idx], corpus[idx + 1]


def epoch_batches(
    corpus: torch.Tensor, batch_size: int, num_steps: int, sampling: str, seed: int, epoch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Epoch ``epoch``'s batches: X, Y (num_batches, B, T), reproducible from (seed, epoch)."""
    check_length(len(corpus), batch_size, num_steps)
    rng = epoch_rng(seed, epoch)
    offset = _random_offset(rng, len(corpus), batch_size, num_steps)
    if sampling == "sequential":
        return sequential_partition(corpus, batch_size, num_steps, offset)
    if sampling == "random":
        return random_partition(corpus, batch_size, num_steps, offset, rng)
    raise RnnlabError(f"unknown sampling {sampling!r}; choose one of {', '.join(SAMPLINGS)}")


def num_batches(
    n_tokens: int, batch_size: int, num_steps: int, sampling: str, seed: int, epoch: int
) -> int:
    """How many batches :func:`epoch_batches` makes of ``n_tokens`` in epoch ``epoch``,
    without making them (the epochs differ by their random offset)."""
    check_length(n_tokens, batch_size, num_steps)
    offset = _random_offset(epoch_rng(seed, epoch), n_tokens, batch_size, num_steps)
    if sampling == "random":
        return (n_tokens - offset - 1) // num_steps // batch_size
    return (n_tokens - offset - 1) // batch_size // num_steps


def eval_batches(
    corpus: torch.Tensor, batch_size: int, num_steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequential batches from offset 0 for evaluation, shrunk to fit a short held-out text.

    Uses min(B, (N-1)//T) streams (at least one, with fewer steps if N-1 < T) so that
    a small validation split is still scored. Returns X, Y of shape (nb, B', T').
    """
    check_sizes(batch_size, num_steps)
    n = len(corpus)
    if n < 2:
        raise RnnlabError(
            f"the held-out text has {n} token(s); it needs at least 2 to score one "
            f"prediction: use a larger --val-frac or a longer file"
        )
    steps = min(num_steps, n - 1)
    streams = max(1, min(batch_size, (n - 1) // steps))
    return sequential_partition(corpus, streams, steps, 0)


def block_batches(
    corpus: torch.Tensor, block_size: int, streams: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """nanoGPT's evaluation blocks: the text cut into non-overlapping blocks of
    ``block_size`` targets, each to be scored from a zero state, every target once.

    Returns (X, Y) pairs of shape (1, B', T'): groups of at most ``streams`` blocks of
    T' = block_size, then the last, shorter block (if the N - 1 targets do not divide
    evenly) on its own. Each pair is one batch of ``loss_sum``, whose state starts at zero.
    """
    check_sizes(streams, block_size)
    n = len(corpus)
    if n < 2:
        raise RnnlabError(
            f"the held-out text has {n} token(s); it needs at least 2 to score one prediction"
        )
    whole = (n - 1) // block_size
    X = corpus[: whole * block_size].reshape(whole, block_size)  # (K, T)
    Y = corpus[1 : whole * block_size + 1].reshape(whole, block_size)
    pairs = [(X[i : i + streams][None], Y[i : i + streams][None]) for i in range(0, whole, streams)]
    rest = n - 1 - whole * block_size
    if rest:
        start = whole * block_size
        pairs.append((corpus[start : start + rest][None, None], corpus[start + 1 :][None, None]))
    return pairs


def split_tail(ids: torch.Tensor, val_frac: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split token ids (N,) into (train, validation): the first int((1 - val_frac) N) train,
    the rest is held out; nanoGPT's split to the token (Tiny Shakespeare's 1,115,394
    characters: 1,003,854 and 111,540), so that losses compare on the same text."""
    n_train = int(len(ids) * (1 - val_frac))
    return ids[:n_train], ids[n_train:]
