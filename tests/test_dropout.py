"""Locked (variational) dropout: one mask per stream, reused at every step (Gal & Ghahramani 2016).

The torch model's function with locked dropout is checked against a step-by-step
float64 reference that applies the same masks by hand.
"""

import pytest
import torch
import torch.nn.functional as F

from rnnlab.cli import main
from rnnlab.config import ModelConfig
from rnnlab.errors import RnnlabError
from rnnlab.models import CELLS, TorchLM, build_model
from rnnlab.models.torchnn import LockedDropout

V, H, E = 11, 7, 5


def locked_model(cell, layers=2, dropout=0.4, dropout_input=0.3, embedding=E, seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(
        impl="torch",
        cell=cell,
        hidden=H,
        layers=layers,
        embedding=embedding,
        dropout=dropout,
        dropout_input=dropout_input,
        locked_dropout=True,
    )
    model = build_model(config, V).double()
    with torch.no_grad():  # larger than the default init so every nonlinearity is exercised
        for p in model.parameters():
            p.normal_(0, 0.4)
    return model


def plain_copy(model, cell, layers=2, embedding=E):
    """The same weights in a model without any dropout."""
    config = ModelConfig(impl="torch", cell=cell, hidden=H, layers=layers, embedding=embedding)
    plain = build_model(config, V).double()
    plain.load_state_dict(model.state_dict())
    return plain


def batch(B=3, T=6, seed=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)


def random_state(model, B, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (model.rnn.num_layers, B, H)
    make = lambda: torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_()
    return (make(), make()) if model.cell == "lstm" else make()


def flat(state):
    return torch.cat([s.reshape(-1) for s in state]) if isinstance(state, tuple) else state


def record_masks(model):
    """Wrap the mask method of each LockedDropout of ``model``: returns the list it fills."""
    masks = []
    for module in model.modules():
        if isinstance(module, LockedDropout):

            def recording(x, draw=module.mask):
                m = draw(x)
                masks.append(m)
                return m

            module.mask = recording
    return masks


def test_the_mask_is_the_same_at_every_step_and_differs_between_streams():
    torch.manual_seed(0)
    drop = LockedDropout(0.5)
    y = drop(torch.ones(20, 8, 64))  # (T, B, F)
    assert torch.equal(y, y[:1].expand_as(y))  # every step as the first
    assert set(y.unique().tolist()) == {0.0, 2.0}  # kept units scaled by 1/(1-p)
    assert not torch.equal(y[0, 0], y[0, 1])  # each stream its own mask


def test_the_models_output_dropout_is_one_mask_per_stream():
    model = locked_model("lstm")
    model.train()
    seen = []
    model.drop.register_forward_hook(
        lambda module, inputs, output: seen.append((inputs[0], output))
    )
    masks = record_masks(model)
    X, _ = batch(B=4, T=9)
    model(X, model.begin_state(4))
    (inp, out) = seen[-1]  # the last call: the last layer's output (T, B, H)
    mask = masks[-1]
    assert mask.shape == (1, 4, H) and inp.shape == (9, 4, H)
    assert torch.equal(out, inp * mask)
    assert len(masks) == 3  # the input, between the two layers, the output
    assert masks[0].shape == (1, 4, E)  # on the embedding's output


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_masks_keep_the_expectation(p):
    """Mean of 10**6 mask entries: standard deviation sqrt(p/(1-p))/1000 <= 0.001; 5 of them."""
    torch.manual_seed(0)
    mask = LockedDropout(p).mask(torch.empty(1, 1000, 1000, dtype=torch.float64))
    assert abs(mask.mean().item() - 1.0) < 5e-3
    assert abs((mask == 0).double().mean().item() - p) < 5e-3


@pytest.mark.parametrize("cell", CELLS)
def test_eval_mode_drops_nothing_and_is_deterministic(cell):
    model = locked_model(cell)
    model.eval()
    X, _ = batch()
    out1, last1 = model(X, model.begin_state(3))
    out2, last2 = model(X, model.begin_state(3))
    assert torch.equal(out1, out2) and torch.equal(flat(last1), flat(last2))
    plain = plain_copy(model, cell)
    out3, _ = plain(X, plain.begin_state(3))
    assert torch.equal(out1, out3)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
def test_zero_dropout_is_the_model_without_dropout(cell, layers):
    model = locked_model(cell, layers, dropout=0.0, dropout_input=0.0)
    plain = plain_copy(model, cell, layers)
    model.train(), plain.train()
    X, _ = batch()
    out1, last1 = model(X, model.begin_state(3))
    out2, last2 = plain(X, plain.begin_state(3))
    assert torch.equal(out1, out2) and torch.equal(flat(last1), flat(last2))


@pytest.mark.parametrize("cell", CELLS)
def test_layers_run_one_at_a_time_compute_what_torch_nn_computes(cell, monkeypatch):
    """With masks of ones, the layer-by-layer path is nn.RNN/GRU/LSTM's function."""
    monkeypatch.setattr(LockedDropout, "mask", lambda self, x: torch.ones_like(x[:1]))
    model = locked_model(cell, layers=3)
    plain = plain_copy(model, cell, layers=3)
    X, _ = batch()
    out1, last1 = model(X, random_state(model, 3))
    out2, last2 = plain(X, random_state(model, 3))
    torch.testing.assert_close(out1, out2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(flat(last1), flat(last2), rtol=1e-12, atol=1e-12)


def cell_step(cell, x, h, c, W_ih, W_hh, b_ih, b_hh):
    """One step of torch.nn's cell (gates in its order) from its parameters: (h, c)."""
    gi, gh = x @ W_ih.T + b_ih, h @ W_hh.T + b_hh
    if cell == "rnn":
        return torch.tanh(gi + gh), None
    if cell == "rnn-relu":
        return torch.relu(gi + gh), None
    if cell == "gru":  # gates r, z, n
        (ir, iz, in_), (hr, hz, hn) = gi.chunk(3, 1), gh.chunk(3, 1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        return (1 - z) * n + z * h, None
    i, f, g, o = (gi + gh).chunk(4, 1)  # LSTM: gates i, f, g, o
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def reference_forward(model, X, state, masks):
    """What a locked-dropout TorchLM computes, step by step, with the masks given.

    masks: (1, B, F) each, in the order the model draws them: the input's, then one
    per layer above the first, then the output's.
    """
    P = dict(model.named_parameters())
    cell, L = model.cell, model.rnn.num_layers
    T = X.shape[1]
    x = P["embedding.weight"][X.T]  # (T, B, E)
    masks = list(masks)
    x = x * masks.pop(0)
    hs, cs = [], []
    for k in range(L):
        if k > 0:
            x = x * masks.pop(0)
        W = [P[f"rnn.{name}_l{k}"] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h = state[0][k] if cell == "lstm" else state[k]
        c = state[1][k] if cell == "lstm" else None
        steps = []
        for t in range(T):
            h, c = cell_step(cell, x[t], h, c, *W)
            steps.append(h)
        x = torch.stack(steps)  # (T, B, H)
        hs.append(h)
        cs.append(c)
    x = x * masks.pop(0)
    assert not masks
    logits = x.reshape(-1, H) @ P["linear.weight"].T + P["linear.bias"]
    last = (torch.stack(hs), torch.stack(cs)) if cell == "lstm" else torch.stack(hs)
    return logits, last


@pytest.mark.parametrize("cell", CELLS)
def test_locked_dropout_gradients_match_a_reference_with_explicit_masks(cell):
    model = locked_model(cell, layers=2)
    model.train()
    masks = record_masks(model)
    X, Y = batch()
    s1, s2 = random_state(model, 3), random_state(model, 3)
    out1, last1 = model(X, s1)
    assert len(masks) == 3 and all(m.dtype == torch.float64 for m in masks)
    assert any((m == 0).any() for m in masks)  # some units really were dropped

    grads = []
    for fn, state in (
        (lambda s: (out1, last1), s1),
        (lambda s: reference_forward(model, X, s, masks), s2),
    ):
        model.zero_grad()
        logits, last = fn(state)
        loss = F.cross_entropy(logits, Y.T.reshape(-1)) + flat(last).sum()
        loss.backward()
        grads.append(
            (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, state)
        )
    (loss1, g1, st1), (loss2, g2, st2) = grads
    torch.testing.assert_close(loss1, loss2, rtol=1e-10, atol=1e-10)
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-10, atol=1e-10, msg=name)
    for a, b in zip(
        st1 if isinstance(st1, tuple) else (st1,), st2 if isinstance(st2, tuple) else (st2,)
    ):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-10)


def test_one_hot_input_gets_a_locked_mask_over_the_vocabulary():
    model = locked_model("gru", embedding=0)
    model.train()
    masks = record_masks(model)
    X, _ = batch()
    model(X, model.begin_state(3))
    assert masks[0].shape == (1, 3, V)


def test_the_state_dict_does_not_depend_on_the_dropout():
    """Checkpoints load either way: locked dropout runs on nn.LSTM's own parameters."""
    model = locked_model("lstm")
    plain = plain_copy(model, "lstm")
    assert list(model.state_dict()) == list(plain.state_dict())
    default = build_model(
        ModelConfig(impl="torch", cell="lstm", hidden=H, layers=2, dropout=0.4), V
    )
    assert [k for k in default.state_dict()] == [
        k
        for k in build_model(
            ModelConfig(impl="torch", cell="lstm", hidden=H, layers=2), V
        ).state_dict()
    ]


def test_without_locked_dropout_the_masks_are_torch_nns():
    """The default model draws what nn.LSTM(dropout=p) and nn.Dropout(p) alone would draw."""
    torch.manual_seed(0)
    model = TorchLM(V, H, 2, "lstm", dropout=0.5, embedding=E)
    model.train()
    X, _ = batch()
    torch.manual_seed(1)
    logits, _ = model(X, model.begin_state(3))
    torch.manual_seed(1)
    outputs, _ = model.rnn(model.embedding(X.T), model.begin_state(3))
    expected = model.linear(F.dropout(outputs, 0.5).reshape(-1, H))
    assert torch.equal(logits, expected)


@pytest.mark.parametrize("impl", ["scratch", "fused"])
@pytest.mark.parametrize(
    "option, flag",
    [({"dropout_input": 0.2}, "--dropout-input"), ({"locked_dropout": True}, "--locked-dropout")],
)
def test_dropout_options_need_the_torch_implementation(impl, option, flag):
    with pytest.raises(RnnlabError, match=f"{flag}.*--impl torch"):
        ModelConfig(impl=impl, **option)
    with pytest.raises(RnnlabError, match="--dropout-input"):
        ModelConfig(impl="torch", dropout_input=1.0)


def test_a_run_with_locked_dropout_trains_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    options = ["--impl", "torch", "--cell", "lstm", "--layers", "2", "--hidden", "16"]
    options += [
        "--embedding",
        "8",
        "--locked-dropout",
        "--dropout",
        "0.3",
        "--dropout-input",
        "0.1",
    ]
    options += ["--max-tokens", "3000", "--batch-size", "4", "--num-steps", "10", "--quiet"]
    assert main(["train", "--out", str(out), "--epochs", "1", *options]) == 0
    assert main(["train", "--out", str(out), "--epochs", "2", "--resume", "--quiet"]) == 0
    assert (out / "metrics.jsonl").read_text().count("\n") == 2
