"""The scratch models are the specification: torch.nn must compute the same function.

build_model makes the model a ModelConfig describes; the config refuses what no model can be.
"""

import sys
import types
from dataclasses import FrozenInstanceError, replace

import pytest
import torch

import rnnlab.models
from rnnlab.config import ModelConfig
from rnnlab.errors import RnnlabError
from rnnlab.experimental.triton_model import TritonLM
from rnnlab.models import (
    CELLS,
    IMPLS,
    RNNEncoder,
    ScratchLM,
    TorchLM,
    build_model,
    check_fits,
    machine_memory,
    memory_estimate,
    parameter_count,
    usable_impl,
)
from rnnlab.models.fused import FusedLM

TOL = 1e-5  # float64 throughout, so differences are rounding only


def random_scratch(cell, layers, V=11, H=8, seed=0):
    torch.manual_seed(seed)
    model = ScratchLM(V, H, layers, cell).double()
    with torch.no_grad():  # larger than the 0.01 init so every nonlinearity is exercised
        for p in model.parameters():
            p.normal_(0, 0.4)
    return model


def random_state(model, B, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (len(model.layers), B, model.hidden)
    make = lambda: torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_()
    return (make(), make()) if model.cell == "lstm" else make()


def flat(state):
    if isinstance(state, tuple):
        return torch.cat([s.reshape(-1) for s in state])
    return state.reshape(-1)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
def test_scratch_matches_torch_nn_outputs_states_and_gradients(cell, layers):
    scratch = random_scratch(cell, layers, seed=layers)
    torch_model = TorchLM(11, 8, layers, cell).double().copy_from_scratch(scratch)
    X = torch.randint(0, 11, (3, 6), generator=torch.Generator().manual_seed(7))
    Y = torch.randint(0, 11, (3, 6), generator=torch.Generator().manual_seed(8))
    s1, s2 = random_state(scratch, 3, 1), random_state(scratch, 3, 1)

    out1, last1 = scratch(X, s1)
    out2, last2 = torch_model(X, s2)
    assert out1.shape == (6 * 3, 11)
    torch.testing.assert_close(out1, out2, rtol=TOL, atol=TOL)
    torch.testing.assert_close(flat(last1), flat(last2), rtol=TOL, atol=TOL)

    for out, last in ((out1, last1), (out2, last2)):
        loss = torch.nn.functional.cross_entropy(out, Y.T.reshape(-1)) + flat(last).sum()
        loss.backward()
    # Same gradients: compare through the stacked layout torch.nn uses.
    grads = TorchLM(11, 8, layers, cell).double()
    for p, g in zip(scratch.parameters(), [q.grad for q in scratch.parameters()]):
        p.data = g.clone()
    grads.copy_from_scratch(scratch)
    for name, p in torch_model.named_parameters():
        expected = dict(grads.named_parameters())[name]
        if "bias_hh" in name and cell != "gru":
            # scratch has one bias per gate; torch's two biases both get its gradient
            expected = dict(grads.named_parameters())[name.replace("hh", "ih")]
        if "bias_hh" in name:  # GRU: only the candidate part has a scratch counterpart (b_hh)
            H = 8
            torch.testing.assert_close(p.grad[2 * H :], expected[2 * H :], rtol=TOL, atol=TOL)
            continue
        torch.testing.assert_close(p.grad, expected, rtol=TOL, atol=TOL, msg=name)
    for a, b in zip(
        (s1,) if not isinstance(s1, tuple) else s1, (s2,) if not isinstance(s2, tuple) else s2
    ):
        torch.testing.assert_close(a.grad, b.grad, rtol=TOL, atol=TOL)


def test_concatenated_weights_identity():
    """X W_xh + H W_hh == [X, H] [W_xh; W_hh] (d2l 8.4): one product can do both."""
    g = torch.Generator().manual_seed(0)
    X, W_xh = torch.randn(3, 1, generator=g), torch.randn(1, 4, generator=g)
    H, W_hh = torch.randn(3, 4, generator=g), torch.randn(4, 4, generator=g)
    separate = X @ W_xh + H @ W_hh
    joined = torch.cat((X, H), dim=1) @ torch.cat((W_xh, W_hh), dim=0)
    torch.testing.assert_close(separate, joined)
    assert not torch.allclose(separate, X @ W_xh)  # the identity is not vacuous


def test_scratch_init_is_the_books():
    torch.manual_seed(0)
    model = ScratchLM(28, 512)
    layer = model.layers[0]
    assert layer.W_xh.shape == (28, 512) and layer.W_hh.shape == (512, 512)
    assert torch.all(layer.b_h == 0) and torch.all(model.b_q == 0)
    assert 0.009 < layer.W_hh.std().item() < 0.011


def test_shapes_follow_the_book():
    """(B, T) ids -> (T*B, V) logits and a (L, B, H) state, as the notes print."""
    model = ScratchLM(28, 512)
    X = torch.arange(10).reshape(2, 5)
    logits, state = model(X, model.begin_state(2))
    assert logits.shape == (10, 28) and state.shape == (1, 2, 512)
    lstm = build_model(ModelConfig(cell="lstm", impl="torch", hidden=16, layers=2, embedding=8), 28)
    logits, (h, c) = lstm(X, lstm.begin_state(2))
    assert logits.shape == (10, 28) and h.shape == c.shape == (2, 2, 16)


def layer_count(model) -> int:
    """L: the scratch and fused models hold a list of layers, the torch model one nn.RNN."""
    return model.rnn.num_layers if isinstance(model, TorchLM) else len(model.layers)


# The class each implementation builds (a new implementation adds its line here).
CLASSES = {"scratch": ScratchLM, "fused": FusedLM, "torch": TorchLM, "triton": TritonLM}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cell", CELLS)
def test_build_model_makes_the_model_the_config_describes(impl, cell):
    model = build_model(ModelConfig(cell=cell, impl=impl, hidden=6, layers=2), 9)
    assert type(model) is CLASSES[impl]
    assert (model.cell, model.hidden, layer_count(model), model.vocab_size) == (cell, 6, 2, 9)
    logits, state = model(torch.zeros(2, 3, dtype=torch.long), model.begin_state(2))
    assert logits.shape == (3 * 2, 9)
    for s in state if cell == "lstm" else (state,):
        assert s.shape == (2, 2, 6)


@pytest.mark.parametrize("impl", IMPLS)
def test_every_implementation_is_described_and_usable_here(impl):
    assert isinstance(IMPLS[impl], str) and IMPLS[impl]  # the --help text
    assert usable_impl(impl) == (impl, None)  # fused imports here, so nothing falls back


def test_fused_falls_back_to_scratch_where_it_cannot_be_imported(monkeypatch):
    monkeypatch.delattr(rnnlab.models, "fused")
    monkeypatch.setitem(sys.modules, "rnnlab.models.fused", None)  # importing it now fails
    impl, why = usable_impl("fused")
    assert impl == "scratch" and "not available" in why
    model = build_model(ModelConfig(impl="fused", hidden=4), 5)
    assert type(model) is ScratchLM


def test_configs_vary_by_replace_and_are_frozen():
    base = ModelConfig(cell="gru", impl="scratch", hidden=8)
    wider = replace(base, hidden=16)
    assert (wider.cell, wider.impl, wider.hidden) == ("gru", "scratch", 16)
    with pytest.raises(FrozenInstanceError):
        base.hidden = 32
    with pytest.raises(RnnlabError, match="--hidden"):
        replace(base, hidden=0)  # replace runs the same checks


def test_bidirectional_language_model_is_refused_but_encoder_works():
    with pytest.raises(RnnlabError, match="bidirectional"):
        TorchLM(28, 16, bidirectional=True)
    encoder = RNNEncoder(28, 16, cell="gru", bidirectional=True)
    outputs, state = encoder.encode(torch.zeros(2, 5, dtype=torch.long), encoder.begin_state(2))
    assert outputs.shape == (5, 2, 32) and state.shape == (2, 2, 16)


def test_weight_tying_shares_the_embedding():
    tied = ModelConfig(cell="lstm", impl="torch", hidden=16, embedding=16, tie_weights=True)
    model = build_model(tied, 30)
    assert model.linear.weight is model.embedding.weight
    with pytest.raises(RnnlabError, match="--tie-weights"):
        replace(tied, embedding=8)
    with pytest.raises(RnnlabError, match="embedding size equal to the hidden size"):
        TorchLM(30, 16, cell="lstm", embedding=8, tie_weights=True)


def test_a_tied_matrix_starts_small_as_an_output_layer_must():
    """Tied weights start uniform in +-0.1 (word_language_model's range), not N(0, 1)."""
    torch.manual_seed(0)
    H, V = 200, 10000
    tied = TorchLM(V, H, 2, "lstm", embedding=H, tie_weights=True)
    weight = tied.embedding.weight
    assert weight.abs().max() <= 0.1 and weight.std() > 0.05  # spread over the whole range
    logits, _ = tied(torch.zeros(1, 1, dtype=torch.long), tied.begin_state(1))
    assert logits.std() < 1.0  # with N(0, 1) entries they would spread by about sqrt(H) = 14
    untied = TorchLM(V, H, 2, "lstm", embedding=H)
    assert untied.embedding.weight.std() > 0.9  # an input-only embedding keeps torch's N(0, 1)


@pytest.mark.parametrize("impl", ["scratch", "fused"])
def test_one_hot_models_refuse_torch_only_options(impl):
    torch_only = (
        {"embedding": 8},
        {"dropout": 0.5},
        {"tie_weights": True},
        {"dropout_input": 0.5},
        {"locked_dropout": True},
        {"adaptive_softmax": True},
    )
    for option in torch_only:
        with pytest.raises(RnnlabError, match="--impl torch"):
            ModelConfig(impl=impl, hidden=8, **option)
    with pytest.raises(RnnlabError, match="--cell 'transformer'.*" + ", ".join(CELLS)):
        ModelConfig(impl=impl, cell="transformer")


# Each model's optional extras: an embedding, tied weights (which need E == H), locked
# dropout (no parameters of its own) and an adaptive softmax.
SHAPES = (
    [
        dict(impl=impl, cell=cell, layers=layers, hidden=6)
        for impl in IMPLS
        for cell in CELLS
        for layers in (1, 3)
    ]
    + [dict(impl="torch", cell=cell, layers=2, hidden=6, embedding=4) for cell in CELLS]
    + [
        dict(impl="torch", cell=cell, layers=2, hidden=6, embedding=6, tie_weights=True)
        for cell in CELLS
    ]
    + [dict(impl="torch", cell=cell, layers=2, hidden=6, locked_dropout=True) for cell in CELLS]
    + [
        dict(impl="torch", cell=cell, layers=1, hidden=16, embedding=4, adaptive_softmax=True)
        for cell in CELLS
    ]
    + [dict(impl="torch", cell="lstm", hidden=16, adaptive_softmax=True, cutoffs=(2, 5))]
)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(map(str, s.values())))
def test_parameter_count_is_what_torch_counts(shape):
    config = ModelConfig(**shape)
    model = build_model(config, 13)
    assert parameter_count(config, 13) == sum(p.numel() for p in model.parameters())


def test_memory_estimate_is_the_formula_in_its_docstring():
    """A 2-layer LSTM by hand: V=5, H=3, B=2, T=4, G=4."""
    config = ModelConfig(cell="lstm", impl="scratch", hidden=3, layers=2)
    # layer 0: 4*(5*3 + 3*3 + 3) = 108; layer 1: 4*(3*3 + 3*3 + 3) = 84; output 3*5 + 5 = 20
    P = 108 + 84 + 20
    assert P == sum(p.numel() for p in build_model(config, 5).parameters())
    # per step and stream: one-hot input 5, 2 layers of (4 + 1) * 3, logits and gradient 2*5
    activations = 4 * 2 * (5 + 2 * 5 * 3 + 2 * 5)
    assert memory_estimate(config, 5, 2, 4) == 4 * (2 * P + activations)  # SGD: no state
    for adam in ("adam", "adamw"):  # two moments per parameter
        assert memory_estimate(config, 5, 2, 4, adam) == 4 * (4 * P + activations)


def test_check_fits_refuses_what_the_machine_cannot_hold():
    config = ModelConfig(hidden=64, layers=2)
    need = memory_estimate(config, 28, 32, 35, "adam")
    check_fits(config, 28, 32, 35, "adam", available=need)
    with pytest.raises(RnnlabError) as info:
        check_fits(config, 28, 32, 35, "adam", available=need - 1)
    message = str(info.value)
    assert "--hidden/--layers/--batch-size/--num-steps" in message and "activations" in message
    assert len(message.splitlines()) == 1


def test_check_fits_refuses_huge_models_without_allocating(monkeypatch):
    def no_tensors(*args, **kwargs):
        raise AssertionError("check_fits must not allocate")

    for name in ("empty", "zeros", "randn", "ones"):
        monkeypatch.setattr(torch, name, no_tensors)
    terabyte = 2**40
    largest = ModelConfig(cell="lstm", hidden=1_000_000, layers=1_000)  # the config's bounds
    with pytest.raises(RnnlabError, match="GiB"):
        check_fits(largest, 100, 32, 35, available=terabyte)
    # even past the config's bounds (a stand-in config): Python ints, no overflow
    huge = types.SimpleNamespace(
        cell="rnn", impl="fused", hidden=10**9, layers=1, embedding=0, tie_weights=False
    )
    assert memory_estimate(huge, 100, 32, 35) > 8 * 10**18  # W_hh and its gradient alone
    with pytest.raises(RnnlabError, match="more than this machine's"):
        check_fits(huge, 100, 32, 35, available=machine_memory() or terabyte)


def test_the_notes_model_fits_this_machine():
    if machine_memory() is None:
        pytest.skip("this system does not report its memory")
    check_fits(ModelConfig(), 28, 32, 35)
