"""Look inside a trained model: what it predicts at each token and what its hidden units do.

Shapes, named as in :mod:`rnnlab.models`: T tokens of the text read, V vocabulary
size, H hidden units, L layers.

:meth:`Lens.read` feeds a text to the model one token at a time (B = 1, T = 1 per
call), as generation does, and keeps after each token

    the state of every layer          h (L, H) (and c (L, H) for the LSTM)
    the log-probabilities it gives    (V,): its prediction for the next token

so that position t holds the state after reading token t and the prediction of
token t made from the tokens before it. One call per token works the same for
every implementation (scratch, fused, torch), whose forward passes return only the
last layer's outputs and the final state.

:meth:`Lens.feature` computes a property of the text per token (:data:`FEATURES`),
and :meth:`Lens.rank_units` finds the hidden units whose activation follows it
most closely (Pearson's r), the measurement of Karpathy, Johnson & Fei-Fei,
"Visualizing and Understanding Recurrent Networks" (2015), which found cells that
track quotes, brackets and the position in a line.

A feature is computed on the text the tokens spell, which is what the model read:
in ``letters`` and ``d2l`` modes every run of punctuation and every line break has
become one space, so there "quotes" and "brackets" are always 0 and "line-position"
counts from the start of the text.

One Lens may be used from several threads (a web server's): the model is used by
one thread at a time.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .command_config import GenerateConfig
from .config import TrainConfig
from .data import prepare
from .errors import RnnlabError
from .generate import prompt_ids, stream_text
from .models.cells import CELLS
from .tokenize import EOS, detokenize, prompt_tokens
from .train import bits_per_token
from .trained import latest, load_run
from .vocab import Vocab

MAX_TEXT_CHARS = 20_000  # longest text read(): its activations are T * L * H floats per kind
MAX_GENERATE = 2_000  # most tokens stream() generates
MAX_PATTERN_CHARS = 200  # longest regular expression of the "regex" feature
REGEX_SECONDS = 2.0  # the "regex" feature's pattern must finish matching within this
TOP = 5  # the most likely tokens kept per position


@dataclass
class Reading:
    """What the model did on one text: its predictions and its states, per token.

    Position t is token t: ``probs[t]`` and ``top[t]`` are the prediction of token t
    made after tokens 0..t-1 (none for t = 0), and ``activations`` the state after
    reading tokens 0..t.
    """

    tokens: list[str]  # each token as display text, in order (words mode: <eos> shown as "\n")
    probs: list[float | None]  # p(token t | tokens before it); None for the first token
    top: list[list[tuple[str, float]]]  # the 5 likeliest tokens at t, with p; [] for the first
    loss_nats: float  # mean -log p over the predicted tokens (all but the first)
    loss_bits: float  # the same in bits
    # "h1".."hL": (T, H) each layer's hidden state after token t (the tanh output for the
    # RNN, h for the GRU and LSTM); "c1".."cL": (T, H) the LSTM's cell states.
    activations: dict[str, np.ndarray]


# ---------------------------------------------------------------- features of a text
#
# Each feature is first computed per character of the text the tokens spell, then per
# token: "after" takes the value after the token's last character (as a state is the
# state after reading the token); "any" is 1 where any of the token's characters is 1.


def _quotes(text: str, pattern: str | None) -> np.ndarray:
    """1 while a quotation is open after reading each character, else 0.

    " opens and closes a quotation (“ opens, ” closes). ' (and ‘ ’) is also a
    quotation mark in much English text (The Time Machine quotes speech with it),
    but more often an apostrophe: one between two letters or digits (don't, know't)
    is an apostrophe; otherwise one not followed by a letter or digit closes an open
    single quotation, and one after a non-letter and before a non-space opens one.
    ('tis and o' the are read wrongly, as an opening and a closing mark.) An empty
    line (a paragraph's end) closes every quotation.
    """
    values = np.zeros(len(text))
    double = single = False
    for i, ch in enumerate(text):
        before = text[i - 1] if i > 0 else " "
        after = text[i + 1] if i + 1 < len(text) else " "
        if ch == "\n" and before == "\n":
            double = single = False
        elif ch == '"':
            double = not double
        elif ch in "“”":
            double = ch == "“"
        elif ch in "'‘’":
            if before.isalnum() and after.isalnum():
                pass  # an apostrophe
            elif single and not after.isalnum():
                single = False
            elif not single and not before.isalnum() and not after.isspace():
                single = True
        values[i] = double or single
    return values


BRACKETS = {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}


def _brackets(text: str, pattern: str | None) -> np.ndarray:
    """1 while at least one bracket is open after reading each character, else 0.

    Any of ( [ { opens and any of ) ] } closes (kinds are not matched); a closing
    bracket with none open is ignored.
    """
    values = np.zeros(len(text))
    depth = 0
    for i, ch in enumerate(text):
        depth = max(0, depth + BRACKETS.get(ch, 0))
        values[i] = depth > 0
    return values


def _line_position(text: str, pattern: str | None) -> np.ndarray:
    """How many characters have been read since the last line break (0 on the break)."""
    values = np.zeros(len(text))
    column = 0
    for i, ch in enumerate(text):
        column = 0 if ch == "\n" else column + 1
        values[i] = column
    return values


def _word_start(text: str, pattern: str | None) -> np.ndarray:
    """1 on a letter or digit that follows anything else (a space, a line break, punctuation,
    or the start of the text), else 0."""
    values = np.zeros(len(text))
    for i, ch in enumerate(text):
        values[i] = ch.isalnum() and (i == 0 or not text[i - 1].isalnum())
    return values


# The pattern runs in a separate Python, killed after REGEX_SECONDS: Python's re cannot
# be interrupted, and a pattern such as (a+)+b backtracks for longer than the age of the
# universe on a line of a's, however short the text is kept.
_MATCHER = (
    "import json, re, sys\n"
    "pattern, text = json.load(sys.stdin)\n"
    "print(json.dumps([m.span() for m in re.finditer(pattern, text)]))\n"
)


def _regex(text: str, pattern: str | None) -> np.ndarray:
    """1 on the characters of each match of ``pattern`` (Python's re syntax), else 0."""
    if not pattern:
        raise RnnlabError("the regex feature needs a pattern; give a regular expression")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise RnnlabError(
            f"the pattern is {len(pattern):,} characters long; give one of at most "
            f"{MAX_PATTERN_CHARS}"
        )
    try:
        re.compile(pattern)
    except re.error as e:
        raise RnnlabError(
            f"the pattern {pattern!r} is not a regular expression ({e}); fix it"
        ) from None
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _MATCHER],
            input=json.dumps([pattern, text]),  # ASCII: \u escapes for everything else
            capture_output=True,
            text=True,
            timeout=REGEX_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RnnlabError(
            f"the pattern {pattern!r} took over {REGEX_SECONDS:g} s on this text (nested "
            f"repeats such as (a+)+ try exponentially many ways); simplify it"
        ) from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RnnlabError(f"the pattern {pattern!r} could not be matched ({why}); simplify it")
    values = np.zeros(len(text))
    for start, end in json.loads(done.stdout):
        values[start:end] = 1
    return values


# name -> (what it is, per-character function (text, pattern) -> (len(text),), per token)
_FEATURES: dict[str, tuple[str, Callable[[str, str | None], np.ndarray], str]] = {
    "quotes": (
        "1 inside a quotation (between \" or ' marks; an apostrophe inside a word is not "
        "one), else 0",
        _quotes,
        "after",
    ),
    "brackets": ("1 inside ( ) [ ] { }, at any depth, else 0", _brackets, "after"),
    "line-position": (
        "characters since the last line break (the position in the line)",
        _line_position,
        "after",
    ),
    "word-start": (
        "1 where a token starts a word (after a space, line break or punctuation), else 0",
        _word_start,
        "any",
    ),
    "regex": (
        "1 on the characters of each match of a regular expression, else 0",
        _regex,
        "any",
    ),
}
FEATURES: dict[str, str] = {name: about for name, (about, _, _) in _FEATURES.items()}


def spell(tokens: list[str], mode: str) -> tuple[str, list[tuple[int, int]]]:
    """The text display tokens spell (words mode: a space between the words of a line)
    and each token's (start, end) in it."""
    as_read = [EOS if mode == "words" and t == "\n" else t for t in tokens]
    text = detokenize(as_read, mode)
    spans, at = [], 0
    for token in tokens:
        start = text.find(token, at)  # at ``at``, or after the one space detokenize put there
        spans.append((start, start + len(token)))
        at = start + len(token)
    return text, spans


def feature_values(
    tokens: list[str], mode: str, name: str, pattern: str | None = None
) -> np.ndarray:
    """(T,) float64: the feature ``name`` (one of :data:`FEATURES`) of each token."""
    if name not in _FEATURES:
        raise RnnlabError(f"unknown feature {name!r}; choose one of {', '.join(FEATURES)}")
    _, per_character, per_token = _FEATURES[name]
    text, spans = spell(tokens, mode)
    if len(text) > MAX_TEXT_CHARS:  # not from read(): a Reading made by hand
        raise RnnlabError(f"the text is too long; give at most {MAX_TEXT_CHARS:,} characters")
    values = per_character(text, pattern)
    if per_token == "after":
        return np.array([values[end - 1] for _, end in spans])
    return np.array([values[start:end].max() for start, end in spans])


def correlations(feature: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Pearson's r between ``feature`` (T,) and each column of ``units`` (T, N) -> (N,).

    A constant feature or unit (all its values equal) has r = 0: it follows nothing.
    """
    if np.ptp(feature) == 0:
        return np.zeros(units.shape[1])
    x = feature.astype(np.float64) - feature.mean()
    Y = units.astype(np.float64)
    Y -= Y.mean(axis=0)
    constant = np.ptp(units, axis=0) == 0  # centred, they would be rounding errors, not 0
    norms = np.sqrt((x @ x) * (Y * Y).sum(axis=0))
    r = (x @ Y) / np.where(constant, 1.0, norms)
    return np.clip(np.where(constant, 0.0, r), -1.0, 1.0)


# ---------------------------------------------------------------- the lens


class Lens:
    """A trained model with the vocabulary and configuration it was trained with."""

    def __init__(
        self,
        cfg: TrainConfig,
        vocab: Vocab,
        model: nn.Module,
        history: list[dict[str, Any]] | None = None,
    ):
        self.cfg, self.vocab, self.model = cfg, vocab, model
        self.model.eval()  # no dropout: the lens shows the function the model computes
        self.layers, self.hidden, self.cell = cfg.model.layers, cfg.model.hidden, cfg.model.cell
        self.history = list(history or [])  # one dict of metrics per finished epoch
        self._lock = threading.Lock()  # one thread at a time runs the model
        self._validation_text: str | None = None

    @classmethod
    def from_run(cls, run: Path, which: str = "best") -> Lens:
        """The model of run directory ``run``: its "best" checkpoint (the lowest validation
        loss, where it has one) or its "latest". The history is the whole run's (the latest
        checkpoint's: the best one's stops at its epoch)."""
        cfg, vocab, model, ckpt = load_run(Path(run), "cpu", which)
        history = ckpt.history
        if which == "best":
            last, _ = latest(Path(run), cfg, len(vocab))
            if last is not None and len(last.history) > len(history):
                history = last.history
        return cls(cfg, vocab, model, history)

    def read(self, text: str) -> Reading:
        """Feed ``text`` to the model token by token (tokenized as the training text was)."""
        if len(text) > MAX_TEXT_CHARS:
            raise RnnlabError(
                f"the text has {len(text):,} characters; give at most {MAX_TEXT_CHARS:,}"
            )
        mode = self.cfg.mode
        # two tokens at least, so that the model has one to predict; unknown ones are <unk>
        tokens = prompt_tokens(text, mode)
        ids, _ = prompt_ids(tokens, mode, self.vocab, at_least=2)
        if all(i == self.vocab.unk for i in ids):
            raise RnnlabError(
                f"none of the text's tokens is in the model's vocabulary (mode {mode}); give "
                f"text like the text it was trained on"
            )
        states, target_lp, top_lp, top_ids = self._step_through(ids)
        lp = target_lp.double()
        loss = float(-lp.mean())
        top = [
            [(self._shown(self.vocab.to_tokens(i)), p) for i, p in zip(row_ids, row_p)]
            for row_ids, row_p in zip(top_ids.tolist(), top_lp.exp().tolist())
        ]
        return Reading(
            tokens=[self._shown(t) for t in tokens],
            probs=[None, *lp.exp().tolist()],
            top=[[], *top],
            loss_nats=loss,
            loss_bits=bits_per_token(loss),
            activations=states,
        )

    def _shown(self, token: str) -> str:
        """A token as text shows it: words mode's <eos> is a line break."""
        return "\n" if self.cfg.mode == "words" and token == EOS else token

    def _step_through(self, ids: list[int]):
        """Run the model over ``ids`` (T) one token at a time.

        Returns (states: name -> (T, H) float32 arrays, log p of tokens 1..T-1 (T-1,),
        log p of the TOP likeliest tokens at positions 1..T-1 (T-1, k), their ids (T-1, k)).
        """
        T, L, H = len(ids), self.layers, self.hidden
        lstm = CELLS[self.cell].state_parts == 2  # a state (h, c), as the LSTM's
        k = min(TOP, len(self.vocab))
        h_all = torch.zeros(L, T, H)
        c_all = torch.zeros(L, T, H) if lstm else None
        target_lp = torch.zeros(T - 1)
        top_lp, top_ids = torch.zeros(T - 1, k), torch.zeros(T - 1, k, dtype=torch.long)
        model: Any = self.model  # the interface of rnnlab.models: forward and begin_state
        head = getattr(model, "adaptive", None)  # an adaptive softmax, or None
        inputs = torch.tensor(ids).reshape(T, 1, 1)  # (T, B=1, 1): one (1, 1) batch per step
        with self._lock, torch.no_grad():
            state = model.begin_state(1, "cpu")
            for t in range(T):
                scores, state = model(inputs[t], state)  # (1, V), or features (1, H)
                h = state[0] if lstm else state  # (L, 1, H)
                h_all[:, t] = h[:, 0]
                if c_all is not None:
                    c_all[:, t] = state[1][:, 0]
                if t + 1 == T:
                    break  # the last token predicts nothing in the text
                lp = head.log_prob(scores) if head is not None else scores.log_softmax(-1)
                target_lp[t] = lp[0, ids[t + 1]]
                top_lp[t], top_ids[t] = lp[0].topk(k)
        states = {f"h{layer + 1}": h_all[layer].numpy() for layer in range(L)}
        if c_all is not None:
            states.update({f"c{layer + 1}": c_all[layer].numpy() for layer in range(L)})
        return states, target_lp, top_lp, top_ids

    def default_text(self, max_chars: int = 2000) -> str:
        """The start of the run's validation text, at most ``max_chars`` characters (words
        mode: whole words); the run's training prompt where the corpus cannot be read."""
        if not 1 <= max_chars <= MAX_TEXT_CHARS:
            raise RnnlabError(f"max_chars {max_chars} is out of range; use 1 to {MAX_TEXT_CHARS:,}")
        if self._validation_text is None:
            cfg = self.cfg
            try:
                data = prepare(
                    cfg.source,
                    cfg.mode,
                    cfg.max_tokens,
                    cfg.val_frac,
                    cfg.batch_size,
                    cfg.num_steps,
                    vocab=self.vocab,
                )
            except RnnlabError:  # the corpus moved or changed since training
                return (cfg.prefix or "")[:max_chars]
            # every token is at least one character: this many make the longest text asked
            start = data.val_ids[:MAX_TEXT_CHARS].tolist()
            self._validation_text = detokenize(self.vocab.to_tokens(start), cfg.mode)
        text = self._validation_text
        if len(text) <= max_chars:
            return text
        cut = text[:max_chars]
        if self.cfg.mode == "words" and not text[max_chars].isspace():
            cut = cut[: max(cut.rfind(" "), cut.rfind("\n")) + 1] or cut  # no half word
        return cut

    def feature(self, reading: Reading, name: str, pattern: str | None = None) -> np.ndarray:
        """(T,) float64: the feature ``name`` (one of :data:`FEATURES`) of each token of
        ``reading``; ``pattern``: the regular expression of "regex" (ignored by the others)."""
        return feature_values(reading.tokens, self.cfg.mode, name, pattern)

    def rank_units(
        self, reading: Reading, name: str, pattern: str | None = None, top: int = 10
    ) -> list[dict[str, Any]]:
        """The ``top`` units (of every layer, hidden and cell states) whose activations
        correlate most with the feature, by |Pearson's r|, largest first.

        Each is {"layer": 1-based, "kind": "h" or "c", "unit": index in the layer, "r": r}.
        """
        if top < 1:
            raise RnnlabError(f"top {top} is out of range; ask for at least one unit")
        values = self.feature(reading, name, pattern)
        # (layer, kind, unit, r) of every unit, in the order of the activations
        units: list[tuple[int, str, int, float]] = []
        for key, activations in reading.activations.items():  # "h1", ..., "c1", ...
            rs = correlations(values, activations)
            units.extend((int(key[1:]), key[0], unit, float(r)) for unit, r in enumerate(rs))
        units.sort(key=lambda u: -abs(u[3]))  # stable: ties keep that order
        return [
            {"layer": layer, "kind": kind, "unit": unit, "r": r}
            for layer, kind, unit, r in units[:top]
        ]

    def stream(
        self,
        prefix: str,
        length: int,
        temperature: float = 0.0,
        top_k: int = 0,
        seed: int | None = None,
    ) -> Iterator[str]:
        """Continue ``prefix`` by ``length`` tokens: the prefix, then one piece per token
        (:func:`rnnlab.generate.stream_text`). Temperature 0 is greedy.

        Mistakes are raised here, before the first piece, not part way through.
        """
        GenerateConfig(  # the checks of rnnlab generate's options
            prefix=prefix, length=length, temperature=temperature, top_k=top_k, seed=seed
        )
        if length > MAX_GENERATE:
            raise RnnlabError(f"length {length:,} is out of range; generate 1 to {MAX_GENERATE:,}")
        if len(prefix) > MAX_TEXT_CHARS:
            raise RnnlabError(
                f"the prefix has {len(prefix):,} characters; give at most {MAX_TEXT_CHARS:,}"
            )
        pieces = stream_text(
            self.model, self.vocab, self.cfg.mode, prefix, length, temperature, top_k, seed, "cpu"
        )
        first = next(pieces)  # tokenizes the prefix: an empty one is an error now
        return self._one_thread_at_a_time(first, pieces)

    def _one_thread_at_a_time(self, first: str, pieces: Iterator[str]) -> Iterator[str]:
        """``first``, then ``pieces``, each computed holding the model's lock (released
        between pieces, so that a slow reader of one stream does not stop the others)."""
        yield first
        while True:
            with self._lock:
                piece = next(pieces, None)
            if piece is None:
                return
            yield piece

    def training(self) -> dict[str, Any]:
        """How the model was trained: {"config": config.json's options, "history": one dict
        of metrics per epoch (epoch, train_ppl, val_ppl, val_bpt, ...)}."""
        return {"config": self.cfg.to_dict(), "history": [dict(r) for r in self.history]}
