"""Generation: warm up on a prefix, then predict one token at a time (d2l 8.5.4).

Warm-up feeds every prefix token but the last through the model to build the
state, discarding the outputs; the last prefix token is then the first input
whose prediction is kept. Each prediction is either the most likely token
(greedy, d2l's predict_ch8), or a sample from softmax(logits / temperature),
optionally restricted to the ``top_k`` most likely tokens. A model with an
adaptive softmax is sampled from its full distribution: the log-probabilities of
its ``adaptive`` layer serve as the logits (softmax of them is that distribution).

``continue_text`` is the one path from a text prompt to a text continuation:
the command line's ``generate`` and the samples printed during training use it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import torch

from .errors import RnnlabError
from .options import MAX_LENGTH
from .tokenize import EOS, detokenize, prompt_tokens
from .vocab import Vocab


def next_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> int:
    """Choose the next token id from logits (V,): greedy if temperature is 0.

    A positive temperature samples from softmax(logits / temperature), computed as
    softmax((logits - max) / temperature), the same distribution: the shifted logits are
    at most 0, so even a subnormal temperature gives 0 or -inf, never inf - inf. Where
    exp underflows for every token but the likeliest, the sample is greedy (among ties,
    a uniform choice). Logits holding inf or nan are answered greedily.
    """
    if not math.isfinite(temperature):
        raise RnnlabError(f"temperature must be a finite number, not {temperature}")
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits.double()
    largest = logits.max()
    if not bool(torch.isfinite(largest)):  # inf, or nan (max propagates it)
        return int(logits.argmax())
    scaled = (logits - largest) / temperature  # (V,): <= 0, the largest exactly 0
    if 0 < top_k < scaled.numel():
        # Chosen on the logits themselves: shifting can round two of them to one value.
        kth = torch.topk(logits, top_k).values[-1]
        scaled = scaled.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=0)  # exp(0) = 1 is in the sum: never 0 / 0
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def generate_ids(
    model,
    prefix_ids: list[int],
    num_preds: int,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int | None = None,
    device=None,
) -> list[int]:
    """prefix ids followed by ``num_preds`` generated ids."""
    return list(prefix_ids) + list(
        iter_ids(model, prefix_ids, num_preds, temperature, top_k, seed, device)
    )


def iter_ids(
    model,
    prefix_ids: list[int],
    num_preds: int,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int | None = None,
    device=None,
) -> Iterator[int]:
    """The ``num_preds`` ids generated after ``prefix_ids``, each as soon as it is chosen."""
    if not prefix_ids:
        raise RnnlabError("the prefix is empty; give at least one token with --prefix")
    if not 0 <= num_preds <= MAX_LENGTH:
        raise RnnlabError(f"length {num_preds} is out of range; use 1 to {MAX_LENGTH}")
    was_training = model.training
    model.eval()
    device = device if device is not None else next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    head = getattr(model, "adaptive", None)
    try:
        with torch.no_grad():
            state = model.begin_state(1, device)
            if len(prefix_ids) > 1:  # warm-up: one call over prefix[:-1] = one per token
                warm = torch.tensor([prefix_ids[:-1]], device=device)  # (1, T)
                _, state = model(warm, state)
            last = prefix_ids[-1]
            for _ in range(num_preds):
                scores, state = model(torch.tensor([[last]], device=device), state)  # (1, V)
                if head is not None:  # scores are the features (1, H): log-probs (1, V)
                    scores = head.log_prob(scores)
                last = next_token(scores[0], temperature, top_k, generator)
                yield last
    finally:
        model.train(was_training)


def prompt_ids(
    prompt: str | list[str], mode: str, vocab: Vocab, at_least: int = 1
) -> tuple[list[int], list[str]]:
    """(ids, tokens not in the vocabulary) of a prompt: the one way text becomes the ids a
    model reads (generate, the samples of training, the inspection page, the book's predict).

    ``prompt``: text, tokenized as the training text was (``tokenize.prompt_tokens``), or a
    list of tokens already split. Unknown tokens are read as <unk>; fewer than
    ``at_least`` tokens is an error.
    """
    tokens = list(prompt) if isinstance(prompt, list) else prompt_tokens(prompt, mode)
    if len(tokens) < at_least:
        if not tokens and at_least == 1:
            shown = f" {prompt!r}" if isinstance(prompt, str) else ""
            raise RnnlabError(
                f"the prompt{shown} has no tokens in mode {mode!r}; give a prompt with some text"
            )
        raise RnnlabError(
            f"the text has {len(tokens)} token(s) in mode {mode}; give at least {at_least}"
        )
    return vocab[tokens], vocab.unknown(tokens)


def continue_text(
    model,
    vocab: Vocab,
    mode: str,
    prompt: str,
    length: int,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int | None = None,
    device=None,
) -> str:
    """The prompt followed by ``length`` generated tokens, as text."""
    return "".join(
        stream_text(model, vocab, mode, prompt, length, temperature, top_k, seed, device)
    )


def stream_text(
    model,
    vocab: Vocab,
    mode: str,
    prompt: str,
    length: int,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int | None = None,
    device=None,
) -> Iterator[str]:
    """:func:`continue_text` in pieces, as they are generated: the prompt, then one piece
    per token (words mode: with the space before it, none next to a line break)."""
    ids, _ = prompt_ids(prompt, mode, vocab)
    if mode == "words":
        prompt = prompt.rstrip(" \t")
    yield prompt
    previous = EOS if prompt.endswith("\n") or not prompt else None  # what came before
    for token in map(
        vocab.to_tokens, iter_ids(model, ids, length, temperature, top_k, seed, device)
    ):
        if mode != "words":
            yield token
        elif token == EOS:
            yield "\n"
        else:
            yield token if previous == EOS else " " + token
        previous = token


DEFAULT_PROMPT_CHARS = 24  # at most this much of the run's text becomes its default prompt


def default_prompt(tokens: list[str], mode: str) -> str:
    """A prompt taken from the start of a run's own training text (its first tokens).

    Words mode: the first three words. Otherwise the first non-blank line, whole
    (with its line break) if it is short, else cut after its last space within
    ``DEFAULT_PROMPT_CHARS`` characters, or after 8 characters where it has no
    space (text without spaces between words, such as Chinese).
    """
    if mode == "words":
        words = [t for t in tokens[:50] if t != EOS][:3]
        return " ".join(words) + " " if words else ""
    text = detokenize(tokens[:400], mode)
    for line in text.split("\n"):
        if not line.strip():
            continue
        line = line.lstrip()
        if len(line) <= DEFAULT_PROMPT_CHARS:
            return line + "\n" if mode == "chars" and len(line) < len(text) else line
        space = line.rfind(" ", 0, DEFAULT_PROMPT_CHARS + 1)
        return line[: space + 1] if space > 0 else line[:8]
    return ""


def predict(model, prefix_tokens: list[str], num_preds: int, vocab: Vocab, **kwargs) -> list[str]:
    """Tokens of the prefix followed by ``num_preds`` generated tokens (the book's
    predict_ch8, on :func:`prompt_ids`); unknown prefix tokens become <unk> with a warning."""
    ids, missing = prompt_ids(list(prefix_tokens), "chars", vocab, at_least=0)
    if missing:
        warnings.warn(
            f"prefix tokens not in the vocabulary map to <unk>: "
            f"{', '.join(repr(t) for t in missing)}",
            stacklevel=2,
        )
    return vocab.to_tokens(generate_ids(model, ids, num_preds, **kwargs))
