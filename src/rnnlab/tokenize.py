"""Tokenization: text -> a list of tokens, in one of four modes.

============  ===============================================================
``d2l``       d2l's ``read_time_machine`` + character tokens: on each line every
              run of non-letters becomes one space, the line is stripped and
              lowercased, and the lines are concatenated *with no separator*
              (so "him)" + newline + "was" reads "himwas", as in the book).
``letters``   the same 27-symbol alphabet, but a line break counts as a space.
``chars``     every Unicode character as it is (case, punctuation, newlines),
              as char-rnn does; for text in any language.
``words``     whitespace-separated words, with ``<eos>`` after each line (the
              Penn Treebank convention).
============  ===============================================================
"""

from __future__ import annotations

import re

from .errors import RnnlabError
from .options import MODES

EOS = "<eos>"

_NON_LETTERS = re.compile("[^A-Za-z]+")


def d2l_lines(text: str) -> list[str]:
    """d2l's line cleaning: non-letter runs -> ' ', strip, lowercase."""
    return [_NON_LETTERS.sub(" ", line).strip().lower() for line in text.split("\n")]


def tokenize(text: str, mode: str = "letters") -> list[str]:
    """Split ``text`` into tokens according to ``mode`` (one of :data:`MODES`)."""
    if mode == "d2l":
        return list("".join(d2l_lines(text)))
    if mode == "letters":
        return list(_NON_LETTERS.sub(" ", text).strip().lower())
    if mode == "chars":
        return list(text)
    if mode == "words":
        tokens: list[str] = []
        for line in text.split("\n"):
            words = line.split()
            if words:
                tokens.extend(words)
                tokens.append(EOS)
        return tokens
    raise RnnlabError(f"unknown tokenization mode {mode!r}; choose one of {', '.join(MODES)}")


def detokenize(tokens: list[str], mode: str) -> str:
    """Join tokens back into text (words with spaces, <eos> as a line break)."""
    if mode == "words":
        # a space between two words of a line; no space next to a line break
        pieces = []
        for i, token in enumerate(tokens):
            if token == EOS:
                pieces.append("\n")
            else:
                pieces.append(token if i == 0 or tokens[i - 1] == EOS else " " + token)
        return "".join(pieces)
    return "".join(tokens)


def prompt_tokens(prompt: str, mode: str) -> list[str]:
    """Tokens of a generation prompt, cleaned as training text is, keeping a trailing space.

    (``tokenize`` strips the text, which would drop the space a prompt like
    "time traveller " ends with, and that space is what the model continues from.)
    """
    if mode in ("d2l", "letters"):
        return list(_NON_LETTERS.sub(" ", prompt).lower())
    if mode == "words":  # as tokenize, but the last line is still open: no <eos> after it
        *ended, last = prompt.split("\n")
        return tokenize("\n".join(ended), "words") + last.split()
    return list(prompt)
