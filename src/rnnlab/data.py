"""A dataset for training: source -> text -> tokens -> Vocab -> training and validation ids.

The vocabulary is built from every token kept (d2l's load_corpus_time_machine
does the same), most frequent first. Validation is the last ``val_frac`` of the
tokens, except for ptb, whose own valid file is the validation split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from . import corpus
from .batches import check_length, split_tail
from .errors import RnnlabError
from .tokenize import MODES, tokenize
from .vocab import Vocab


def read_tokens(
    source: str, mode: str, max_tokens: int | None = None, split: str = "train"
) -> list[str]:
    """The tokens of ``source`` (a built-in corpus split, or a path), at most ``max_tokens``."""
    if mode not in MODES:
        raise RnnlabError(f"unknown tokenization mode {mode!r}; choose one of {', '.join(MODES)}")
    tokens = tokenize(corpus.read_text(source, split), mode)
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    if not tokens:
        raise RnnlabError(
            f"{source} has no tokens in mode {mode!r} (e.g. no letters for "
            f"--mode letters); try --mode chars"
        )
    return tokens


def has_split(source: str, split: str) -> bool:
    return corpus.is_builtin(source) and split in corpus.CORPORA[source].files


@dataclass
class Dataset:
    """Training and validation token ids (1-D int64) and the vocabulary that made them."""

    vocab: Vocab
    train_ids: torch.Tensor
    val_ids: torch.Tensor
    tokens: int  # tokens read from the training text (before the split)
    text_sha256: str = ""  # fingerprint() of the tokens read: tells a changed corpus


def prepare(
    source: str,
    mode: str,
    max_tokens: int | None,
    val_frac: float,
    batch_size: int,
    num_steps: int,
    vocab: Vocab | None = None,
) -> Dataset:
    """Read, tokenize, index and split ``source``; check the training part fills one batch.

    Pass ``vocab`` to index with an existing vocabulary (a saved run's) instead of
    building one.
    """
    tokens = read_tokens(source, mode, max_tokens)
    if vocab is None:
        vocab = Vocab(tokens)
    ids = torch.tensor(vocab[tokens], dtype=torch.long)
    val_tokens: list[str] = []
    if has_split(source, "valid"):
        val_tokens = read_tokens(source, mode, max_tokens, split="valid")
        train_ids, val_ids = ids, torch.tensor(vocab[val_tokens], dtype=torch.long)
    else:
        train_ids, val_ids = split_tail(ids, val_frac)
    where = (
        f"the training split of {source!r}"
        if has_split(source, "valid")
        else f"the training part of {source!r} (mode {mode}, --val-frac {val_frac} held out)"
    )
    check_length(len(train_ids), batch_size, num_steps, what=where)
    if len(val_ids) < 2:
        raise RnnlabError(
            f"the validation part of {source!r} has {len(val_ids)} token(s); use a "
            f"larger --val-frac or more text"
        )
    return Dataset(vocab, train_ids, val_ids, len(tokens), fingerprint(tokens, val_tokens))


def fingerprint(*token_lists: list[str]) -> str:
    """sha256 of token lists: what a run was trained and validated on, in one hex string."""
    digest = hashlib.sha256()
    for tokens in token_lists:
        digest.update("\x00".join(tokens).encode("utf-8", "surrogatepass"))
        digest.update(b"\x01")
    return digest.hexdigest()


def held_out_ids(source: str, mode: str, vocab: Vocab, split: str = "train") -> torch.Tensor:
    """Ids of a held-out text (a file, or a built-in corpus' split) under a run's vocabulary."""
    tokens = read_tokens(source, mode, split=split)
    return torch.tensor(vocab[tokens], dtype=torch.long)
