"""Adaptive softmax (Grave et al. 2017): the loss, training, generation and its options.

Its speed is measured by benchmarks/adaptive_softmax.py, not here.
"""

import json
from dataclasses import replace

import pytest
import torch

from rnnlab import batches, generate, train
from rnnlab.cli import main
from rnnlab.config import ModelConfig, TrainConfig
from rnnlab.errors import RnnlabError
from rnnlab.models import CELLS, build_model, parameter_count
from rnnlab.models.torchnn import adaptive_cutoffs

V = 60


def adaptive(cell="lstm", hidden=32, seed=0, **options):
    torch.manual_seed(seed)
    config = ModelConfig(
        impl="torch", cell=cell, hidden=hidden, embedding=8, adaptive_softmax=True, **options
    )
    return build_model(config, V)


def phrase_corpus(n=4000, seed=0):
    """A phrase of 40 ids drawn with P(id) proportional to 1/(id + 1), repeated: ids are most
    frequent first, as Vocab numbers them, and a recurrent model can learn the sequence."""
    weights = 1.0 / torch.arange(1, V + 1, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    phrase = torch.multinomial(weights, 40, replacement=True, generator=g)
    return phrase.repeat(n // 40)


@pytest.mark.parametrize("cell", CELLS)
def test_the_loss_is_minus_the_mean_log_probability_of_the_targets(cell):
    model = adaptive(cell, cutoffs=(5, 20)).double()
    g = torch.Generator().manual_seed(1)
    X, Y = torch.randint(0, V, (4, 7), generator=g), torch.randint(0, V, (4, 7), generator=g)
    features, _ = model(X, model.begin_state(4))
    assert features.shape == (7 * 4, 32)  # time-major rows, as logits would be
    log_probs = model.adaptive.log_prob(features)  # (T*B, V): the whole distribution
    torch.testing.assert_close(
        log_probs.exp().sum(1), torch.ones(28, dtype=torch.float64), rtol=0, atol=1e-12
    )
    expected = -log_probs.gather(1, Y.T.reshape(-1, 1)).mean()
    loss = train.sequence_loss(features, Y, model)
    assert abs(loss.item() - expected.item()) < 1e-10
    total = train.sequence_loss(features, Y, model, reduction="sum")
    assert abs(total.item() - 28 * expected.item()) < 1e-9


@pytest.mark.slow
def test_training_reduces_the_adaptive_loss_on_a_tiny_corpus():
    model = adaptive(cutoffs=(5, 20))
    X, Y = batches.eval_batches(phrase_corpus(800), 4, 10)
    before = train.evaluate(model, X, Y)
    optimizer = train.make_optimizer("adam", model.parameters(), 0.01)
    TX, TY = batches.epoch_batches(phrase_corpus(), 4, 10, "sequential", seed=0, epoch=0)
    progress = train.run_epoch(model, optimizer, TX, TY, sampling="sequential", clip=1.0)
    after = train.evaluate(model, X, Y)
    assert before > 3.0 and after < before / 4 and progress.loss < before  # it learns the phrase


def test_generation_samples_from_the_full_distribution():
    model = adaptive(cutoffs=(5, 20))
    ids = generate.generate_ids(model, [1, 2, 3], 20)
    assert len(ids) == 23 and all(0 <= i < V for i in ids)
    # greedy: the most likely token of the adaptive layer's whole distribution
    assert model.training  # generation restores the mode it found
    with torch.no_grad():
        model.eval()
        _, state = model(torch.tensor([[1, 2]]), model.begin_state(1))
        features, _ = model(torch.tensor([[3]]), state)
        assert ids[3] == int(model.adaptive.log_prob(features)[0].argmax())
    sampled = [
        generate.generate_ids(model, [1], 30, temperature=1.0, top_k=10, seed=s) for s in (4, 4, 5)
    ]
    assert sampled[0] == sampled[1] != sampled[2]


def test_default_cutoffs_are_a_twentieth_and_a_quarter_of_the_vocabulary():
    assert adaptive_cutoffs(10_000, 200) == [500, 2500]
    assert adaptive_cutoffs(10, 64) == [2]  # 10 // 20 == 0 is dropped
    assert adaptive_cutoffs(10_000, 200, (2000,)) == [2000]
    with pytest.raises(RnnlabError, match="too small for --adaptive-softmax"):
        adaptive_cutoffs(3, 64)


def test_cutoffs_must_fit_the_vocabulary_and_the_hidden_size():
    with pytest.raises(RnnlabError, match=r"--cutoffs 5,60 must each be below the vocabulary"):
        adaptive(cutoffs=(5, 60))  # V is only known when the model is built
    with pytest.raises(RnnlabError, match="--hidden 8 is too small for 2"):
        adaptive(hidden=8, cutoffs=(5, 20))  # 8 // 16 == 0 units for the second cluster
    adaptive(hidden=16, cutoffs=(5, 20))


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(impl="torch", cutoffs=(5,)), "--cutoffs needs --adaptive-softmax"),
        (dict(impl="torch", adaptive_softmax=True, cutoffs=(20, 5)), "--cutoffs must increase"),
        (dict(impl="torch", adaptive_softmax=True, cutoffs=(5, 5)), "--cutoffs must increase"),
        (dict(impl="torch", adaptive_softmax=True, cutoffs=(0,)), "--cutoffs"),
        (dict(impl="fused", adaptive_softmax=True), "--adaptive-softmax need.*--impl torch"),
        (
            dict(impl="torch", adaptive_softmax=True, embedding=16, hidden=16, tie_weights=True),
            "--tie-weights cannot be used with --adaptive-softmax",
        ),
    ],
)
def test_adaptive_softmax_options_are_checked_in_the_config(options, message):
    with pytest.raises(RnnlabError, match=message) as info:
        ModelConfig(**options)
    assert len(str(info.value).splitlines()) == 1


def test_cutoffs_read_from_config_json_equal_the_command_lines():
    model = ModelConfig(impl="torch", adaptive_softmax=True, cutoffs=(100, 1000))
    cfg = TrainConfig(model=model)
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.model.cutoffs == (100, 1000)
    assert replace(model, cutoffs=[100, 1000]).cutoffs == (100, 1000)  # type: ignore[arg-type]


@pytest.mark.parametrize("cutoffs", [(), (5, 20), (30,)])
def test_parameter_count_includes_the_adaptive_layer(cutoffs):
    config = ModelConfig(impl="torch", cell="gru", hidden=32, layers=2, embedding=8)
    config = replace(config, adaptive_softmax=True, cutoffs=cutoffs)
    model = build_model(config, V)
    assert parameter_count(config, V) == sum(p.numel() for p in model.parameters())


def test_an_adaptive_run_trains_evaluates_and_generates(tmp_path, capsys):
    out = tmp_path / "run"
    options = ["--mode", "words", "--impl", "torch", "--cell", "gru", "--hidden", "16"]
    options += ["--embedding", "8", "--adaptive-softmax", "--max-tokens", "3000"]
    options += ["--batch-size", "4", "--num-steps", "10", "--epochs", "1", "--quiet"]
    assert main(["train", "--out", str(out), *options]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ppl"] > 1
    assert main(["generate", str(out), "--length", "5", "--temperature", "1", "--seed", "0"]) == 0
    assert capsys.readouterr().out.strip()
