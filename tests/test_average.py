"""--ema: the moving average of the weights, against a float64 reference, and end to end."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_RUN, run_cli, whole_and_resumed
from rnnlab import checkpoint, cli
from rnnlab.average import WeightAverage, decay_at

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_average_follows_its_formula_in_float64():
    """a_k = d_k a_{k-1} + (1 - d_k) w_k, d_k = min(decay, (1 + k) / (10 + k)): the same
    recurrence in float64 on the same weights, to float32's rounding over 59 updates
    (rtol and atol 1e-5)."""
    torch.manual_seed(0)
    model = torch.nn.LSTM(3, 4)
    average = WeightAverage(model, 0.95)
    reference = [p.detach().double().clone() for p in model.parameters()]
    for k in range(1, 60):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        average.update(k)
        d = decay_at(0.95, k)
        weights = [p.detach().double() for p in model.parameters()]
        reference = [d * a + (1 - d) * w for a, w in zip(reference, weights, strict=True)]
    for got, want in zip(average.averaged, reference, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    assert decay_at(0.95, 1) == pytest.approx(2 / 11) and decay_at(0.95, 10**6) == 0.95


def test_applied_swaps_the_average_in_and_the_weights_back_exactly():
    model = torch.nn.Linear(5, 3)
    average = WeightAverage(model, 0.9)
    with torch.no_grad():
        model.weight.mul_(3)
    average.update(100)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    with average.applied():
        assert torch.equal(model.weight, average.averaged[0])
        assert not torch.equal(model.weight, trained["weight"])
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, trained[name]), name  # bit for bit


EMA_RUN = ["timemachine", *TINY_RUN, "--ema", "0.9", "--quiet"]


@pytest.mark.slow
def test_with_ema_the_model_file_holds_the_average_and_eval_scores_it(tmp_path, capsys):
    run = tmp_path / "run"
    run_cli("train", *EMA_RUN, "--epochs", "2", "--out", run, check=0)
    ckpt = checkpoint.read_checkpoint(run)
    assert ckpt.training_weights is not None
    assert ckpt.training_weights.keys() == ckpt.weights.keys()
    differs = [
        k for k in ckpt.weights if not torch.equal(ckpt.weights[k], ckpt.training_weights[k])
    ]
    assert differs, "the average is the trained weights"
    on_disk = load_file(run / "model.safetensors")
    assert all(torch.equal(on_disk[k], ckpt.weights[k]) for k in on_disk)
    # eval reads the best checkpoint, chosen and scored on the averaged weights
    assert cli.main(["eval", str(run), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    history = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    best = min(r["val_loss"] for r in history)
    assert scored["loss"] == pytest.approx(best, rel=1e-5)


@pytest.mark.slow
def test_a_resumed_ema_run_ends_bit_for_bit_as_the_uninterrupted_one(tmp_path):
    a, b = whole_and_resumed(tmp_path, *EMA_RUN)
    assert a.training_weights is not None and b.training_weights is not None
    for name in a.weights:
        assert torch.equal(a.weights[name], b.weights[name]), name
        assert torch.equal(a.training_weights[name], b.training_weights[name]), name
