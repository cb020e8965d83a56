"""GraphedTrainStep: on the CPU it computes d2l's update; its warm-up leaves no trace.

The CUDA capture and replay themselves need a GPU (benchmarks/gpu_check.py checks
them there); what is tested here is the CPU fallback, against the update written
out by hand, and the save/restore of the parameters and optimizer state around
the warm-up steps, which is device-agnostic.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from rnnlab import train
from rnnlab.config import ModelConfig
from rnnlab.cuda_graph import GraphedTrainStep, _Snapshot
from rnnlab.models import build_model


def make(cell, optimizer, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(cell=cell, impl="scratch", hidden=8, layers=2), 7).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model, train.make_optimizer(optimizer, model.parameters(), lr=0.1)


def batches(n, B=3, T=4, V=7):
    gen = torch.Generator().manual_seed(1)
    return [
        (torch.randint(V, (B, T), generator=gen), torch.randint(V, (B, T), generator=gen))
        for _ in range(n)
    ]


def reference_step(model, optimizer, X, Y, state, clip):
    """d2l 8.5's update, written out: forward, cross-entropy against Y read time-major,
    backward, every gradient scaled by min(1, clip / ||g||) with ||g|| over all of them
    together, then the optimizer's step. Returns (loss, ||g|| before clipping, state)."""
    optimizer.zero_grad()
    logits, state = model(X, state)  # (T*B, V)
    loss = F.cross_entropy(logits, Y.T.reshape(-1))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    norm = torch.sqrt(sum((g * g).sum() for g in grads))
    with torch.no_grad():
        for g in grads:
            g.mul_(min(1.0, clip / norm.item()))
    optimizer.step()
    state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
    return loss.detach(), norm, state


@pytest.mark.parametrize("cell,optimizer", [("rnn", "sgd"), ("lstm", "adam"), ("gru", "adamw")])
def test_graphed_step_on_cpu_is_the_written_out_update(cell, optimizer):
    # float64, so that the two summation orders of the norm agree to rounding
    model_a, opt_a = make(cell, optimizer, dtype=torch.float64)
    model_b = copy.deepcopy(model_a)
    opt_b = train.make_optimizer(optimizer, model_b.parameters(), lr=0.1)
    step = GraphedTrainStep(model_b, opt_b, clip=0.1)
    state_a = state_b = model_a.begin_state(3)
    for X, Y in batches(3):
        loss_a, norm_a, state_a = reference_step(model_a, opt_a, X, Y, state_a, clip=0.1)
        loss_b, norm_b, state_b = step(X, Y, state_b)
        assert norm_a > 0.1  # clipping was active, so it was compared too
        torch.testing.assert_close(loss_b, loss_a, rtol=1e-12, atol=0)
        torch.testing.assert_close(norm_b, norm_a, rtol=1e-12, atol=0)
        torch.testing.assert_close(state_b, state_a, rtol=1e-12, atol=1e-15)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_warm_up_steps_are_undone_by_the_snapshot(optimizer):
    """Training after warm-up + restore is bit-for-bit training from the start."""
    model_a, opt_a = make("lstm", optimizer)
    model_b = copy.deepcopy(model_a)
    opt_b = train.make_optimizer(optimizer, model_b.parameters(), lr=0.1)
    data = batches(4)
    X0, Y0 = data[0]
    snapshot = _Snapshot(model_b, opt_b)
    for _ in range(3):  # what the capture's warm-up does to a fresh model and optimizer
        train.train_step(model_b, opt_b, X0, Y0, model_b.begin_state(3), clip=1.0)
    assert not all(torch.equal(p, q) for p, q in zip(model_a.parameters(), model_b.parameters()))
    snapshot.restore(model_b, opt_b)
    for X, Y in data:
        loss_a, _, _ = train.train_step(model_a, opt_a, X, Y, model_a.begin_state(3), clip=1.0)
        loss_b, _, _ = train.train_step(model_b, opt_b, X, Y, model_b.begin_state(3), clip=1.0)
        assert torch.equal(loss_a, loss_b)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("impl", ["scratch", "fused"])
def test_make_step_on_cpu_is_the_written_out_update_without_a_graph(impl):
    """Off the GPU no model gets a CUDA graph, not even a fused (graph-safe) one."""
    model_a, opt_a = make("gru", "sgd", dtype=torch.float64)
    model_b = build_model(ModelConfig(cell="gru", impl=impl, hidden=8, layers=2), 7).double()
    model_b.load_state_dict(model_a.state_dict())
    opt_b = train.make_optimizer("sgd", model_b.parameters(), lr=0.1)
    step = train.make_step(model_b, opt_b, clip=0.1)
    assert not isinstance(step, GraphedTrainStep)
    state_a = state_b = model_a.begin_state(3)
    for X, Y in batches(2):
        loss_a, norm_a, state_a = reference_step(model_a, opt_a, X, Y, state_a, clip=0.1)
        loss_b, norm_b, state_b = step(X, Y, state_b)
        torch.testing.assert_close(loss_b, loss_a, rtol=1e-12, atol=0)
        torch.testing.assert_close(norm_b, norm_a, rtol=1e-12, atol=0)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-12, atol=1e-15)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_make_step_on_a_gpu_graphs_only_graph_safe_models():
    step = {}
    for impl in ("fused", "scratch"):
        model = build_model(ModelConfig(cell="gru", impl=impl, hidden=16), 7).cuda()
        step[impl] = train.make_step(
            model, train.make_optimizer("sgd", model.parameters(), 1.0), clip=1.0
        )
    assert isinstance(step["fused"], GraphedTrainStep)
    assert not isinstance(step["scratch"], GraphedTrainStep)
