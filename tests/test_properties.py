"""Properties of the data pipeline on arbitrary input (hypothesis).

Text is arbitrary Unicode (no surrogates, which UTF-8 cannot carry) with extra weight on
the characters that break tokenizers: LF, CR, other Unicode line and space separators,
combining marks, emoji, the empty string. Batching runs on ``corpus = arange(N)`` so
that every value in X and Y *is* its position in the corpus: "Y is X shifted by one"
becomes ``Y == X + 1``, and overlaps and continuations are checked position by position.

The number of cases per test is bounded (200, or $RNNLAB_HYPOTHESIS_EXAMPLES) so the file
runs in seconds; ``pytest --hypothesis-show-statistics`` prints how many ran.
"""

import os
import re
import string

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import disturb_global_random_state
from rnnlab import batches
from rnnlab.corpus import decode_utf8
from rnnlab.errors import RnnlabError
from rnnlab.tokenize import EOS, MODES, detokenize, tokenize
from rnnlab.vocab import UNK, Vocab

settings.register_profile(
    "rnnlab-properties",
    max_examples=int(os.environ.get("RNNLAB_HYPOTHESIS_EXAMPLES", "200")),
    deadline=None,  # the first call pays for torch's warm-up; no timing claims here
)
CASES = settings.get_profile("rnnlab-properties")

# Characters a tokenizer is most likely to get wrong, mixed into arbitrary Unicode.
AWKWARD = [
    "\n",
    "\r",
    " ",
    "\t",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x85",
    "\u2028",
    "\u2029",
    "\u00a0",
    "\u3000",
    "\u0301",
    "\u0308",
    "\u200d",
    "\ufeff",
    "\U0001f600",
    "\U0001f3fd",
    "\U0001f468",
    "e",
    "E",
    "z",
    "\u212a",
    "\u00df",
    "\u0130",
    "\u00e9",
    "(",
    ")",
    "<",
    ">",
]
CHARS = st.characters(codec="utf-8") | st.sampled_from(AWKWARD)
TEXT = st.text(CHARS, max_size=80)
BOM = b"\xef\xbb\xbf"

ALPHABET27 = set(" " + string.ascii_lowercase)


# ---------------------------------------------------------------------------
# Tokenization and the vocabulary on text


@CASES
@given(text=TEXT, mode=st.sampled_from(list(MODES)))
def test_tokens_map_back_through_their_vocab(text, mode):
    tokens = tokenize(text, mode)
    vocab = Vocab(tokens)
    ids = vocab[tokens]
    assert vocab.to_tokens(ids) == tokens
    assert vocab.to_tokens(torch.tensor(ids, dtype=torch.long)) == tokens
    assert all(0 <= i < len(vocab) for i in ids)


@CASES
@given(text=TEXT, mode=st.sampled_from(list(MODES)), min_freq=st.integers(0, 4))
def test_tokens_outside_the_vocab_map_to_unk(text, mode, min_freq):
    tokens = tokenize(text, mode)
    vocab = Vocab(tokens, min_freq=min_freq)
    for token in tokens:
        if token in vocab.token_to_idx:
            assert vocab.to_tokens(vocab[token]) == token
        else:
            assert vocab[token] == 0 == vocab.unk
            assert vocab.to_tokens(vocab[token]) == UNK
    # a list or tuple of tokens looks each one up; the index is its place in idx_to_token
    expected = [vocab.idx_to_token.index(t) if t in vocab.idx_to_token else 0 for t in tokens]
    assert vocab[list(tokens)] == vocab[tuple(tokens)] == expected


@CASES
@given(text=TEXT)
def test_chars_mode_round_trips_the_text_exactly(text):
    tokens = tokenize(text, "chars")
    assert all(len(t) == 1 for t in tokens)
    assert detokenize(tokens, "chars") == text


@CASES
@given(text=TEXT)
def test_words_mode_tokens_never_contain_whitespace(text):
    assume(EOS not in text)  # a literal "<eos>" in the text is a word like any other
    tokens = tokenize(text, "words")
    assert all(t and not any(c.isspace() for c in t) for t in tokens)
    # the words are Python's whitespace split; every line with words ends in <eos>
    assert [t for t in tokens if t != EOS] == text.split()
    # one <eos> per LF-ended line holding a non-space character
    assert tokens.count(EOS) == len(re.findall(r"^[^\n]*\S[^\n]*$", text, re.MULTILINE))
    if tokens:
        assert tokens[-1] == EOS
    assert all(not (a == EOS and b == EOS) for a, b in zip(tokens, tokens[1:]))
    # and back: the text with each run of spaces inside a line made one space, the lines
    # stripped, blank lines dropped, and every line ended by LF
    squeezed = re.sub(r"[^\S\n]+", " ", text)
    squeezed = re.sub(r" *\n *", "\n", squeezed).strip(" ")
    squeezed = re.sub(r"\n+", "\n", squeezed).strip("\n")
    assert detokenize(tokens, "words") == (squeezed + "\n" if squeezed else "")


@CASES
@given(text=TEXT, mode=st.sampled_from(["d2l", "letters"]))
def test_letter_modes_keep_only_lowercase_letters_and_single_spaces(text, mode):
    tokens = tokenize(text, mode)
    assert set(tokens) <= ALPHABET27
    joined = "".join(tokens)
    assert "  " not in joined and joined == joined.strip()
    letters = [c.lower() for c in text if c in string.ascii_letters]
    assert [t for t in tokens if t != " "] == letters
    if mode == "letters":
        # a line break separates words exactly like any other non-letter
        assert joined == " ".join(re.findall("[A-Za-z]+", text)).lower()


# ---------------------------------------------------------------------------
# Vocabulary invariants on arbitrary token lists

TOKEN = st.sampled_from(["a", "b", "c", " ", "\n", UNK, "<eos>", "", "x"]) | st.text(
    CHARS, max_size=3
)


@CASES
@given(
    tokens=st.lists(TOKEN, max_size=60),
    reserved=st.lists(TOKEN, max_size=4),
    min_freq=st.integers(0, 4),
)
def test_vocab_invariants(tokens, reserved, min_freq):
    vocab = Vocab(tokens, min_freq=min_freq, reserved_tokens=reserved)
    itos = vocab.idx_to_token

    # <unk> first, then the reserved tokens (each once, in the order given)
    assert itos[0] == UNK
    reserved_once = list(dict.fromkeys(t for t in reserved if t != UNK))
    assert itos[1 : 1 + len(reserved_once)] == reserved_once

    # then every other token seen at least min_freq times, most frequent first,
    # ties in order of first appearance
    counts, first = {}, {}
    for i, t in enumerate(tokens):
        counts[t] = counts.get(t, 0) + 1
        first.setdefault(t, i)
    rest = [t for t in counts if counts[t] >= min_freq and t != UNK and t not in reserved_once]
    assert itos[1 + len(reserved_once) :] == sorted(rest, key=lambda t: (-counts[t], first[t]))
    assert vocab.token_freqs == sorted(counts.items(), key=lambda kv: (-kv[1], first[kv[0]]))

    # indices unique and dense
    assert len(set(itos)) == len(itos) == len(vocab)
    assert vocab.token_to_idx == {t: i for i, t in enumerate(itos)}

    # saving and loading keeps the table
    again = Vocab.from_json(vocab.to_json())
    assert again.idx_to_token == itos and again.token_to_idx == vocab.token_to_idx
    assert again[tokens] == vocab[tokens]


# ---------------------------------------------------------------------------
# decode_utf8 on arbitrary bytes


def _spliced(parts):
    return b"".join(parts)


RAW = st.one_of(
    st.binary(max_size=40),
    TEXT.map(lambda s: s.encode("utf-8")),
    st.tuples(
        st.sampled_from([b"", BOM, BOM[:2]]),
        TEXT.map(lambda s: s.encode("utf-8")),
        st.binary(max_size=3),
        TEXT.map(lambda s: s.encode("utf-8")),
    ).map(_spliced),
)


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def lf_line_ends(text: str) -> str:
    """``text`` with every line end (CRLF, CR or LF) written as LF."""
    return "\n".join(re.split("\r\n|\r|\n", text))


@CASES
@given(data=RAW)
def test_decode_utf8_returns_text_or_names_the_bad_byte_offset(data):
    if b"\x00" in data:
        with pytest.raises(RnnlabError, match=f"binary file .*offset {data.index(0)}\\)"):
            decode_utf8(data, "f.txt")
        return
    body, skipped = (data[3:], 3) if data.startswith(BOM) else (data, 0)
    if not is_utf8(body):
        # the first bad byte ends the longest prefix that is UTF-8 (offset counts the BOM)
        offset = skipped + max(n for n in range(len(body) + 1) if is_utf8(body[:n]))
        with pytest.raises(RnnlabError) as info:
            decode_utf8(data, "f.txt")
        message = str(info.value)
        assert "f.txt is not UTF-8" in message
        assert f"invalid byte 0x{data[offset]:02x} at byte offset {offset};" in message
        return
    text = decode_utf8(data, "f.txt")
    assert "\r" not in text
    assert text == lf_line_ends(body.decode("utf-8"))


@CASES
@given(text=TEXT, bom=st.booleans())
def test_decode_utf8_reads_back_encoded_text(text, bom):
    assume("\x00" not in text)
    data = (BOM if bom else b"") + text.encode("utf-8")
    # one leading BOM is dropped, whether we added it or the text began with U+FEFF
    expected = text if bom or not text.startswith("\ufeff") else text[1:]
    assert decode_utf8(data, "f.txt") == lf_line_ends(expected)


# ---------------------------------------------------------------------------
# Batching: corpus = arange(N), so values are positions


@st.composite
def batch_cases(draw, extra=80):
    """(N, B, T) with enough tokens for at least one batch."""
    B = draw(st.integers(1, 6))
    T = draw(st.integers(1, 9))
    N = batches.min_tokens(B, T) + draw(st.integers(0, extra))
    return N, B, T


SEED = st.integers(0, 2**64)
EPOCH = st.integers(0, 1000)


def check_shifted_and_inside(X, Y, N, B, T):
    assert X.dtype == Y.dtype == torch.long
    assert X.dim() == 3 and X.shape == Y.shape and X.shape[1:] == (B, T) and X.shape[0] >= 1
    assert torch.equal(Y, X + 1)  # Y[i,b,t] is the token after X[i,b,t]
    assert X.min() >= 0 and Y.max() <= N - 1  # never past the end of the corpus
    # each row is T consecutive corpus positions
    assert torch.equal(X, X[:, :, :1] + torch.arange(T))


def check_sequential_continuation(X, T):
    # row b of batch i+1 starts right where row b of batch i ended
    assert torch.equal(X[1:, :, 0], X[:-1, :, T - 1] + 1)


@CASES
@given(case=batch_cases(), seed=SEED, epoch=EPOCH)
def test_sequential_batches_are_shifted_and_continue_each_stream(case, seed, epoch):
    N, B, T = case
    X, Y = batches.epoch_batches(torch.arange(N), B, T, "sequential", seed, epoch)
    check_shifted_and_inside(X, Y, N, B, T)
    check_sequential_continuation(X, T)
    offset = int(X[0, 0, 0])
    assert 0 <= offset < T
    # as many batches as the streams after the offset hold (d2l's layout)
    per_stream = (N - offset - 1) // B
    assert X.shape[0] == per_stream // T
    assert torch.equal(X[0, :, 0], offset + per_stream * torch.arange(B))


@CASES
@given(case=batch_cases(), seed=SEED, epoch=EPOCH)
def test_random_batches_are_shifted_and_do_not_overlap(case, seed, epoch):
    N, B, T = case
    X, Y = batches.epoch_batches(torch.arange(N), B, T, "random", seed, epoch)
    check_shifted_and_inside(X, Y, N, B, T)
    positions = X.flatten()
    assert positions.unique().numel() == positions.numel()  # no subsequence overlaps another
    starts = X[:, :, 0].flatten()
    offset = int(starts[0]) % T
    assert torch.all(starts % T == offset)  # cut on the grid offset, offset + T, ...
    num_subseqs = (N - offset - 1) // T
    assert X.shape[0] == num_subseqs // B


@CASES
@given(
    case=batch_cases(),
    sampling=st.sampled_from(batches.SAMPLINGS),
    seed=SEED,
    epoch=EPOCH,
    other_epoch=EPOCH,
    global_seeds=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
)
def test_same_seed_and_epoch_give_the_same_batches(
    case, sampling, seed, epoch, other_epoch, global_seeds
):
    # as a resumed run rebuilds an epoch: after other epochs, the global generators elsewhere
    N, B, T = case
    disturb_global_random_state(global_seeds[0])
    X1, Y1 = batches.epoch_batches(torch.arange(N), B, T, sampling, seed, epoch)
    batches.epoch_batches(torch.arange(N), B, T, sampling, seed, other_epoch)
    disturb_global_random_state(global_seeds[1])
    X2, Y2 = batches.epoch_batches(torch.arange(N), B, T, sampling, seed, epoch)
    assert torch.equal(X1, X2) and torch.equal(Y1, Y2)


@CASES
@given(case=batch_cases(), sampling=st.sampled_from(batches.SAMPLINGS), seed=SEED)
def test_different_epochs_usually_differ(case, sampling, seed):
    N, B, T = case
    # with room for more than one offset the epochs must not all repeat epoch 0
    # (30 epochs: all equal by chance has probability <= 2**-29)
    assume(T >= 2 and N > batches.min_tokens(B, T))
    X0, _ = batches.epoch_batches(torch.arange(N), B, T, sampling, seed, 0)
    others = [
        batches.epoch_batches(torch.arange(N), B, T, sampling, seed, e)[0] for e in range(1, 30)
    ]
    assert any(X.shape != X0.shape or not torch.equal(X, X0) for X in others)


@CASES
@given(
    N=st.integers(0, 60),
    B=st.integers(-2, 7),
    T=st.integers(-2, 9),
    sampling=st.sampled_from(batches.SAMPLINGS + ("shuffled",)),
    seed=st.integers(-3, 2**64),
    epoch=st.integers(-2, 5),
)
def test_epoch_batches_raise_only_rnnlab_error(N, B, T, sampling, seed, epoch):
    corpus = torch.arange(N)
    valid = (
        B >= 1
        and T >= 1
        and N >= B * T + 1
        and sampling in batches.SAMPLINGS
        and seed >= 0
        and epoch >= 0
    )
    if not valid:
        with pytest.raises(RnnlabError) as info:
            batches.epoch_batches(corpus, B, T, sampling, seed, epoch)
        if B >= 1 and T >= 1 and N < B * T + 1:
            message = str(info.value)
            assert f"it has {N} tokens" in message
            assert f"batch_size {B} x num_steps {T}" in message
        return
    X, Y = batches.epoch_batches(corpus, B, T, sampling, seed, epoch)
    check_shifted_and_inside(X, Y, N, B, T)


@CASES
@given(N=st.integers(0, 120), B=st.integers(-1, 7), T=st.integers(-1, 12))
def test_eval_batches_shrink_to_fit_and_raise_only_rnnlab_error(N, B, T):
    corpus = torch.arange(N)
    if N < 2 or B < 1 or T < 1:
        with pytest.raises(RnnlabError):
            batches.eval_batches(corpus, B, T)
        return
    X, Y = batches.eval_batches(corpus, B, T)
    nb, B2, T2 = X.shape
    assert nb >= 1 and 1 <= B2 <= B and 1 <= T2 <= T
    check_shifted_and_inside(X, Y, N, B2, T2)
    check_sequential_continuation(X, T2)
    assert X[0, 0, 0] == 0  # evaluation always starts at the first token
    if N - 1 >= B * T:
        assert (B2, T2) == (B, T)  # enough text: nothing shrinks
