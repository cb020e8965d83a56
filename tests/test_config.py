"""The options of every command: defaults, checks in one place, config.json round trip."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from rnnlab import __version__, rundir
from rnnlab.batches import SAMPLINGS
from rnnlab.config import (
    BenchConfig,
    DataConfig,
    EvalConfig,
    GenerateConfig,
    ModelConfig,
    TrainConfig,
    conflicts,
)
from rnnlab.errors import RnnlabError
from rnnlab.models import CELLS, IMPLS
from rnnlab.tokenize import MODES
from rnnlab.train import OPTIMIZERS
from rnnlab.vocab import Vocab


def test_defaults_are_the_notes_model():
    cfg = TrainConfig()
    assert (cfg.source, cfg.mode) == ("timemachine", "letters")
    assert cfg.model == ModelConfig(cell="rnn", impl="fused", hidden=512, layers=1)
    assert (cfg.lr, cfg.optimizer, cfg.clip, cfg.batch_size, cfg.num_steps, cfg.sampling) == (
        1.0,
        "sgd",
        1.0,
        32,
        35,
        "sequential",
    )


@pytest.mark.parametrize(
    "changes, flag",
    [
        ({"hidden": 0}, "--hidden"),
        ({"layers": -1}, "--layers"),
        ({"batch_size": 0}, "--batch-size"),
        ({"num_steps": 0}, "--num-steps"),
        ({"epochs": 0}, "--epochs"),
        ({"max_tokens": 0}, "--max-tokens"),
        ({"lr": 0.0}, "--lr"),
        ({"lr": -1.0}, "--lr"),
        ({"lr": float("nan")}, "--lr"),
        ({"clip": 0.0}, "--clip"),
        ({"val_frac": 0.0}, "--val-frac"),
        ({"val_frac": 1.0}, "--val-frac"),
        ({"val_frac": 1.5}, "--val-frac"),
        ({"dropout": 1.0, "impl": "torch"}, "--dropout"),
        ({"mode": "bytes"}, "--mode"),
        ({"cell": "transformer"}, "--cell"),
        ({"impl": "jax"}, "--impl"),
        ({"optimizer": "lbfgs"}, "--optimizer"),
        ({"sampling": "shuffled"}, "--sampling"),
        ({"device": "tpu"}, "--device"),
        ({"dropout": 0.5, "impl": "scratch"}, "--impl torch"),
        ({"impl": "torch", "tie_weights": True, "embedding": 16}, "--tie-weights"),
        ({"checkpoint_every": -1}, "--checkpoint-every"),
        ({"seed": -3}, "--seed"),
        ({"threads": -1}, "--threads"),
        ({"hidden": True}, "--hidden"),
        ({"hidden": 2.5}, "--hidden"),
    ],
)
def test_impossible_values_name_the_option(changes, flag):
    with pytest.raises(RnnlabError) as info:
        TrainConfig.from_options(changes)
    assert flag in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "cls, changes, flag",
    [
        (GenerateConfig, {"length": 0}, "--length"),
        (GenerateConfig, {"temperature": -1}, "--temperature"),
        (GenerateConfig, {"temperature": float("inf")}, "--temperature"),
        (GenerateConfig, {"top_k": -1}, "--top-k"),
        (GenerateConfig, {"length": 10**9}, "--length"),
        (GenerateConfig, {"device": "tpu"}, "--device"),
        (EvalConfig, {"split": "train"}, "--split"),
        (DataConfig, {"max_tokens": 0}, "--max-tokens"),
        (DataConfig, {"top": -1}, "--top"),
        (BenchConfig, {"impls": ("scratch", "jax")}, "--impls"),
        (BenchConfig, {"cells": ()}, "--cells"),
        (BenchConfig, {"hidden": (256, 0)}, "--hidden"),
        (BenchConfig, {"batches": 0}, "--batches"),
    ],
)
def test_every_command_checks_its_options_in_its_config(cls, changes, flag):
    with pytest.raises(RnnlabError) as info:
        cls(**changes)
    assert flag in str(info.value) and "\n" not in str(info.value)


def test_lists_of_choices_come_from_the_modules_that_implement_them():
    choices = {
        f.name: f.metadata.get("choices") for cls in (ModelConfig, TrainConfig) for f in fields(cls)
    }
    assert tuple(choices["cell"]) == CELLS
    assert tuple(choices["impl"]) == tuple(IMPLS)
    assert tuple(choices["optimizer"]) == tuple(OPTIMIZERS)
    assert tuple(choices["mode"]) == tuple(MODES)
    assert tuple(choices["sampling"]) == tuple(SAMPLINGS)


def test_valid_torch_options_pass():
    TrainConfig.from_options(
        dict(
            impl="torch",
            dropout=0.2,
            embedding=64,
            hidden=64,
            tie_weights=True,
            max_tokens=10,
            val_frac=0.5,
        )
    )


def test_config_json_round_trip_carries_the_version(tmp_path):
    cfg = TrainConfig.from_options(dict(hidden=64, lr=0.5, max_tokens=1000, prefix="the "))
    rundir.create(tmp_path, cfg, Vocab(list("abc")))
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["version"] == __version__
    assert data["model"]["hidden"] == 64 and data["lr"] == 0.5
    assert rundir.read_config(tmp_path) == cfg


def test_config_json_of_rnnlm_0_1_loads():
    """rnnlm 0.1 wrote one flat object with "model" naming the cell."""
    old = {
        "source": "timemachine",
        "mode": "letters",
        "max_tokens": 2000,
        "val_frac": 0.1,
        "model": "gru",
        "impl": "scratch",
        "hidden": 8,
        "layers": 1,
        "dropout": 0.0,
        "embedding": 0,
        "tie_weights": False,
        "batch_size": 4,
        "num_steps": 8,
        "sampling": "sequential",
        "epochs": 2,
        "lr": 1.0,
        "optimizer": "sgd",
        "clip": 1.0,
        "device": "cpu",
        "seed": 0,
        "prefix": "time traveller",
        "sample_every": 10,
        "checkpoint_every": 0,
        "threads": 0,
        "version": "0.1.0",
    }
    cfg = TrainConfig.from_dict(old)
    assert cfg.model == ModelConfig(cell="gru", impl="scratch", hidden=8)
    assert (cfg.max_tokens, cfg.batch_size, cfg.prefix) == (2000, 4, "time traveller")


@pytest.mark.parametrize(
    "text, words",
    [
        ("{", "not valid JSON"),
        ("[1]", "JSON object"),
        ('{"hidden": 0}', "--hidden"),
        ('{"colour": "red"}', "unknown option"),
        ('{"model": 3}', "damaged"),
        ('{"model": {"cell": "rnn", "size": 3}}', "invalid"),
    ],
)
def test_bad_config_json_is_a_clear_error(tmp_path, text, words):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(RnnlabError, match=words):
        rundir.read_config(tmp_path)


def test_missing_config_json_says_it_is_not_a_run(tmp_path):
    with pytest.raises(RnnlabError, match="not a run directory"):
        rundir.read_config(tmp_path)


def test_conflicts_compare_only_fixed_options():
    saved = TrainConfig.from_options(dict(hidden=32, impl="scratch", epochs=3))
    assert conflicts(saved, {"hidden": 64, "epochs": 10}) == {"hidden": (64, 32)}
    assert conflicts(saved, {"hidden": 32, "epochs": 10, "device": "cpu", "prefix": "x"}) == {}
    assert conflicts(saved, {"impl": "fused"}) == {}  # same parameters, same function
    assert conflicts(saved, {"impl": "torch"}) == {"impl": ("torch", "scratch")}
