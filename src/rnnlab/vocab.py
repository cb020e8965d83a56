"""Vocab: the table between tokens and integer indices.

Index 0 is ``<unk>``, then the reserved tokens, then every token seen at least
``min_freq`` times, most frequent first (ties keep the order of first
appearance, which is what Python's stable sort gives d2l too).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable, Sequence
from typing import cast

from .errors import RnnlabError

UNK = "<unk>"


class Vocab:
    """Token <-> index table, with frequencies (d2l's ``Vocab``, plus saving and loading)."""

    def __init__(
        self, tokens: Iterable = (), min_freq: int = 0, reserved_tokens: Sequence[str] = ()
    ):
        tokens = list(tokens)
        if tokens and isinstance(tokens[0], list):  # d2l accepts a list of lines of tokens
            tokens = [tok for line in tokens for tok in line]
        counter = collections.Counter(tokens)
        # Counter keeps first-appearance order; sorted() is stable, so ties stay in that order.
        self.token_freqs: list[tuple[str, int]] = sorted(
            counter.items(), key=lambda kv: kv[1], reverse=True
        )
        # dict.fromkeys drops repeated reserved tokens (keeping the first) so indices stay dense.
        self.idx_to_token: list[str] = [UNK] + list(
            dict.fromkeys(t for t in reserved_tokens if t != UNK)
        )
        self.token_to_idx: dict[str, int] = {t: i for i, t in enumerate(self.idx_to_token)}
        for token, freq in self.token_freqs:
            if freq < min_freq:
                break
            if token not in self.token_to_idx:
                self.token_to_idx[token] = len(self.idx_to_token)
                self.idx_to_token.append(token)

    @classmethod
    def from_tokens_list(cls, idx_to_token: list[str]) -> Vocab:
        """Rebuild a vocabulary from its saved ``idx_to_token`` list (no frequencies)."""
        if (
            not idx_to_token
            or not all(isinstance(t, str) for t in idx_to_token)  # before set(): hashable
            or idx_to_token[0] != UNK
            or len(set(idx_to_token)) != len(idx_to_token)
        ):
            raise RnnlabError(
                "vocabulary is invalid: it must list distinct tokens with <unk> "
                "first; the run directory may be damaged"
            )
        vocab = cls()
        vocab.idx_to_token = list(idx_to_token)
        vocab.token_to_idx = {t: i for i, t in enumerate(idx_to_token)}
        return vocab

    def __len__(self) -> int:
        return len(self.idx_to_token)

    @property
    def unk(self) -> int:
        return 0

    def __getitem__(self, tokens: str | Sequence[str]):
        """Index of one token, or a list of indices for a list/tuple of tokens (unknown -> 0)."""
        if not isinstance(tokens, (list, tuple)):
            return self.token_to_idx.get(cast(str, tokens), self.unk)
        return [self.__getitem__(t) for t in tokens]

    def to_tokens(self, indices):
        """Token of one index, or a list of tokens for a sequence of indices."""
        if hasattr(indices, "tolist"):
            indices = indices.tolist()
        if isinstance(indices, (list, tuple)):
            return [self.idx_to_token[int(i)] for i in indices]
        return self.idx_to_token[int(indices)]

    def unknown(self, tokens: Iterable[str]) -> list[str]:
        """The distinct tokens of ``tokens`` that are not in the vocabulary, in order."""
        seen = []
        for t in tokens:
            if t not in self.token_to_idx and t not in seen:
                seen.append(t)
        return seen

    def to_json(self) -> str:
        return json.dumps({"idx_to_token": self.idx_to_token}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        """The vocabulary :meth:`to_json` wrote."""
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        return cls.from_data(data)

    @classmethod
    def from_data(cls, data: object) -> Vocab:
        """The vocabulary in parsed vocab.json data: {"idx_to_token": [token, ...]}."""
        tokens = data.get("idx_to_token") if isinstance(data, dict) else None
        if not isinstance(tokens, list):
            raise RnnlabError(
                "vocab.json is not a valid vocabulary; the run directory may be "
                "damaged: retrain or restore it"
            )
        return cls.from_tokens_list(tokens)
