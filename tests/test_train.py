"""The training loop: loss layout, clipping, state carry, repeatability, non-finite detection."""

import math

import pytest
import torch

from rnnlab import batches, train
from rnnlab.config import ModelConfig
from rnnlab.errors import RnnlabError
from rnnlab.models import ScratchLM, build_model
from rnnlab.options import DEVICES, OPTIMIZERS


def toy_corpus(n=600, V=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (n,), generator=g)


def test_gradient_clipping_caps_the_global_norm_at_theta():
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))
    a.grad, b.grad = torch.full((3,), 3.0), torch.full((4,), 4.0)
    before = math.sqrt(9 * 3 + 16 * 4)
    norm = train.grad_clipping([a, b], theta=1.0)
    assert norm.item() == pytest.approx(before)
    after = torch.cat([a.grad, b.grad]).norm().item()
    assert after == pytest.approx(1.0)
    # direction is kept: every gradient scaled by the same factor theta / ||g||
    assert a.grad[0].item() == pytest.approx(3.0 / before)


def test_gradient_clipping_leaves_small_gradients_alone():
    a = torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([0.3, 0.4])
    train.grad_clipping([a], theta=1.0)
    assert a.grad.tolist() == pytest.approx([0.3, 0.4])


def test_loss_reads_targets_in_time_major_order():
    """Row t*B + b of the logits scores Y[b, t]: perfect logits give ~zero loss."""
    Y = torch.tensor([[1, 2, 3], [4, 5, 6]])  # (B=2, T=3)
    logits = torch.full((6, 8), -30.0)
    for t in range(3):
        for b in range(2):
            logits[t * 2 + b, Y[b, t]] = 30.0
    assert train.sequence_loss(logits, Y).item() < 1e-6
    batch_major = torch.nn.functional.cross_entropy(logits, Y.reshape(-1))
    assert batch_major.item() > 1.0  # reading Y batch-major would be wrong


def test_uniform_model_has_perplexity_equal_to_vocab_size():
    model = ScratchLM(7, 5)
    with torch.no_grad():
        model.W_hq.zero_()
    X, Y = batches.eval_batches(toy_corpus(), 4, 10)
    assert train.perplexity(train.evaluate(model, X, Y)) == pytest.approx(7.0)
    assert train.bits_per_token(math.log(8)) == pytest.approx(3.0)


def record_states(sampling):
    """Run an epoch with a step that records each batch's incoming state."""
    model = ScratchLM(7, 5)
    opt = train.make_optimizer("sgd", model.parameters(), 1.0)
    seen = []

    def step(X, Y, state):
        seen.append(state)
        return train.train_step(model, opt, X, Y, state, 1.0)

    X, Y = batches.epoch_batches(toy_corpus(), 4, 10, sampling, seed=0, epoch=0)
    progress = train.run_epoch(model, opt, X, Y, sampling=sampling, clip=1.0, step=step)
    return seen, progress


def test_sequential_sampling_carries_the_detached_state():
    seen, progress = record_states("sequential")
    assert torch.all(seen[0] == 0)
    assert all(s.abs().sum() > 0 and s.grad_fn is None for s in seen[1:])
    assert progress.batch == len(seen) and progress.tokens == len(seen) * 40


def test_random_sampling_starts_each_batch_fresh():
    seen, _ = record_states("random")
    assert len(seen) > 2 and all(torch.all(s == 0) for s in seen)


def train_twice(impl, cell, optimizer):
    results = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build_model(ModelConfig(cell=cell, impl=impl, hidden=6), 7)
        opt = train.make_optimizer(optimizer, model.parameters(), 0.01 if optimizer != "sgd" else 1)
        losses = []
        for epoch in range(2):
            X, Y = batches.epoch_batches(toy_corpus(), 4, 10, "sequential", seed=5, epoch=epoch)
            losses.append(train.run_epoch(model, opt, X, Y, sampling="sequential", clip=1.0).loss)
        results.append((losses, [p.detach().clone() for p in model.parameters()]))
    return results


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_a_seeded_cpu_run_is_repeatable(optimizer):
    (l1, w1), (l2, w2) = train_twice("scratch", "gru", optimizer)
    assert l1 == l2 and all(torch.equal(a, b) for a, b in zip(w1, w2))
    assert l1[0] != l1[1]  # the epochs really trained on different batches


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_make_optimizer_builds_the_named_optimizer_with_the_rate(name):
    model = ScratchLM(3, 2)
    optimizer = train.make_optimizer(name, model.parameters(), 0.25)
    assert type(optimizer) is train.OPTIMIZER_CLASSES[name]
    assert optimizer.param_groups[0]["lr"] == 0.25
    assert optimizer.param_groups[0]["params"] == list(model.parameters())


def test_optimizers_are_the_books_sgd_and_adams():
    assert train.OPTIMIZER_CLASSES == {
        "sgd": torch.optim.SGD,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
    }


def test_unknown_optimizer_is_a_clear_error():
    with pytest.raises(RnnlabError, match="sgd, adam, adamw"):
        train.make_optimizer("rmsprop", ScratchLM(3, 2).parameters(), 1.0)


def test_devices_resolve_to_where_torch_can_run():
    assert DEVICES == ("auto", "cpu", "cuda")
    assert train.resolve_device("cpu") == torch.device("cpu")
    gpu = torch.cuda.is_available()
    assert train.resolve_device("auto").type == ("cuda" if gpu else "cpu")
    if not gpu:
        with pytest.raises(RnnlabError, match="no CUDA GPU.*--device cpu"):
            train.resolve_device("cuda")
    with pytest.raises(RnnlabError, match="auto, cpu, cuda"):
        train.resolve_device("tpu")


def test_perplexity_of_a_diverged_loss_is_still_a_number():
    assert train.perplexity(0.0) == 1.0
    assert train.perplexity(math.log(28)) == pytest.approx(28.0)
    assert math.isfinite(train.perplexity(1e6))


def test_non_finite_loss_is_caught_at_its_batch():
    model = ScratchLM(7, 5)
    opt = train.make_optimizer("sgd", model.parameters(), 1.0)
    calls = []

    def step(X, Y, state):
        loss, norm, state = train.train_step(model, opt, X, Y, state, 1.0)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 3 else loss), norm, state

    X, Y = batches.epoch_batches(toy_corpus(), 4, 10, "sequential", seed=0, epoch=0)
    with pytest.raises(train.NonFiniteError, match=r"epoch 1, batch 3.*lower --lr or --clip"):
        train.run_epoch(model, opt, X, Y, sampling="sequential", clip=1.0, step=step)


def test_on_batch_can_stop_an_epoch_and_it_resumes_exactly():
    def fresh():
        torch.manual_seed(0)
        model = ScratchLM(7, 5, cell="rnn")
        return model, train.make_optimizer("sgd", model.parameters(), 1.0)

    X, Y = batches.epoch_batches(toy_corpus(), 4, 10, "sequential", seed=0, epoch=0)
    model, opt = fresh()
    whole = train.run_epoch(model, opt, X, Y, sampling="sequential", clip=1.0)

    model2, opt2 = fresh()
    part = train.run_epoch(
        model2, opt2, X, Y, sampling="sequential", clip=1.0, on_batch=lambda p: p.batch == 5
    )
    assert part.batch == 5
    done = train.run_epoch(model2, opt2, X, Y, sampling="sequential", clip=1.0, progress=part)
    assert done.loss == whole.loss
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_make_optimizer_passes_the_weight_decay(name):
    params = list(ScratchLM(3, 2).parameters())
    assert (
        train.make_optimizer(name, params, 0.1, weight_decay=0.25).defaults["weight_decay"] == 0.25
    )
    default = train.make_optimizer(name, params, 0.1).defaults["weight_decay"]
    assert default == (0.01 if name == "adamw" else 0)  # None: the optimizer's own default


def test_adamw_decays_a_weight_without_gradient_by_lr_times_decay_times_the_weight():
    """Decoupled (Loshchilov & Hutter 2019): w <- w - lr*wd*w, whatever Adam does to the gradient.

    Adam's L2 decay instead adds wd*w to the gradient, which its normalisation turns into a
    step of about lr in the sign of w, whatever wd is.
    """
    lr, wd, w0 = 0.1, 0.5, torch.tensor([2.0, -3.0], dtype=torch.float64)
    decoupled = torch.nn.Parameter(w0.clone())
    optimizer = train.make_optimizer("adamw", [decoupled], lr, weight_decay=wd)
    for step in range(1, 4):
        decoupled.grad = torch.zeros_like(w0)
        optimizer.step()
        torch.testing.assert_close(
            decoupled.detach(), w0 * (1 - lr * wd) ** step, rtol=1e-15, atol=0
        )
    coupled = torch.nn.Parameter(w0.clone())
    optimizer = train.make_optimizer("adam", [coupled], lr, weight_decay=wd)
    coupled.grad = torch.zeros_like(w0)
    optimizer.step()
    torch.testing.assert_close(coupled.detach(), w0 - lr * w0.sign(), rtol=1e-6, atol=0)


def test_weight_decay_is_none_or_a_non_negative_number():
    from rnnlab.config import TrainConfig

    assert TrainConfig().weight_decay is None
    assert TrainConfig(weight_decay=0).weight_decay == 0
    for wrong in (-0.1, float("nan"), float("inf"), "0.1", 1e6):
        with pytest.raises(RnnlabError, match="--weight-decay"):
            TrainConfig(weight_decay=wrong)


def test_a_run_gives_its_optimizer_the_weight_decay(tmp_path):
    import json

    from rnnlab.cli import main

    out = tmp_path / "run"
    options = ["--hidden", "8", "--max-tokens", "800", "--batch-size", "4", "--num-steps", "8"]
    options += ["--optimizer", "adamw", "--weight-decay", "0.3", "--lr", "0.01", "--quiet"]
    assert main(["train", "--out", str(out), "--epochs", "1", *options]) == 0
    saved = [json.loads(p.read_text()) for p in out.rglob("trainer.json")]
    assert saved and all(
        group["weight_decay"] == 0.3 for s in saved for group in s["optimizer"]["param_groups"]
    )
