"""Shared data and training loop for the "hello" -> "ohlol" exercise.

The task is a toy sequence-to-sequence mapping at character level: at time
step t the network sees the t-th character of "hello" and must emit the t-th
character of "ohlol". The four distinct characters form the vocabulary, in
the order ``idx2char = ['e', 'h', 'l', 'o']``.

Shapes of the tensors built here:

* ``one_hot_inputs()``   -> (seq_len=5, batch=1, input_size=4), float, time-major
* ``index_inputs()``     -> (batch=1, seq_len=5), long, batch-first
* ``targets()``          -> (seq_len * batch = 5,), long
"""

from collections.abc import Callable, Iterable

import torch
from torch import nn

idx2char = ["e", "h", "l", "o"]
char2idx = {ch: i for i, ch in enumerate(idx2char)}

INPUT_STRING = "hello"
TARGET_STRING = "ohlol"
VOCAB_SIZE = len(idx2char)


def encode(text: str) -> torch.Tensor:
    return torch.tensor([char2idx[ch] for ch in text], dtype=torch.long)


def decode(indices: Iterable) -> str:
    # Accept tensors as well as plain ints so callers can pass argmax output directly.
    return "".join(idx2char[int(i)] for i in indices)


def one_hot_inputs() -> torch.Tensor:
    # The batch axis of size 1 sits in the middle because nn.RNNCell steps and
    # nn.RNN without batch_first both expect (seq_len, batch, features).
    return nn.functional.one_hot(encode(INPUT_STRING), VOCAB_SIZE).float().unsqueeze(1)


def index_inputs() -> torch.Tensor:
    return encode(INPUT_STRING).unsqueeze(0)


def targets() -> torch.Tensor:
    # With batch=1 the flattened (seq_len * batch) order equals the string order,
    # whether the model ran time-major or batch-first.
    return encode(TARGET_STRING)


def sequence_loss(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of (seq_len * batch, vocab) logits against the target string."""
    loss = nn.functional.cross_entropy(logits, targets())
    return loss, logits.argmax(dim=1)


def train(
    model: nn.Module,
    step: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    epochs: int,
    lr: float = 0.1,
    quiet: bool = False,
) -> str:
    """Optimise ``model`` with Adam; ``step()`` returns (loss, predicted indices).

    Returns the string the trained model predicts, from a forward pass made
    after the last update (so ``epochs=0`` gives the untrained prediction).
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(1, epochs + 1):
        optimizer.zero_grad()
        loss, predicted = step()
        loss.backward()
        optimizer.step()
        if not quiet:
            # Like the course, report the prediction the loss was computed from,
            # i.e. the one made before this epoch's update.
            print(
                f"Predicted string: {decode(predicted)}, "
                f"Epoch [{epoch}/{epochs}] loss={loss.item():.4f}"
            )
    with torch.no_grad():
        _, predicted = step()
    return decode(predicted)
