"""--precision bfloat16: the training step under torch.autocast, checked against float64.

bfloat16 keeps 8 significant bits (a relative rounding of 2**-9 per value), and the forward
pass rounds every matrix product's inputs to it. Against the same step in float64 the
loss agrees within 1e-3 relative and each parameter's update (SGD at rate 1: minus its
clipped gradient) within 3e-2 of that update's largest entry (measured on these models:
at most 4e-5 and 1e-2). The weights, the optimizer and the carried state stay in the run's dtype.
"""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import run_cli, whole_and_resumed
from rnnlab.config import ModelConfig, TrainConfig
from rnnlab.errors import RnnlabError
from rnnlab.models import build_model
from rnnlab.train import make_step, sequence_loss

LOSS_TOLERANCE = 1e-3
UPDATE_TOLERANCE = 3e-2
V, B, T = 30, 4, 12

MODELS = {
    "rnn": dict(cell="rnn", hidden=24, embedding=16),
    "gru-2": dict(cell="gru", layers=2, hidden=24, embedding=16),
    "lstm-tied": dict(cell="lstm", layers=2, hidden=16, embedding=16, tie_weights=True),
    "lstm-adaptive": dict(cell="lstm", hidden=16, embedding=16, adaptive_softmax=True,
                          cutoffs=(8, 20)),
}  # fmt: skip


def one_step(model, precision: str, X, Y, state):
    """The update, loss and new state of one SGD step (rate 1) of a copy of ``model``."""
    model = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    loss, _, state = make_step(model, optimizer, clip=10.0, precision=precision)(X, Y, state)
    update = {n: p.detach() - before[n] for n, p in model.named_parameters()}
    return model, update, loss, state


@pytest.mark.parametrize("name", MODELS)
def test_a_bfloat16_step_is_the_float64_step_within_bfloat16s_rounding(name):
    torch.manual_seed(0)
    model = build_model(ModelConfig(impl="torch", **MODELS[name]), V).to(torch.float64)
    X, Y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    _, exact, exact_loss, exact_state = one_step(model, "float32", X, Y, None)
    # float32 weights under bfloat16 autocast, from the same starting point
    low, update, loss, state = one_step(model.float(), "bfloat16", X, Y, None)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(exact_loss.item(), rel=LOSS_TOLERANCE)
    for n, p in low.named_parameters():
        assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
        scale = exact[n].abs().max().item()
        assert (update[n].double() - exact[n]).abs().max().item() <= UPDATE_TOLERANCE * scale, n
    parts = state if isinstance(state, tuple) else (state,)
    exact_parts = exact_state if isinstance(exact_state, tuple) else (exact_state,)
    for s, e in zip(parts, exact_parts, strict=True):
        assert s.dtype == torch.float32 and not s.requires_grad
        assert torch.allclose(s.double(), e, atol=UPDATE_TOLERANCE)


def test_the_float32_step_is_the_models_own_float32_loss_and_bfloat16_is_not():
    """The default step scores the batch exactly as the model does outside any step, bit for
    bit; the bfloat16 step's loss of the same batch differs (its products are rounded)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(impl="torch", cell="lstm", hidden=16, embedding=16), V)
    X, Y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    with torch.no_grad():
        exact = sequence_loss(model(X, None)[0], Y, model)
    assert torch.equal(one_step(model, "float32", X, Y, None)[2], exact)
    low = one_step(model, "bfloat16", X, Y, None)[2]
    assert low.dtype == torch.float32 and not torch.equal(low, exact)
    with pytest.raises(RnnlabError, match="precision"):
        make_step(model, None, 1.0, precision="float16")


def test_bfloat16_needs_torch_nn_layers():
    with pytest.raises(RnnlabError, match="--impl torch"):
        TrainConfig.from_options({"precision": "bfloat16", "impl": "fused"})
    assert TrainConfig.from_options({"precision": "bfloat16", "impl": "torch"}).precision == (
        "bfloat16"
    )


BF16_RUN = ["--max-tokens", "3000", "--hidden", "16", "--batch-size", "8", "--num-steps", "10",
            "--impl", "torch", "--cell", "lstm", "--device", "cpu", "--threads", "1",
            "--precision", "bfloat16", "--quiet"]  # fmt: skip


@pytest.mark.slow
def test_a_resumed_bfloat16_run_ends_bit_for_bit_as_the_uninterrupted_one(tmp_path):
    a, b = whole_and_resumed(tmp_path, *BF16_RUN)
    for name in a.weights:
        assert a.weights[name].dtype == torch.float32
        assert torch.equal(a.weights[name], b.weights[name]), name


def test_the_command_refuses_bfloat16_with_another_impl_in_one_line(tmp_path):
    done = run_cli("train", "--precision", "bfloat16", "--out", tmp_path / "run", check=2)
    assert done.stderr.count("\n") == 1 and "add --impl torch" in done.stderr
    assert not (tmp_path / "run").exists()
