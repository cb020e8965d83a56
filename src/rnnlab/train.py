"""Training, as d2l 8.5 does it: cross-entropy, clipping by the global norm, perplexity.

The loop knows nothing of files or the command line. One epoch is

    for each batch (X, Y) of shape (B, T):
        state = fresh zeros (random sampling) or the last state, detached (sequential)
        logits, state = model(X, state)                  # logits (T*B, V)
        loss = cross_entropy(logits, Y.T.reshape(-1))    # Y.T: rows are time-major too
        backward; clip the gradient to global L2 norm <= theta; optimizer step

A model with an adaptive softmax returns features instead of logits, and its
``adaptive`` layer gives the loss (:func:`sequence_loss`).

Perplexity is exp(mean loss per token). Losses and gradient norms stay in
device tensors and are read every ``check_every`` batches (each batch on the
CPU), which is also where a non-finite loss or gradient is caught, naming the
batch it happened at.

Adding an optimizer: its name in rnnlab.options.OPTIMIZERS (the configuration and the command
line take their list from there) and its class in ``OPTIMIZER_CLASSES`` here.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .batches import block_batches, eval_batches
from .errors import RnnlabError
from .models.cells import map_state
from .options import DEVICES, OPTIMIZERS, PRECISIONS

# name -> optimizer class; each is made with its defaults, the run's learning rate and,
# where given, its weight decay.
OPTIMIZER_CLASSES: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,  # d2l's choice, with lr 1
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}
assert tuple(OPTIMIZER_CLASSES) == OPTIMIZERS, "rnnlab.options lists the optimizers"
# --precision -> the dtype torch.autocast computes in (None: no autocast)
AUTOCAST: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}
assert tuple(AUTOCAST) == PRECISIONS, "rnnlab.options lists the precisions"


class NonFiniteError(RnnlabError):
    """The loss or the gradient stopped being a finite number."""


def make_optimizer(
    name: str, params, lr: float, weight_decay: float | None = None
) -> torch.optim.Optimizer:
    """The optimizer called ``name`` in :data:`OPTIMIZERS`, over ``params``, with rate ``lr``.

    ``weight_decay`` (lambda; None: the optimizer's default, 0, or 0.01 for AdamW): SGD
    and Adam add lambda * w to the gradient (L2 regularization); AdamW decays the
    weights apart from the gradient, w <- w - lr * lambda * w each step, before its
    Adam update (decoupled weight decay, Loshchilov & Hutter 2019).
    """
    if name not in OPTIMIZERS:
        raise RnnlabError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    if weight_decay is None:
        return OPTIMIZER_CLASSES[name](params, lr=lr)
    return OPTIMIZER_CLASSES[name](params, lr=lr, weight_decay=weight_decay)


def resolve_device(name: str) -> torch.device:
    """auto -> cuda where a GPU is available, else cpu; cuda without a GPU is an error."""
    if name not in DEVICES:
        raise RnnlabError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RnnlabError(
            "--device cuda was given but no CUDA GPU is available to torch; use "
            "--device cpu (or auto)"
        )
    return torch.device(name)


def grad_clipping(params, theta: float) -> torch.Tensor:
    """Scale all gradients so their global L2 norm is at most ``theta`` (d2l 8.5.5).

    g <- min(1, theta / ||g||) g, with ||g|| over every parameter together.
    Returns the norm before clipping, as a 0-d tensor (no host sync).
    """
    grads = [p.grad for p in params if p.grad is not None]
    # the per-tensor norms in one call (what torch.nn.utils.clip_grad_norm_ does too)
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    scale = torch.clamp(theta / norm, max=1.0)  # inf/nan norms surface through the returned norm
    torch._foreach_mul_(grads, scale)
    return norm


def detach_state(state):
    """Cut the graph behind a carried state (word_language_model's repackage_hidden)."""
    return map_state(torch.Tensor.detach, state)


def sequence_loss(
    outputs: torch.Tensor, Y: torch.Tensor, model=None, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of a model's outputs against targets Y (B, T): the mean per token, or "sum".

    outputs: logits (T*B, V); or, for a ``model`` with an adaptive softmax, the features
    (T*B, H) that its ``adaptive`` layer scores (-log p(y) without all V logits).
    """
    y = Y.T.reshape(-1)  # time-major, as the rows of the outputs
    head = getattr(model, "adaptive", None)
    if head is None:
        return F.cross_entropy(outputs, y, reduction=reduction)
    dtype = head.head.weight.dtype
    if outputs.dtype == dtype:
        result = head(outputs, y)  # .output: log p(y) per row; .loss: their negated mean
    else:  # features of --precision bfloat16's autocast: the head scores in the weights' dtype
        with torch.autocast(outputs.device.type, enabled=False):
            result = head(outputs.to(dtype), y)
    return -result.output.sum() if reduction == "sum" else result.loss


class BatchLoss(torch.nn.Module):
    """A model and its loss as one module: (X, Y (B, T), state) -> (mean loss, new state).

    What DistributedDataParallel wraps in a data-parallel run, so that every parameter,
    an adaptive softmax's included, is used inside the wrapped forward.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, X: torch.Tensor, Y: torch.Tensor, state):
        outputs, state = self.model(X, state)
        return sequence_loss(outputs, Y, self.model), state


def train_step(
    model, optimizer, X, Y, state, clip: float, batch_loss=None, autocast: torch.dtype | None = None
):
    """One update on batch X, Y (B, T) from ``state``: returns (loss, grad norm, new state).

    ``batch_loss(X, Y, state) -> (loss, state)`` computes the loss instead of the model
    and :func:`sequence_loss` (a DDP-wrapped :class:`BatchLoss` averages the gradients).
    ``autocast`` (e.g. torch.bfloat16, :data:`AUTOCAST`): the forward pass under
    torch.autocast, which runs the matrix products and torch.nn's recurrent layers in that
    dtype and the loss in float32; the gradients reach the float32 weights in float32, and
    the carried state is kept in the weights' dtype, as a float32 run keeps it.
    """
    with torch.autocast(X.device.type, autocast) if autocast else contextlib.nullcontext():
        if batch_loss is None:
            outputs, state = model(X, state)
            loss = sequence_loss(outputs, Y, model)
        else:
            loss, state = batch_loss(X, Y, state)
    if autocast:
        dtype = next(model.parameters()).dtype
        state = map_state(lambda s: s.to(dtype), state)
    optimizer.zero_grad()  # grads to None: backward then stores them without adding to zeros
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    norm = grad_clipping(params, clip)
    optimizer.step()
    return loss.detach(), norm.detach(), detach_state(state)


Step = Callable[[torch.Tensor, torch.Tensor, object], tuple]


def make_step(model, optimizer, clip: float, batch_loss=None, precision: str = "float32") -> Step:
    """The training step of a run: ``step(X, Y, state) -> (loss, norm, state)``.

    ``batch_loss``: as :func:`train_step`'s; ``precision``: a name of :data:`PRECISIONS`
    (``--precision``). ``--cuda-graph``'s step, which computes the same in float32, is
    rnnlab.experimental.cuda_graph's ``graphed_step``.
    """
    if precision not in PRECISIONS:
        raise RnnlabError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    autocast = AUTOCAST[precision]

    def step(X, Y, state):
        return train_step(model, optimizer, X, Y, state, clip, batch_loss, autocast)

    return step


@dataclass
class EpochProgress:
    """Where an epoch stands: enough to resume it exactly and to report it."""

    batch: int = 0  # batches finished in this epoch
    loss_sum: float = 0.0  # sum over finished batches of (mean loss of the batch * tokens)
    tokens: int = 0
    seconds: float = 0.0
    state: object = None  # the carried state (sequential sampling), detached
    last_finite_loss: float = float("nan")

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.tokens, 1)

    @property
    def ppl(self) -> float:
        return perplexity(self.loss)


def run_epoch(
    model,
    optimizer,
    X_all: torch.Tensor,
    Y_all: torch.Tensor,
    *,
    sampling: str,
    clip: float,
    progress: EpochProgress | None = None,
    epoch: int = 0,
    step: Step | None = None,
    check_every: int | None = None,
    on_batch: Callable[[EpochProgress], bool] | None = None,
    batch_tokens: int | None = None,
) -> EpochProgress:
    """Train on batches X_all, Y_all (num_batches, B, T), starting at ``progress.batch``.

    ``step(X, Y, state) -> (loss, norm, state)`` defaults to :func:`make_step`'s.
    ``batch_tokens``: the tokens each batch's mean loss stands for (default B*T; in a
    data-parallel run, where the step returns the global batch's loss, all of its tokens).
    ``on_batch(progress)`` runs after every checked batch (each batch on the CPU);
    if it returns True the epoch stops early (for interrupts), leaving ``progress``
    ready to resume. Raises NonFiniteError naming the first bad batch.
    """
    progress = progress or EpochProgress()
    device = X_all.device
    B, T = X_all.shape[1], X_all.shape[2]
    tokens = B * T if batch_tokens is None else batch_tokens
    if step is None:
        step = make_step(model, optimizer, clip)
    if check_every is None:
        check_every = 1 if device.type == "cpu" else 50
    model.train()
    pending: list = []  # (batch index, loss tensor, norm tensor) not yet read on the host

    def settle() -> None:
        values = torch.stack([torch.stack([l.float(), n.float()]) for _, l, n in pending]).tolist()
        for (i, _, _), (loss, norm) in zip(pending, values):
            if not (math.isfinite(loss) and math.isfinite(norm)):
                what = "loss" if not math.isfinite(loss) else "gradient norm"
                raise NonFiniteError(
                    f"the {what} became {loss if what == 'loss' else norm} at epoch {epoch + 1}, "
                    f"batch {i + 1}; the last finite loss was {progress.last_finite_loss:.4f}; "
                    f"lower --lr or --clip and train again (the last checkpoint is kept)"
                )
            progress.loss_sum += loss * tokens
            progress.tokens += tokens
            progress.last_finite_loss = loss
        pending.clear()

    state = progress.state
    start = time.perf_counter()
    for i in range(progress.batch, len(X_all)):
        if sampling == "random" or state is None:
            state = model.begin_state(B, device)
        loss, norm, state = step(X_all[i], Y_all[i], state)
        pending.append((i, loss, norm))
        if len(pending) >= check_every or i == len(X_all) - 1:
            settle()
            progress.batch = i + 1
            progress.state = state
            progress.seconds += time.perf_counter() - start
            start = time.perf_counter()
            if on_batch is not None and on_batch(progress):
                break
    return progress  # the last batch always settles, so nothing is pending here


@torch.no_grad()
def loss_sum(model, X_all: torch.Tensor, Y_all: torch.Tensor) -> float:
    """Summed loss (nats) over sequential batches X_all, Y_all (nb, B, T), state carried.

    0 for no streams (B = 0: a process with no share of a small validation split).
    """
    if X_all.numel() == 0:
        return 0.0
    model.eval()
    state = model.begin_state(X_all.shape[1], X_all.device)
    total = torch.zeros((), dtype=torch.float64, device=X_all.device)
    for X, Y in zip(X_all, Y_all):
        outputs, state = model(X, state)
        total += sequence_loss(outputs, Y, model, reduction="sum").double()
    model.train()
    return total.item()


def evaluate(model, X_all: torch.Tensor, Y_all: torch.Tensor) -> float:
    """Mean loss per token over sequential batches X_all, Y_all (nb, B, T), state carried."""
    return loss_sum(model, X_all, Y_all) / Y_all.numel()


def evaluate_blocks(model, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean loss per token over blocks scored each from a zero state: ``pairs`` of (X, Y)
    (1, B, T) as :func:`rnnlab.batches.block_batches` makes them (nanoGPT's protocol)."""
    total = sum(loss_sum(model, X, Y) for X, Y in pairs)
    return total / sum(Y.numel() for _, Y in pairs)


def score_text(
    model, ids: torch.Tensor, streams: int, num_steps: int, block_size: int, device
) -> tuple[float, int, int]:
    """(mean loss per token, targets scored, streams at once) of the model on token ids (N,).

    ``block_size`` 0: B = ``streams`` sequential streams of ``num_steps``, the state
    carried through the text (:func:`evaluate`); else nanoGPT's protocol, non-overlapping
    blocks of ``block_size`` targets each from a zero state (:func:`evaluate_blocks`).
    """
    if block_size:
        pairs = [(X.to(device), Y.to(device)) for X, Y in block_batches(ids, block_size, streams)]
        tokens = sum(int(Y.numel()) for _, Y in pairs)
        return evaluate_blocks(model, pairs), tokens, int(pairs[0][1].shape[1])
    X, Y = eval_batches(ids, streams, num_steps)
    return evaluate(model, X.to(device), Y.to(device)), int(Y.numel()), int(X.shape[1])


def perplexity(mean_loss: float) -> float:
    """exp(mean loss per token, in nats); capped so that a diverged loss prints as a number."""
    return math.exp(min(mean_loss, 700.0))


def bits_per_token(mean_loss: float) -> float:
    """The mean loss per token in bits (nats / ln 2)."""
    return mean_loss / math.log(2)
