"""GraphedTrainStep: on the CPU it computes d2l's update; its warm-up leaves no trace.

The CUDA capture and replay themselves need a GPU (benchmarks/gpu_check.py checks
them there); what is tested here is the CPU fallback, against the update written
out by hand, the save/restore of the parameters and optimizer state around the
warm-up steps, which is device-agnostic, when a step is graphed at all (only when
asked for, on CUDA) and when it captures (once per run, again only for a new shape).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_RUN
from rnnlab import cli, train
from rnnlab.config import ModelConfig
from rnnlab.errors import RnnlabError
from rnnlab.experimental import cuda_graph
from rnnlab.experimental.cuda_graph import GraphedTrainStep, _Snapshot
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


def test_a_cuda_graph_is_only_made_when_asked_for_and_refused_off_the_gpu():
    fused = build_model(ModelConfig(cell="gru", impl="fused", hidden=8), 7)
    scratch = build_model(ModelConfig(cell="gru", impl="scratch", hidden=8), 7)
    for model in (fused, scratch):
        optimizer = train.make_optimizer("sgd", model.parameters(), 1.0)
        assert not isinstance(train.make_step(model, optimizer, clip=1.0), GraphedTrainStep)
    optimizer = train.make_optimizer("sgd", fused.parameters(), 1.0)
    with pytest.raises(RnnlabError, match="--cuda-graph needs --device cuda.*on the cpu"):
        cuda_graph.graphed_step(fused, optimizer, clip=1.0)
    optimizer = train.make_optimizer("sgd", scratch.parameters(), 1.0)
    with pytest.raises(RnnlabError, match="--impl fused or triton.*ScratchLM"):
        cuda_graph.graphed_step(scratch, optimizer, clip=1.0)


@pytest.mark.parametrize(
    "device, schedule, processes, words",
    [
        ("cpu", "constant", 1, "needs --device cuda"),
        ("cuda", "cosine", 1, "--schedule cosine changes it every batch"),
        ("cuda", "constant", 2, "does not yet work with torchrun"),
    ],
)
def test_every_rule_of_when_a_cuda_graph_may_run_is_one_check(device, schedule, processes, words):
    with pytest.raises(RnnlabError, match=words) as info:
        cuda_graph.check_cuda_graph(torch.device(device), schedule, processes)
    assert len(str(info.value).splitlines()) == 1
    cuda_graph.check_cuda_graph(torch.device("cuda"), "plateau", 1)  # every rule holds: no error


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_make_step_on_a_gpu_graphs_graph_safe_models_when_asked():
    model = build_model(ModelConfig(cell="gru", impl="fused", hidden=16), 7).cuda()
    optimizer = train.make_optimizer("sgd", model.parameters(), 1.0)
    assert not isinstance(train.make_step(model, optimizer, clip=1.0), GraphedTrainStep)
    assert isinstance(cuda_graph.graphed_step(model, optimizer, 1.0), GraphedTrainStep)
    scratch = build_model(ModelConfig(cell="gru", impl="scratch", hidden=16), 7).cuda()
    optimizer = train.make_optimizer("sgd", scratch.parameters(), 1.0)
    with pytest.raises(RnnlabError, match="--impl fused or triton"):
        cuda_graph.graphed_step(scratch, optimizer, 1.0)


def test_a_training_run_captures_its_graph_once(tmp_path, monkeypatch, one_thread):
    """Three epochs, with validation, samples and checkpoints between them: the trainer
    makes one step, and the step captures once. No GPU here, so the step is told it runs
    on one and its capture and replay are replaced from outside (the replay trains
    eagerly); what is checked is when it decides to capture."""
    steps: list[GraphedTrainStep] = []
    asked: list[dict] = []
    replays = []

    def graphed_make_step(model, optimizer, clip, **options):
        asked.append(options)
        steps.append(GraphedTrainStep(model, optimizer, clip))
        return steps[-1]

    def replay(self, X, Y, state):
        replays.append(tuple(X.shape))
        return train.train_step(self.model, self.optimizer, X, Y, state, self.clip)

    monkeypatch.setattr(train, "make_step", graphed_make_step)
    monkeypatch.setattr(cuda_graph, "_on_gpu", lambda X: True)
    monkeypatch.setattr(GraphedTrainStep, "_capture", lambda self, X, Y, state: None)
    monkeypatch.setattr(GraphedTrainStep, "_replay", replay)
    out = tmp_path / "run"
    argv = ["train", "timemachine", "--out", str(out), *TINY_RUN, "--impl", "fused"]
    assert cli.main([*argv, "--epochs", "3", "--sample-every", "1", "--quiet"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert asked == [{"precision": "float32"}]  # the run's own step's options, passed through
    assert len(steps) == 1 and steps[0].captures == 1
    assert len(replays) == sum(r["tokens"] for r in records) // (8 * 10) > 3  # B 8, T 10
    assert set(replays) == {(8, 10)}


def test_the_graphed_step_captures_again_only_for_a_new_shape(monkeypatch):
    monkeypatch.setattr(cuda_graph, "_on_gpu", lambda X: True)
    monkeypatch.setattr(GraphedTrainStep, "_capture", lambda self, X, Y, state: None)
    monkeypatch.setattr(GraphedTrainStep, "_replay", lambda self, X, Y, state: (X, Y, state))
    model, optimizer = make("lstm", "sgd")
    step = GraphedTrainStep(model, optimizer, clip=1.0)
    data = batches(3)
    for X, Y in data * 2:
        step(X, Y, model.begin_state(3))
    assert step.captures == 1
    X, Y = data[0]
    step(X[:2], Y[:2], model.begin_state(2))  # a short batch: a new graph
    assert step.captures == 2
