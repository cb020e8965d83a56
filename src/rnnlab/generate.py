"""Generation: warm up on a prefix, then predict one token at a time (d2l 8.5.4).

Warm-up feeds every prefix token but the last through the model to build the
state, discarding the outputs; the last prefix token is then the first input
whose prediction is kept. Each prediction is either the most likely token
(greedy, d2l's predict_ch8), or a sample from softmax(logits / temperature),
optionally restricted to the ``top_k`` most likely tokens.
"""
from __future__ import annotations

import warnings
from typing import List, Optional

import torch

from .errors import RnnlabError
from .vocab import Vocab

MAX_LENGTH = 1_000_000


def next_token(logits: torch.Tensor, temperature: float = 0.0, top_k: int = 0,
               generator: Optional[torch.Generator] = None) -> int:
    """Choose the next token id from logits (V,): greedy if temperature is 0."""
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits.double() / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=0)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


@torch.no_grad()
def generate_ids(model, prefix_ids: List[int], num_preds: int, temperature: float = 0.0,
                 top_k: int = 0, seed: Optional[int] = None, device=None) -> List[int]:
    """prefix ids followed by ``num_preds`` generated ids."""
    if not prefix_ids:
        raise RnnlabError("the prefix is empty; give at least one token with --prefix")
    if not 0 <= num_preds <= MAX_LENGTH:
        raise RnnlabError(f"length {num_preds} is out of range; use 1 to {MAX_LENGTH}")
    was_training = model.training
    model.eval()
    device = device if device is not None else next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    state = model.begin_state(1, device)
    if len(prefix_ids) > 1:  # warm-up: one call over prefix[:-1] is the same as one per token
        warm = torch.tensor([prefix_ids[:-1]], device=device)  # (1, T)
        _, state = model(warm, state)
    outputs = list(prefix_ids)
    for _ in range(num_preds):
        logits, state = model(torch.tensor([[outputs[-1]]], device=device), state)  # (1, V)
        outputs.append(next_token(logits[0], temperature, top_k, generator))
    model.train(was_training)
    return outputs


def prefix_to_ids(prefix_tokens: List[str], vocab: Vocab) -> List[int]:
    """Map prefix tokens to ids; unknown ones become <unk> with a warning."""
    missing = vocab.unknown(prefix_tokens)
    if missing:
        warnings.warn(f"prefix tokens not in the vocabulary map to <unk>: "
                      f"{', '.join(repr(t) for t in missing)}", stacklevel=2)
    return vocab[list(prefix_tokens)]


def predict(model, prefix_tokens: List[str], num_preds: int, vocab: Vocab, **kwargs) -> List[str]:
    """Tokens of the prefix followed by ``num_preds`` generated tokens."""
    return vocab.to_tokens(generate_ids(model, prefix_to_ids(prefix_tokens, vocab), num_preds,
                                        **kwargs))
