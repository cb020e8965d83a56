"""Minibatches: sequential and random partitioning, evaluation batches, the validation split.

Most tests batch ``arange(N)``, so a value in X or Y is its position in the corpus.
"""

import pytest
import torch

from conftest import disturb_global_random_state
from rnnlab import batches, corpus
from rnnlab.errors import RnnlabError
from rnnlab.tokenize import tokenize
from rnnlab.vocab import Vocab


def d2l_sequential(corpus_ids, batch_size, num_steps, offset):
    """d2l 8.3's seq_data_iter_sequential with the offset given, as a list of (X, Y)."""
    num_tokens = ((len(corpus_ids) - offset - 1) // batch_size) * batch_size
    Xs = torch.tensor(corpus_ids[offset : offset + num_tokens]).reshape(batch_size, -1)
    Ys = torch.tensor(corpus_ids[offset + 1 : offset + 1 + num_tokens]).reshape(batch_size, -1)
    num_batches = Xs.shape[1] // num_steps
    return [
        (Xs[:, i : i + num_steps], Ys[:, i : i + num_steps])
        for i in range(0, num_steps * num_batches, num_steps)
    ]


def test_min_tokens_is_one_more_than_a_batch():
    assert batches.min_tokens(32, 35) == 32 * 35 + 1


def test_sequential_layout_matches_the_docstring_diagram():
    X, Y = batches.sequential_partition(torch.arange(19), 2, 3, offset=0)
    assert X.tolist() == [
        [[0, 1, 2], [9, 10, 11]],
        [[3, 4, 5], [12, 13, 14]],
        [[6, 7, 8], [15, 16, 17]],
    ]
    assert torch.equal(Y, X + 1)


@pytest.mark.parametrize("offset", range(5))
def test_sequential_partition_matches_d2l(offset):
    ids = torch.randint(0, 28, (203,), generator=torch.Generator().manual_seed(0))
    X, Y = batches.sequential_partition(ids, 4, 5, offset)
    expected = d2l_sequential(ids.tolist(), 4, 5, offset)
    assert X.shape == (len(expected), 4, 5)
    for i, (Xi, Yi) in enumerate(expected):
        assert torch.equal(X[i], Xi) and torch.equal(Y[i], Yi)


def test_sequential_batches_continue_each_stream():
    X, Y = batches.epoch_batches(torch.arange(1000), 4, 7, "sequential", seed=1, epoch=2)
    for i in range(len(X) - 1):
        # row b of batch i+1 starts with the token row b of batch i was predicting last
        assert torch.equal(X[i + 1, :, 0], Y[i, :, -1])
    assert torch.equal(Y, X + 1)


def test_random_batches_do_not_overlap():
    N, B, T = 1000, 4, 7
    X, Y = batches.epoch_batches(torch.arange(N), B, T, "random", seed=0, epoch=0)
    assert X.flatten().unique().numel() == X.numel()
    assert torch.equal(Y, X + 1) and Y.max() < N
    starts = X[:, :, 0].flatten()
    offset = int(starts.min()) % T
    assert 0 <= offset < T and torch.all((starts - offset) % T == 0)
    assert X.shape == (((N - offset - 1) // T) // B, B, T)


def test_random_batches_are_shuffled():
    X, _ = batches.epoch_batches(torch.arange(1000), 4, 7, "random", seed=0, epoch=0)
    starts = X[:, :, 0].flatten()
    assert not torch.equal(starts, starts.sort().values)


@pytest.mark.parametrize("sampling", batches.SAMPLINGS)
def test_an_epoch_is_rebuilt_exactly_from_seed_and_epoch(sampling):
    """As a resumed run rebuilds it: after other epochs, with the global generators elsewhere."""
    ids = torch.arange(500)
    disturb_global_random_state(0)
    X1, Y1 = batches.epoch_batches(ids, 3, 6, sampling, seed=7, epoch=4)
    others = [batches.epoch_batches(ids, 3, 6, sampling, seed=7, epoch=e)[0] for e in range(5, 15)]
    disturb_global_random_state(1)
    X2, Y2 = batches.epoch_batches(ids, 3, 6, sampling, seed=7, epoch=4)
    assert torch.equal(X1, X2) and torch.equal(Y1, Y2)
    assert any(X.shape != X1.shape or not torch.equal(X, X1) for X in others)


def test_epoch_offset_is_drawn_below_num_steps():
    offsets = {
        int(batches.epoch_batches(torch.arange(300), 2, 5, "sequential", 0, e)[0][0, 0, 0])
        for e in range(60)
    }
    assert offsets == set(range(5))


def test_offset_never_leaves_too_few_tokens_for_a_batch():
    # exactly one batch fits: the only possible offset is 0
    for epoch in range(10):
        X, _ = batches.epoch_batches(torch.arange(2 * 5 + 1), 2, 5, "random", 0, epoch)
        assert X.shape == (1, 2, 5) and X.min() == 0


@pytest.mark.parametrize("sampling", batches.SAMPLINGS)
def test_d2l_time_machine_batches_are_8_of_32_by_35(sampling):
    tokens = tokenize(corpus.read_text("timemachine"), "d2l")[:10000]  # d2l's max_tokens=10000
    vocab = Vocab(tokens)
    ids = torch.tensor(vocab[tokens])
    assert len(vocab) == 28 and len(ids) == 10000
    for epoch in range(8):
        X, Y = batches.epoch_batches(ids, 32, 35, sampling, seed=0, epoch=epoch)
        assert X.shape == Y.shape == (8, 32, 35)
        assert X.dtype == torch.long


def test_too_short_corpus_names_its_length_and_the_batch_size():
    with pytest.raises(RnnlabError) as info:
        batches.epoch_batches(torch.arange(20), 4, 5, "sequential", 0, 0)
    message = str(info.value)
    assert "it has 20 tokens" in message
    assert "batch_size 4 x num_steps 5 needs at least 21" in message
    assert "--batch-size" in message


@pytest.mark.parametrize("B,T", [(0, 5), (4, 0), (-1, 5), (4, -3)])
def test_sizes_below_one_are_refused(B, T):
    with pytest.raises(RnnlabError, match="must be at least 1"):
        batches.epoch_batches(torch.arange(100), B, T, "sequential", 0, 0)
    with pytest.raises(RnnlabError, match="must be at least 1"):
        batches.eval_batches(torch.arange(100), B, T)


@pytest.mark.parametrize("seed,epoch", [(-1, 0), (0, -1)])
def test_negative_seed_or_epoch_is_refused(seed, epoch):
    with pytest.raises(RnnlabError, match="must be non-negative"):
        batches.epoch_batches(torch.arange(100), 2, 5, "random", seed, epoch)


def test_unknown_sampling_names_the_choices():
    with pytest.raises(
        RnnlabError, match="unknown sampling 'shuffle'; choose one of sequential, random"
    ):
        batches.epoch_batches(torch.arange(100), 2, 5, "shuffle", 0, 0)


def test_eval_batches_start_at_the_first_token_with_full_sizes():
    X, Y = batches.eval_batches(torch.arange(100), 4, 10)
    assert X.shape == (2, 4, 10)
    assert X[0, :, 0].tolist() == [0, 24, 48, 72]  # 4 streams of 99 // 4 = 24 tokens
    assert torch.equal(Y, X + 1)


@pytest.mark.parametrize(
    "N,B,T,shape",
    [
        (2, 32, 35, (1, 1, 1)),  # one prediction is still scored
        (10, 4, 35, (1, 1, 9)),  # fewer steps than asked
        (30, 4, 10, (1, 2, 10)),  # fewer streams than asked
        (41, 4, 10, (1, 4, 10)),  # exactly one full batch
    ],
)
def test_eval_batches_shrink_for_short_text(N, B, T, shape):
    X, Y = batches.eval_batches(torch.arange(N), B, T)
    assert X.shape == Y.shape == shape
    assert X[0, 0, 0] == 0 and torch.equal(Y, X + 1) and Y.max() < N


@pytest.mark.parametrize("N", [0, 1])
def test_eval_batches_need_two_tokens(N):
    with pytest.raises(RnnlabError, match=f"has {N} token\\(s\\); it needs at least 2"):
        batches.eval_batches(torch.arange(N), 4, 10)


def test_validation_split_is_the_tail():
    ids = torch.arange(100)
    train, val = batches.split_tail(ids, 0.1)
    assert torch.equal(train, torch.arange(90)) and torch.equal(val, torch.arange(90, 100))


@pytest.mark.parametrize(
    "n,frac,n_val",
    [(100, 0.0, 0), (100, 0.25, 25), (7, 0.3, 3), (10, 1.0, 10), (1115394, 0.1, 111540)],
)
def test_validation_split_is_nanogpts_and_loses_nothing(n, frac, n_val):
    """Training keeps int((1 - frac) n) tokens, as nanoGPT's prepare.py does (Tiny
    Shakespeare's characters: train 1,003,854, val 111,540)."""
    train, val = batches.split_tail(torch.arange(n), frac)
    assert len(val) == n_val
    assert torch.equal(torch.cat([train, val]), torch.arange(n))


def test_tiny_shakespeare_is_split_where_nanogpt_splits_it():
    from rnnlab.data import prepare

    data = prepare("tinyshakespeare", "chars", None, 0.1, 16, 64)
    assert (len(data.train_ids), len(data.val_ids)) == (1_003_854, 111_540)
