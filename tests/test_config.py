"""The options of every command: defaults, checks in one place, config.json round trip."""

from __future__ import annotations

import json
import os
import types
import typing
from dataclasses import fields

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from rnnlab import __version__, rundir
from rnnlab.command_config import BenchConfig, DataConfig, EvalConfig, GenerateConfig
from rnnlab.config import RESUMABLE_CHANGES, ModelConfig, TrainConfig, conflicts
from rnnlab.errors import RnnlabError
from rnnlab.options import (
    CELLS,
    IMPLS,
    MAX_CLIP,
    MAX_LR,
    MAX_SEED,
    MAX_TEMPERATURE,
    MAX_THREADS,
    MAX_WIDTH,
    MODES,
    OPTIMIZERS,
    SAMPLINGS,
)
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
    assert conflicts(saved, {"impl": "triton"}) == {}
    assert conflicts(saved, {"impl": "torch"}) == {"impl": ("torch", "scratch")}
    assert conflicts(saved, {"cuda_graph": True}) == {}  # the speed, not the function


def test_cuda_graph_is_off_unless_asked_and_may_change_on_resume():
    assert TrainConfig().cuda_graph is False
    assert "cuda_graph" in RESUMABLE_CHANGES
    cfg = TrainConfig.from_options(dict(cuda_graph=True, device="cuda", impl="triton"))
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "cuda_graph"}
    assert TrainConfig.from_dict(old).cuda_graph is False  # config.json of an older run
    with pytest.raises(RnnlabError, match="--cuda-graph must be true or false"):
        TrainConfig(cuda_graph=1)  # type: ignore[arg-type]


CPUS = os.cpu_count() or 1
COMMAND_CONFIGS = (ModelConfig, TrainConfig, GenerateConfig, EvalConfig, DataConfig, BenchConfig)
TRAIN_FLAGS = {f.name: f for cls in (ModelConfig, TrainConfig) for f in fields(cls)}


def one_line(message: str) -> bool:
    return len(message.splitlines()) == 1


# Out of range or of the wrong type, as a user or a hand-edited config.json gives them.
TRAIN_REFUSED = [
    ({"hidden": 10**12}, "--hidden"),
    ({"hidden": MAX_WIDTH + 1}, "--hidden"),
    ({"hidden": "512"}, "--hidden"),
    ({"hidden": None}, "--hidden"),
    ({"hidden": 512.0}, "--hidden"),
    ({"layers": 10**6}, "--layers"),
    ({"impl": "torch", "embedding": 10**7}, "--embedding"),
    ({"impl": "torch", "embedding": 8, "hidden": 8, "tie_weights": "yes"}, "--tie-weights"),
    ({"impl": "torch", "embedding": 8, "hidden": 8, "tie_weights": 1}, "--tie-weights"),
    ({"dropout": None}, "--dropout"),
    ({"cell": ["rnn"]}, "--cell"),
    ({"impl": {"name": "torch"}}, "--impl"),
    ({"seed": 2**64}, "--seed"),
    ({"seed": 10**400}, "--seed"),
    ({"seed": 1.0}, "--seed"),
    ({"threads": MAX_THREADS + 1}, "--threads"),  # this machine's CPUs: checked by the trainer
    ({"threads": 2**31}, "--threads"),
    ({"lr": MAX_LR * 10}, "--lr"),
    ({"lr": float("inf")}, "--lr"),
    ({"lr": 10**400}, "--lr"),
    ({"lr": "0.1"}, "--lr"),
    ({"clip": MAX_CLIP * 10}, "--clip"),
    ({"clip": float("-inf")}, "--clip"),
    ({"val_frac": 10**400}, "--val-frac"),
    ({"epochs": 10**12}, "--epochs"),
    ({"batch_size": 10**9}, "--batch-size"),
    ({"num_steps": 10**9}, "--num-steps"),
    ({"max_tokens": 10**15}, "--max-tokens"),
    ({"sample_every": 10**12}, "--sample-every"),
    ({"checkpoint_every": 10**15}, "--checkpoint-every"),
    ({"prefix": 3}, "--prefix"),
    ({"prefix": ["the"]}, "--prefix"),
    ({"source": ""}, "SOURCE"),
    ({"source": "a\0b"}, "SOURCE"),
    ({"source": 3}, "SOURCE"),
    ({"mode": None}, "--mode"),
    ({"optimizer": 0}, "--optimizer"),
]


@pytest.mark.parametrize("changes, flag", TRAIN_REFUSED)
def test_out_of_range_and_wrong_type_train_options_are_refused(changes, flag):
    with pytest.raises(RnnlabError) as info:
        TrainConfig.from_options(changes)
    assert flag in str(info.value) and one_line(str(info.value))


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
@pytest.mark.parametrize("changes, flag", TRAIN_REFUSED)
def test_out_of_range_and_wrong_type_config_json_is_invalid_not_a_crash(changes, flag, nested):
    data = TrainConfig().to_dict()
    if nested:  # as this version writes it: the model's options in "model"
        for name, value in changes.items():
            (data["model"] if name in data["model"] else data)[name] = value
    else:  # flat, as rnnlm 0.1 wrote it
        data = {**TrainConfig().options(), **changes}
    with pytest.raises(RnnlabError) as info:
        TrainConfig.from_dict(data)
    message = str(info.value)
    assert message.startswith("config.json is invalid: ") and flag in message
    assert one_line(message)


@pytest.mark.parametrize(
    "cls, changes, flag",
    [
        (GenerateConfig, {"temperature": MAX_TEMPERATURE * 2}, "--temperature"),
        (GenerateConfig, {"temperature": float("nan")}, "--temperature"),
        (GenerateConfig, {"temperature": "hot"}, "--temperature"),
        (GenerateConfig, {"top_k": 10**12}, "--top-k"),
        (GenerateConfig, {"seed": 2**64}, "--seed"),
        (GenerateConfig, {"seed": -1}, "--seed"),
        (GenerateConfig, {"prefix": 3}, "--prefix"),
        (GenerateConfig, {"length": 10**400}, "--length"),
        (GenerateConfig, {"length": None}, "--length"),
        (GenerateConfig, {"device": ["cpu"]}, "--device"),
        (EvalConfig, {"source": ""}, "SOURCE"),
        (EvalConfig, {"source": 7}, "SOURCE"),
        (EvalConfig, {"json": "yes"}, "--json"),
        (EvalConfig, {"split": 0}, "--split"),
        (DataConfig, {"source": ""}, "SOURCE"),
        (DataConfig, {"max_tokens": 10**15}, "--max-tokens"),
        (DataConfig, {"top": 10**12}, "--top"),
        (DataConfig, {"json": 0}, "--json"),
        (BenchConfig, {"hidden": (256, 10**9)}, "--hidden"),
        (BenchConfig, {"hidden": (256, "512")}, "--hidden"),
        (BenchConfig, {"cells": "rnn"}, "--cells"),
        (BenchConfig, {"layers": 10**6}, "--layers"),
        (BenchConfig, {"batch_size": 10**9}, "--batch-size"),
        (BenchConfig, {"num_steps": 10**9}, "--num-steps"),
        (BenchConfig, {"batches": 10**12}, "--batches"),
        (BenchConfig, {"warmup": 10**12}, "--warmup"),
        (BenchConfig, {"seed": 2**64}, "--seed"),
        (BenchConfig, {"threads": CPUS + 1}, "--threads"),
        (BenchConfig, {"out": ""}, "--out"),
        (BenchConfig, {"out": 3}, "--out"),
        (BenchConfig, {"json": None}, "--json"),
    ],
)
def test_out_of_range_and_wrong_type_command_options_are_refused(cls, changes, flag):
    with pytest.raises(RnnlabError) as info:
        cls(**changes)
    assert flag in str(info.value) and one_line(str(info.value))


def label(f) -> str:
    return "--" + f.name.replace("_", "-") if f.metadata["flag"] else f.name.upper()


@pytest.mark.parametrize(
    "cls, f",
    [(cls, f) for cls in COMMAND_CONFIGS for f in fields(cls) if f.name != "model"],
    ids=lambda x: getattr(x, "__name__", getattr(x, "name", None)),
)
def test_every_field_refuses_a_value_of_the_wrong_type_by_name(cls, f):
    for wrong in ([["x"]], {"a": 1}, object()):
        with pytest.raises(RnnlabError) as info:
            cls(**{f.name: wrong})
        assert label(f) in str(info.value) and one_line(str(info.value))


@pytest.mark.parametrize(
    "cls, f",
    [
        (cls, f)
        for cls in COMMAND_CONFIGS
        for f in fields(cls)
        if any(k in str(f.type) for k in ("int", "float"))
        and f.metadata["check"] not in ("fraction", "dropout")
    ],
    ids=lambda x: getattr(x, "__name__", getattr(x, "name", None)),
)
def test_every_number_has_an_upper_bound(cls, f):
    """Fractions and dropout rates are below 1 by their check; every other number has at_most."""
    assert f.metadata["at_most"] is not None
    huge = (10**30,) if f.metadata["check"] == "list" else 10**30
    with pytest.raises(RnnlabError, match="at most") as info:
        cls(**{f.name: huge})
    assert label(f) in str(info.value)


def test_the_largest_allowed_values_pass():
    TrainConfig.from_options(
        dict(seed=MAX_SEED, threads=CPUS, lr=MAX_LR, clip=MAX_CLIP, hidden=MAX_WIDTH)
    )
    GenerateConfig(temperature=MAX_TEMPERATURE, seed=MAX_SEED)
    BenchConfig(threads=CPUS, seed=MAX_SEED)
    TrainConfig.from_options(dict(lr=2, clip=3))  # a JSON number without a point is a float too


def test_seeds_below_2_to_the_64_are_what_torch_and_numpy_accept():
    import numpy as np
    import torch

    torch.Generator().manual_seed(MAX_SEED)
    np.random.default_rng([MAX_SEED, 0])
    with pytest.raises((RuntimeError, ValueError, OverflowError)):
        torch.Generator().manual_seed(MAX_SEED + 1)


# Arbitrary JSON: what a damaged or hostile config.json can hold once parsed.
HUGE = st.sampled_from([2**63, 2**64 - 1, 2**64, -(2**64)]) | st.sampled_from([400, 5000]).map(
    lambda digits: 10**digits  # made when drawn: hypothesis cannot repr a 5,000-digit int
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | HUGE
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Values that pass or just fail a field's check, so that runs also get past the first field.
NEAR_VALID = st.sampled_from(
    [0, 1, 2, -1, 8, 0.5, 1.0, 1e3, 1e6, 1e7, 100.0, MAX_SEED, MAX_SEED + 1, CPUS, CPUS + 1]
    + ["", "rnn", "gru", "lstm", "torch", "fused", "scratch", "timemachine", "letters"]
    + ["adam", "sgd", "cpu", "random", "sequential", "a\0b", True, False, None]
)
MODEL_NAMES = [f.name for f in fields(ModelConfig)]
TRAIN_NAMES = [f.name for f in fields(TrainConfig)] + MODEL_NAMES + ["version", "colour"]
FIELD_DICTS = st.fixed_dictionaries(
    {},
    optional={name: NEAR_VALID | JSON for name in TRAIN_NAMES}
    | {"model": st.dictionaries(st.sampled_from(MODEL_NAMES), NEAR_VALID | JSON) | JSON},
)
# A valid config.json with one to three values changed, in the file or in its "model".
CHANGES = st.dictionaries(st.sampled_from(TRAIN_NAMES), NEAR_VALID | JSON, min_size=1, max_size=3)
MUTATED = st.tuples(CHANGES, st.booleans()).map(
    lambda case: (
        {**TrainConfig().to_dict(), "model": {**TrainConfig().to_dict()["model"], **case[0]}}
        if case[1]
        else {**TrainConfig().to_dict(), **case[0]}
    )
)
CONFIG_CASES = 500  # per test below; `pytest --hypothesis-show-statistics` prints them


def assert_valid(cfg) -> None:
    """Every field of a config the checks let through has its annotated type."""
    for f in fields(cfg):
        value, hint = getattr(cfg, f.name), typing.get_type_hints(type(cfg))[f.name]
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        if typing.get_origin(hint) is tuple:
            assert all(isinstance(x, typing.get_args(hint)[0]) for x in value)
            continue
        if float in allowed:
            allowed = (*allowed, int)
        assert isinstance(value, tuple(typing.get_origin(a) or a for a in allowed)), f.name
        assert not isinstance(value, bool) or bool in allowed, f.name
        if isinstance(value, ModelConfig):
            assert_valid(value)


def from_dict_ends_cleanly(data) -> None:
    try:
        cfg = TrainConfig.from_dict(data)
    except RnnlabError as e:
        assert one_line(str(e)), str(e)
        event("refused")
        return
    event("a config")
    assert_valid(cfg)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@settings(max_examples=CONFIG_CASES, deadline=None)
@given(JSON | st.dictionaries(st.text(max_size=8), JSON))
@pytest.mark.slow
def test_config_json_of_any_shape_is_a_config_or_one_line_error(data):
    from_dict_ends_cleanly(data)


@settings(max_examples=CONFIG_CASES, deadline=None)
@given(FIELD_DICTS | MUTATED)
@pytest.mark.slow
def test_config_json_with_real_names_and_any_values_is_a_config_or_one_line_error(data):
    from_dict_ends_cleanly(data)


@settings(max_examples=CONFIG_CASES, deadline=None)
@given(
    st.sampled_from(COMMAND_CONFIGS[2:]).flatmap(
        lambda cls: st.tuples(
            st.just(cls),
            st.fixed_dictionaries({}, optional={f.name: NEAR_VALID | JSON for f in fields(cls)}),
        )
    )
)
@pytest.mark.slow
def test_command_configs_of_any_values_are_valid_or_one_line_error(case):
    cls, options = case
    try:
        cfg = cls(**options)
    except RnnlabError as e:
        assert one_line(str(e)), str(e)
        return
    assert_valid(cfg)
