"""A whole training step captured once in a CUDA graph and replayed for every batch.

Experimental (``--cuda-graph``): written and tested on the CPU, never yet run on a GPU
(docs/gpu.md). :func:`graphed_step` makes one, after checking that the model and the
device allow it; the trainer makes one per run, and it captures once, on its first batch,
since every training batch of a run has the same shape.

A CUDA graph records the step's kernel launches (forward, loss, backward,
clipping, optimizer update) once and replays them with one call: PyTorch's
"whole-network capture", for models whose steps are many short kernels.

    step = GraphedTrainStep(model, optimizer, clip=1.0)
    train.run_epoch(model, optimizer, X_all, Y_all, sampling="sequential", clip=1.0, step=step)

``step(X, Y, state) -> (loss, norm, state)`` computes exactly what
``train.train_step(model, optimizer, X, Y, state, clip)`` does: forward, mean
cross-entropy, backward, clipping to global norm ``clip`` (``train.grad_clipping``),
optimizer step. X, Y are (B, T); the state is a tensor (L, B, H), or a pair of
them for the LSTM. On the CPU, or where CUDA is unavailable, it simply calls
``train.train_step``.

What a replay assumes:

* Fixed shapes: X, Y and the state keep the shapes and dtypes of the call that
  captured the graph. A call with other shapes captures a new graph for them
  and drops the old one; pass ``batch_size``/``num_steps`` to make a different
  shape an error instead.
* Fixed memory: the model's parameters, their ``.grad`` tensors and the
  optimizer's state must stay the same tensor objects (``load_state_dict``
  copies in place, which is fine; replacing a parameter or calling
  ``zero_grad(set_to_none=True)`` outside the step is not). What a call returns
  is a clone, so the next replay does not overwrite it.
* Python numbers are frozen at capture: the learning rate, ``clip``. After
  changing the learning rate call :meth:`GraphedTrainStep.recapture`. (Adam
  and AdamW are switched to ``capturable=True``, which keeps their step count
  on the GPU; their learning rate is frozen at capture too.)
* The first call for a shape runs ``WARMUP_STEPS`` warm-up steps, then
  captures, then puts the parameters and the optimizer state back as they
  were; optimizer state the warm-up created is reset to zeros (its fresh value
  for Adam/AdamW). Capturing synchronises with the GPU; later calls do not.

Design notes: docs/gpu.md
"""

from __future__ import annotations

import torch

from ..errors import RnnlabError
from ..models.cells import map_state, state_parts
from ..train import grad_clipping, sequence_loss, train_step

WARMUP_STEPS = 3


def check_cuda_graph(device: torch.device, schedule: str = "constant", processes: int = 1) -> None:
    """Raise RnnlabError unless a run on ``device`` with this ``schedule``, trained by
    ``processes`` processes, can capture its training step as a CUDA graph: every rule of
    when ``--cuda-graph`` may run, but the model's own (:func:`graphed_step`)."""
    if device.type != "cuda":
        raise RnnlabError(
            f"--cuda-graph needs --device cuda (a CUDA GPU), and this run is on the "
            f"{device.type}; leave --cuda-graph out"
        )
    if schedule == "cosine":
        raise RnnlabError(
            "--cuda-graph freezes the learning rate when it captures the step, and "
            "--schedule cosine changes it every batch; leave out one of them"
        )
    if processes > 1:
        raise RnnlabError(
            "--cuda-graph does not yet work with torchrun (several processes); leave "
            "--cuda-graph out"
        )


def graphed_step(model, optimizer, clip: float) -> GraphedTrainStep:
    """``--cuda-graph``'s training step: :class:`GraphedTrainStep` of ``model``, which must
    declare ``cuda_graph_safe`` (fixed shapes, no host synchronisation: the fused models)
    and sit on a CUDA device; anything else is an RnnlabError. Make it once per run."""
    if not getattr(model, "cuda_graph_safe", False):
        raise RnnlabError(
            f"--cuda-graph needs a model whose training step can be captured (--impl "
            f"fused or triton); {type(model).__name__} cannot be: leave --cuda-graph out"
        )
    check_cuda_graph(next(model.parameters()).device)
    return GraphedTrainStep(model, optimizer, clip)


def _on_gpu(X) -> bool:
    """Whether a batch is on a CUDA device, where the step can be a graph."""
    return torch.cuda.is_available() and X.device.type == "cuda"


def _clone_state(state):
    return map_state(torch.Tensor.clone, state)


def _copy_state(dst, src) -> None:
    for d, s in zip(state_parts(dst), state_parts(src)):
        d.copy_(s)


def _shape_key(X, Y, state):
    parts = state_parts(state)
    return (tuple(X.shape), tuple(Y.shape), X.dtype) + tuple(
        (tuple(s.shape), s.dtype) for s in parts
    )


class _Snapshot:
    """The parameters and optimizer state before warm-up, to put back after it."""

    def __init__(self, model, optimizer):
        with torch.no_grad():
            self.params = [p.detach().clone() for p in model.parameters()]
            self.optim = {
                p: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}
                for p, s in optimizer.state.items()
            }

    def restore(self, model, optimizer) -> None:
        with torch.no_grad():
            for p, saved in zip(model.parameters(), self.params):
                p.copy_(saved)
            for p, state in optimizer.state.items():
                saved = self.optim.get(p)
                for k, v in state.items():
                    if torch.is_tensor(v):
                        # In place, so the tensors the graph will capture stay the same.
                        v.copy_(saved[k]) if saved is not None else v.zero_()
                    elif saved is not None:
                        state[k] = saved[k]
                    else:
                        raise RnnlabError(
                            f"cannot reset the optimizer's state {k!r} after the "
                            f"CUDA graph warm-up; run one eager step first"
                        )


def _make_capturable(optimizer, device) -> None:
    """Adam/AdamW keep their step count on the GPU when capturable, so a graph can update it."""
    for group in optimizer.param_groups:
        if "capturable" in group and not group["capturable"]:
            group["capturable"] = True
    for state in optimizer.state.values():
        step = state.get("step")
        if torch.is_tensor(step) and step.device != device:
            state["step"] = step.to(device=device, dtype=torch.float32)


class GraphedTrainStep:
    """``train.train_step`` as a replayed CUDA graph; see the module docstring."""

    def __init__(
        self,
        model,
        optimizer,
        clip: float,
        batch_size: int | None = None,
        num_steps: int | None = None,
    ):
        self.model, self.optimizer, self.clip = model, optimizer, clip
        self.batch_size, self.num_steps = batch_size, num_steps
        self.graph: torch.cuda.CUDAGraph | None = None
        self.key = None
        self.captures = 0  # graphs captured so far: one per run unless the shapes change

    def recapture(self) -> None:
        """Forget the graph; the next call captures a new one (e.g. after changing the lr)."""
        self.graph, self.key = None, None

    def _eager(self, X, Y, state):
        return train_step(self.model, self.optimizer, X, Y, state, self.clip)

    def __call__(self, X, Y, state):
        """X, Y (B, T), state -> (loss, grad norm, new state), as train.train_step."""
        if not _on_gpu(X):
            return self._eager(X, Y, state)
        B, T = X.shape
        if (B, T) != (self.batch_size or B, self.num_steps or T):
            raise RnnlabError(
                f"this CUDA-graphed step was made for batches of "
                f"{self.batch_size} x {self.num_steps}, got {B} x {T}; make a new "
                f"GraphedTrainStep or use train.train_step"
            )
        key = _shape_key(X, Y, state)
        if key != self.key:
            self._capture(X, Y, state)
            self.key = key
            self.captures += 1
        return self._replay(X, Y, state)

    def _replay(self, X, Y, state):
        """Copy the batch and state into the static buffers, replay, return clones."""
        self.static_X.copy_(X)
        self.static_Y.copy_(Y)
        _copy_state(self.static_state, state)
        assert self.graph is not None  # captured by this call or an earlier one of these shapes
        self.graph.replay()
        return self.loss.clone(), self.norm.clone(), _clone_state(self.state_out)

    def _body(self):
        """The step on the static buffers: the same operations as train.train_step."""
        logits, state = self.model(self.static_X, self.static_state)
        loss = sequence_loss(logits, self.static_Y)
        self.optimizer.zero_grad(set_to_none=False)
        loss.backward()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        norm = grad_clipping(params, self.clip)
        self.optimizer.step()
        state = map_state(torch.Tensor.detach, state)
        return loss.detach(), norm.detach(), state

    def _capture(self, X, Y, state) -> None:
        self.graph = None  # free the old graph's memory pool before making a new one
        _make_capturable(self.optimizer, X.device)
        self.static_X, self.static_Y = X.clone(), Y.clone()
        self.static_state = _clone_state(state)
        snapshot = _Snapshot(self.model, self.optimizer)
        # Warm up on a side stream (PyTorch's recipe): lazy initialisation must not be captured.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self._body()
        torch.cuda.current_stream().wait_stream(side)
        # The grads exist now (zero_grad(set_to_none=False) inside keeps them), so the graph
        # zeroes and fills the same tensors the optimizer reads.
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.loss, self.norm, self.state_out = self._body()
        # Undo the warm-up's updates; the capture itself ran nothing.
        snapshot.restore(self.model, self.optimizer)
        self.graph = graph
