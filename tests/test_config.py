"""TrainConfig: defaults, validation in one place, config.json round trip, resume conflicts."""
from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from rnnlab import __version__
from rnnlab.config import TrainConfig, conflicts
from rnnlab.errors import RnnlabError


def test_defaults_are_the_notes_model():
    cfg = TrainConfig()
    assert (cfg.source, cfg.mode, cfg.model, cfg.impl, cfg.hidden, cfg.layers) == \
        ("timemachine", "letters", "rnn", "fused", 512, 1)
    assert (cfg.lr, cfg.optimizer, cfg.clip, cfg.batch_size, cfg.num_steps, cfg.sampling) == \
        (1.0, "sgd", 1.0, 32, 35, "sequential")


@pytest.mark.parametrize("changes, flag", [
    ({"hidden": 0}, "--hidden"), ({"layers": -1}, "--layers"), ({"batch_size": 0}, "--batch-size"),
    ({"num_steps": 0}, "--num-steps"), ({"epochs": 0}, "--epochs"), ({"max_tokens": 0}, "--max-tokens"),
    ({"lr": 0.0}, "--lr"), ({"lr": -1.0}, "--lr"), ({"lr": float("nan")}, "--lr"),
    ({"clip": 0.0}, "--clip"), ({"val_frac": 0.0}, "--val-frac"), ({"val_frac": 1.0}, "--val-frac"),
    ({"val_frac": 1.5}, "--val-frac"), ({"dropout": 1.0, "impl": "torch"}, "--dropout"),
    ({"mode": "bytes"}, "--mode"), ({"model": "transformer"}, "--model"),
    ({"impl": "jax"}, "--impl"), ({"optimizer": "lbfgs"}, "--optimizer"),
    ({"sampling": "shuffled"}, "--sampling"), ({"device": "tpu"}, "--device"),
    ({"dropout": 0.5, "impl": "scratch"}, "--impl torch"),
    ({"impl": "torch", "tie_weights": True, "embedding": 16}, "--tie-weights"),
    ({"checkpoint_every": -1}, "--checkpoint-every"), ({"seed": -3}, "--seed"),
    ({"threads": -1}, "--threads"),
    ({"hidden": True}, "--hidden"), ({"hidden": 2.5}, "--hidden"),
])
def test_impossible_values_name_the_option(changes, flag):
    with pytest.raises(RnnlabError) as info:
        TrainConfig(**changes)
    assert flag in str(info.value)
    assert "\n" not in str(info.value)


def test_valid_torch_options_pass():
    TrainConfig(impl="torch", dropout=0.2, embedding=64, hidden=64, tie_weights=True,
                max_tokens=10, val_frac=0.5)


def test_config_json_round_trip_carries_the_version(tmp_path):
    cfg = TrainConfig(hidden=64, lr=0.5, max_tokens=1000, prefix="the ")
    cfg.save(tmp_path / "config.json")
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["version"] == __version__
    assert {k: v for k, v in data.items() if k != "version"} == asdict(cfg)
    assert TrainConfig.load(tmp_path / "config.json") == cfg


@pytest.mark.parametrize("text, words", [
    ("{", "not valid JSON"), ("[1]", "JSON object"), ('{"hidden": 0}', "--hidden"),
    ('{"colour": "red"}', "unknown option"),
])
def test_bad_config_json_is_a_clear_error(tmp_path, text, words):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(RnnlabError, match=words):
        TrainConfig.load(tmp_path / "config.json")


def test_missing_config_json_says_it_is_not_a_run(tmp_path):
    with pytest.raises(RnnlabError, match="not a run directory"):
        TrainConfig.load(tmp_path / "config.json")


def test_conflicts_compare_only_fixed_options():
    saved = TrainConfig(hidden=32, impl="scratch", epochs=3)
    assert conflicts(saved, {"hidden": 64, "epochs": 10}) == {"hidden": (64, 32)}
    assert conflicts(saved, {"hidden": 32, "epochs": 10, "device": "cpu", "prefix": "x"}) == {}
    assert conflicts(saved, {"impl": "fused"}) == {}  # same parameters, same function
    assert conflicts(saved, {"impl": "torch"}) == {"impl": ("torch", "scratch")}
