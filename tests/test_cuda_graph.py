"""GraphedTrainStep: on the CPU it is train.train_step; its warm-up leaves no trace.

The CUDA capture and replay themselves need a GPU (benchmarks/gpu_check.py checks
them there); what is tested here is the CPU fallback and the save/restore of the
parameters and optimizer state around the warm-up steps, which is device-agnostic.
"""
from __future__ import annotations

import copy

import pytest
import torch

from rnnlab import train
from rnnlab.cuda_graph import GraphedTrainStep, _Snapshot
from rnnlab.models import build_model


def make(kind, optimizer, seed=0):
    torch.manual_seed(seed)
    model = build_model("scratch", kind, vocab_size=7, num_hiddens=8, num_layers=2)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model, train.make_optimizer(optimizer, model.parameters(), lr=0.1)


def batches(n, B=3, T=4, V=7):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randint(V, (B, T), generator=gen), torch.randint(V, (B, T), generator=gen))
            for _ in range(n)]


@pytest.mark.parametrize("kind,optimizer", [("rnn", "sgd"), ("lstm", "adam"), ("gru", "adamw")])
def test_graphed_step_on_cpu_equals_train_step(kind, optimizer):
    model_a, opt_a = make(kind, optimizer)
    model_b, opt_b = copy.deepcopy(model_a), None
    opt_b = train.make_optimizer(optimizer, model_b.parameters(), lr=0.1)
    step = GraphedTrainStep(model_b, opt_b, clip=0.1)
    state_a = state_b = model_a.begin_state(3)
    for X, Y in batches(3):
        loss_a, norm_a, state_a = train.train_step(model_a, opt_a, X, Y, state_a, clip=0.1)
        loss_b, norm_b, state_b = step(X, Y, state_b)
        assert torch.equal(loss_a, loss_b) and torch.equal(norm_a, norm_b)
        assert norm_a > 0.1  # clipping was active, so it was compared too
        torch.testing.assert_close(state_b, state_a, rtol=0, atol=0)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p, q)


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
