"""Language models behind one interface.

Every model takes X (B, T) token ids and a state, and returns logits (T*B, V)
(time-major rows) and the new state; ``begin_state(B, device)`` gives the zero
state. ``build_model(config, V)`` makes the one a ``ModelConfig`` describes.

One exception: a model with an adaptive softmax (``--adaptive-softmax``) returns
the features (T*B, H) its output layer reads, and holds that layer as ``adaptive``
(an nn.AdaptiveLogSoftmaxWithLoss: ``adaptive(features, y).output`` is log p(y)
per row, ``adaptive.log_prob(features)`` the full (T*B, V) log-probabilities).
``train.sequence_loss`` and generation look for it; every other model has none.

Adding an implementation: its name and description in rnnlab.options.IMPLS, its module, and
a branch in ``build_model``; the configuration, the command line and the docs take their
lists from rnnlab.options.

``memory_estimate`` and ``check_fits`` say, from the sizes alone and before anything
is allocated, whether a model can train on this machine.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from torch import nn

from ..errors import RnnlabError
from ..options import CELLS, EXPERIMENTAL_IMPLS, IMPLS, ONE_HOT_IMPLS
from .cells import CELLS as CELL_REGISTRY
from .layout import num_gates
from .scratch import ScratchLM
from .torchnn import ADAPTIVE_DIV, RNNEncoder, TorchLM, adaptive_cutoffs

if TYPE_CHECKING:
    from ..config import ModelConfig

assert CELLS == tuple(CELL_REGISTRY), "options.CELLS names the entries of models.cells.CELLS"


def usable_impl(impl: str) -> tuple[str, str | None]:
    """The implementation that will run for ``impl``, and why it differs (or None).

    ``fused`` and ``triton`` fall back to ``scratch`` (the same function and
    parameters, only slower) where their module cannot be imported.
    """
    if impl in ("fused", "triton"):
        try:
            from . import fused  # noqa: F401
        except ImportError as e:
            return "scratch", f"the {impl} implementation is not available ({e})"
    return impl, None


def check_device(config: ModelConfig, device_type: str) -> None:
    """Raise RnnlabError if the model ``config`` describes cannot train on ``device_type``.

    Only the experimental ``triton`` has conditions (rnnlab.experimental.triton_model: a
    CUDA GPU, Triton, a hidden size its kernels support). Call it once the device is known.
    """
    if config.impl in EXPERIMENTAL_IMPLS:
        from ..experimental.triton_model import check_device as check_triton

        check_triton(config, device_type)


def build_model(config: ModelConfig, vocab_size: int) -> nn.Module:
    """The language model ``config`` describes, for a vocabulary of ``vocab_size`` (V) tokens."""
    impl, _ = usable_impl(config.impl)
    if impl == "torch":
        return TorchLM(
            vocab_size,
            config.hidden,
            config.layers,
            config.cell,
            config.dropout,
            config.embedding,
            config.tie_weights,
            dropout_input=config.dropout_input,
            locked_dropout=config.locked_dropout,
            adaptive_softmax=config.adaptive_softmax,
            cutoffs=config.cutoffs,
        )
    if impl == "scratch":
        return ScratchLM(vocab_size, config.hidden, config.layers, config.cell)
    if impl in EXPERIMENTAL_IMPLS:
        from ..experimental.triton_model import TritonLM

        return TritonLM(vocab_size, config.hidden, config.layers, config.cell)
    from .fused import FusedLM

    return FusedLM(vocab_size, config.hidden, config.layers, config.cell)


def parameter_count(config: ModelConfig, vocab_size: int) -> int:
    """How many numbers the model ``config`` describes holds, for V = ``vocab_size``.

    With G gates (1 RNN, 3 GRU, 4 LSTM), H hidden units, L layers and D the input
    size of a layer (V, or E with an embedding, for the first; H above it):

        one-hot (ONE_HOT_IMPLS)   per layer G*(D*H + H*H + H), + H for the GRU's b_hh
        torch                     per layer G*(D*H + H*H + 2*H); + V*E for the embedding
        output layer              H*V + V (less V*E when the weights are tied)
        adaptive softmax          (H + 1)*(c_1 + n) for the head, with n clusters whose
                                  ids start at c_1 < ... < c_n (c_{n+1} = V); cluster i
                                  H*h_i + h_i*(c_{i+1} - c_i), h_i = H // 4**i
    """
    V, H, L, E = vocab_size, config.hidden, config.layers, config.embedding
    G = num_gates(config.cell)
    if config.impl == "torch":
        layer = lambda D: G * (D * H + H * H + 2 * H)
        tied = V * E if config.tie_weights else 0
        output = H * V + V - tied
        if config.adaptive_softmax:
            c = adaptive_cutoffs(V, H, config.cutoffs) + [V]
            n = len(c) - 1
            h = [H // ADAPTIVE_DIV**i for i in range(1, n + 1)]
            output = (H + 1) * (c[0] + n) + sum(
                H * h[i] + h[i] * (c[i + 1] - c[i]) for i in range(n)
            )
        return V * E + layer(E or V) + (L - 1) * layer(H) + output
    extra = H if CELL_REGISTRY[config.cell].recurrent_bias else 0  # the GRU's b_hh
    layer = lambda D: G * (D * H + H * H + H) + extra
    return layer(V) + (L - 1) * layer(H) + H * V + V


def _memory_parts(
    config: ModelConfig, vocab_size: int, batch_size: int, num_steps: int, optimizer: str
) -> tuple[int, int]:
    """(bytes of parameters, gradients and optimizer state; bytes of activations)."""
    V, H, L, G = vocab_size, config.hidden, config.layers, num_gates(config.cell)
    copies = 2 + (0 if optimizer == "sgd" else 2)  # weights, gradients, optimizer state
    inputs = config.embedding or V  # the one-hot or embedded input of each step
    per_row = inputs + L * (G + 1) * H + 2 * V
    return 4 * copies * parameter_count(config, V), 4 * num_steps * batch_size * per_row


def memory_estimate(
    config: ModelConfig, vocab_size: int, batch_size: int, num_steps: int, optimizer: str = "sgd"
) -> int:
    """About how many bytes one training step of ``config`` needs, in float32.

    With P = :func:`parameter_count`, B = ``batch_size``, T = ``num_steps``, G gates,
    H hidden units, L layers and D0 the input size (V one-hot, or E embedded):

        bytes = 4 * (P * (2 + S) + T * B * (D0 + L * (G + 1) * H + 2 * V))

    P * 2: the weights and their gradients; S: the copies of the weights the
    optimizer keeps (0 for SGD without momentum; 2, the first and second moments, for
    Adam, AdamW and any other); per step and stream, the input, G*H gate values and
    H outputs per layer kept for the backward pass (the LSTM's cell state is left
    out), and the (T*B, V) logits and their gradient (with an adaptive softmax, an upper
    bound: it scores the head for every row and each tail only for the rows whose
    target is in it). Python ints: no overflow, and nothing is allocated.
    """
    weights, activations = _memory_parts(config, vocab_size, batch_size, num_steps, optimizer)
    return weights + activations


def machine_memory() -> int | None:
    """This machine's physical memory in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows), or no such name
        return None


def _size(n: int) -> str:
    """Bytes as a message shows them: 3.2 GiB, 12 MiB, 800 bytes."""
    if n >= 2**30:
        return f"{n / 2**30:,.1f} GiB"
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n:,} bytes"


def check_fits(
    config: ModelConfig,
    vocab_size: int,
    batch_size: int,
    num_steps: int,
    optimizer: str = "sgd",
    available: int | None = None,
) -> None:
    """Raise RnnlabError if training ``config`` needs more memory than the machine has.

    ``available``: the bytes to measure against (default: :func:`machine_memory`;
    nothing is checked where that is unknown). Call it before building the model.
    """
    if available is None:
        available = machine_memory()
        if available is None:
            return
    weights, activations = _memory_parts(config, vocab_size, batch_size, num_steps, optimizer)
    if weights + activations > available:
        raise RnnlabError(
            f"the model would need about {_size(weights + activations)} (parameters, "
            f"gradients and optimizer state {_size(weights)}, activations "
            f"{_size(activations)}), more than this machine's {_size(available)}; use a "
            f"smaller --hidden/--layers/--batch-size/--num-steps"
        )


__all__ = [
    "ScratchLM",
    "TorchLM",
    "RNNEncoder",
    "build_model",
    "usable_impl",
    "check_device",
    "parameter_count",
    "memory_estimate",
    "check_fits",
    "machine_memory",
    "CELLS",
    "IMPLS",
    "ONE_HOT_IMPLS",
    "EXPERIMENTAL_IMPLS",
]
