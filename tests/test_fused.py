"""The fused models compute the scratch models' function, gradients included.

Float32 comparisons use the relative error ||a - b|| / ||b|| <= 1e-4 (the two
sum the same terms in different orders); the hand-written backward pass is
checked against numerical derivatives in float64 by torch.autograd.gradcheck.
Weights are drawn with std 0.3, not the book's 0.01, so that the gates and
tanh work away from their linear region.
"""

from dataclasses import replace

import pytest
import torch

from rnnlab import train
from rnnlab.config import ModelConfig
from rnnlab.errors import RnnlabError
from rnnlab.experimental import triton_model
from rnnlab.experimental.triton_model import TritonLM
from rnnlab.models import CELLS, build_model, layout
from rnnlab.models.fused import FusedLM, cpu
from rnnlab.models.scratch import ScratchLM

V, H, B, T = 13, 12, 3, 6
RTOL = 1e-4


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def twin_models(cell: str, layers: int, seed: int):
    """A ScratchLM with fresh std-0.3 weights and a FusedLM holding the same weights."""
    torch.manual_seed(seed)
    scratch = ScratchLM(V, H, layers, cell)
    with torch.no_grad():
        for p in scratch.parameters():
            p.normal_(0.0, 0.3)
    fused = FusedLM(V, H, layers, cell)
    fused.load_state_dict(scratch.state_dict())
    return scratch, fused


def random_state(model, seed: int):
    """A random nonzero initial state that asks for its gradient, twice (one per model)."""
    g = torch.Generator().manual_seed(seed)
    zeros = as_tuple(model.begin_state(B))
    a = tuple(torch.randn(z.shape, generator=g) * 0.5 for z in zeros)
    b = tuple(x.clone() for x in a)
    for x in a + b:
        x.requires_grad_()
    return (a, b) if model.cell == "lstm" else (a[0], b[0])


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_fused_matches_scratch_logits_states_and_every_gradient(cell, layers):
    scratch, fused = twin_models(cell, layers, seed=layers * 10 + CELLS.index(cell))
    X = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))
    s0_scratch, s0_fused = random_state(scratch, seed=2)
    logits_s, state_s = scratch(X, s0_scratch)
    logits_f, state_f = fused(X, s0_fused)
    assert logits_f.shape == (T * B, V)
    assert rel_err(logits_f, logits_s) < RTOL
    for a, b in zip(as_tuple(state_f), as_tuple(state_s)):
        assert a.shape == (layers, B, H)
        assert rel_err(a, b) < RTOL
    # A loss that reaches every output: weighted logits plus the final states.
    w = torch.randn(logits_s.shape, generator=torch.Generator().manual_seed(3))
    for logits, state in ((logits_s, state_s), (logits_f, state_f)):
        ((logits * w).sum() + sum((s * s).sum() for s in as_tuple(state))).backward()
    for (name, p_s), (name_f, p_f) in zip(scratch.named_parameters(), fused.named_parameters()):
        assert name == name_f
        assert p_s.grad.norm() > 0, name  # every parameter is used
        assert rel_err(p_f.grad, p_s.grad) < RTOL, name
    for a, b in zip(as_tuple(s0_fused), as_tuple(s0_scratch)):
        assert rel_err(a.grad, b.grad) < RTOL


@pytest.mark.parametrize("cell", CELLS)
def test_cpu_recurrence_passes_gradcheck(cell):
    g = torch.Generator().manual_seed(4)
    steps, batch, hidden = 4, 2, 3
    GH = layout.num_gates(cell) * hidden

    def rand(*shape):
        return (torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_()

    inputs = [rand(steps, batch, GH), rand(hidden, GH), rand(GH), rand(batch, hidden)]
    if cell == "lstm":
        inputs.append(rand(batch, hidden))

    def run(*args):
        outputs, hT, cT = cpu.recurrence(cell, *args)
        return (outputs, hT) if cT is None else (outputs, hT, cT)

    assert torch.autograd.gradcheck(run, tuple(inputs), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_cpu_recurrence_handles_a_single_step():
    outputs, hT, _ = cpu.recurrence(
        "gru", torch.randn(1, 2, 9), torch.randn(3, 9), torch.randn(9), torch.randn(2, 3)
    )
    assert outputs.shape == (1, 2, 3)
    assert torch.equal(outputs[0], hT)


@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_loads_both_ways(cell):
    scratch, fused = twin_models(cell, 2, seed=5)
    assert list(scratch.state_dict()) == list(fused.state_dict())
    back = ScratchLM(V, H, 2, cell)
    back.load_state_dict(fused.state_dict())
    for (_, a), (_, b) in zip(back.state_dict().items(), scratch.state_dict().items()):
        assert torch.equal(a, b)
    assert isinstance(build_model(ModelConfig(cell=cell, impl="fused", hidden=H), V), FusedLM)


@pytest.mark.parametrize("cell", CELLS)
def test_training_steps_give_the_same_weights(cell):
    scratch, fused = twin_models(cell, 2, seed=6)
    g = torch.Generator().manual_seed(7)
    batches = [
        (torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g))
        for _ in range(3)
    ]
    for model in (scratch, fused):
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        state = model.begin_state(B)
        for X, Y in batches:
            _, _, state = train.train_step(model, optimizer, X, Y, state, clip=1.0)
    for (name, a), (_, b) in zip(fused.named_parameters(), scratch.named_parameters()):
        assert rel_err(a.detach(), b.detach()) < RTOL, name


def test_greedy_generation_is_the_same():
    from rnnlab.generate import generate_ids

    scratch, fused = twin_models("lstm", 2, seed=8)
    assert generate_ids(fused, [1, 2, 3], 8) == generate_ids(scratch, [1, 2, 3], 8)


def test_cpu_tensors_use_the_torch_recurrence():
    for model in (FusedLM(V, H, 1, "lstm"), TritonLM(V, H, 1, "lstm")):
        assert model.recurrence(torch.zeros(2, 1, 4 * H)) is cpu.recurrence


def test_the_fused_lstm_runs_torchs_kernel_on_the_cpu_with_the_scratch_parameters(monkeypatch):
    """The LSTM's recurrence is torch's (oneDNN) kernel; its parameters and checkpoint keys
    stay the scratch model's, and its function and gradients are the scratch model's."""
    calls = []
    real = FusedLM._forward_in_torch_kernel
    monkeypatch.setattr(
        FusedLM, "_forward_in_torch_kernel", lambda self, X, s: calls.append(1) or real(self, X, s)
    )
    torch.manual_seed(3)
    config = ModelConfig(cell="lstm", impl="scratch", hidden=12, layers=2)
    scratch = build_model(config, 9).double()
    fused = build_model(replace(config, impl="fused"), 9).double()
    fused.load_state_dict(scratch.state_dict())
    assert list(fused.state_dict()) == list(scratch.state_dict())
    X = torch.randint(0, 9, (4, 6))
    state = tuple(torch.randn(2, 4, 12, dtype=torch.float64) for _ in range(2))
    (want, want_state), (got, got_state) = scratch(X, state), fused(X, state)
    assert calls == [1]
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for a, b in zip(got_state, want_state):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    (got.square().sum() + got_state[1].sum()).backward()
    (want.square().sum() + want_state[1].sum()).backward()
    for p, q in zip(fused.parameters(), scratch.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12)


def test_the_fused_lstm_keeps_the_row_lookup_for_vocabularies_larger_than_h(monkeypatch):
    """One-hot inputs of a word vocabulary would make torch's kernel far slower."""
    monkeypatch.setattr(FusedLM, "_forward_in_torch_kernel", lambda *a: pytest.fail("kernel"))
    model = build_model(ModelConfig(cell="lstm", impl="fused", hidden=8), 20)
    logits, _ = model(torch.randint(0, 20, (2, 3)), model.begin_state(2))
    assert logits.shape == (3 * 2, 20)


def _blocks_unchanged(model) -> bool:
    return all(layout.is_packed(layer, model.cell) for layer in model.layers)


def test_the_fused_lstm_shares_one_block_per_kind_of_weight_with_the_kernel():
    """Packed: every gate parameter is a slice of its layer's torch-shaped block, the views
    handed to the kernel are those blocks (no copy), and stay so through float64, SGD
    steps and load_state_dict; the gradients reach each gate's own parameter."""
    scratch, fused = twin_models("lstm", 2, seed=9)
    assert _blocks_unchanged(fused) and not _blocks_unchanged(scratch)
    fused, scratch = fused.double(), scratch.double()
    assert _blocks_unchanged(fused)
    params = layout.torch_nn_parameters(fused.layers, "lstm")
    W_hh = params["weight_hh_l1"]
    assert W_hh.shape == (4 * H, H)
    assert W_hh.data_ptr() == fused.layers[1].W_hi.data_ptr()  # the block, not a copy
    torch.testing.assert_close(W_hh[H : 2 * H], fused.layers[1].W_hf.t(), rtol=0, atol=0)
    g = torch.Generator().manual_seed(10)
    X, Y = torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)
    for model in (scratch, fused):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        state = model.begin_state(B)
        for _ in range(2):
            _, _, state = train.train_step(model, optimizer, X, Y, state, clip=1.0)
    assert _blocks_unchanged(fused)
    for (name, a), (_, b) in zip(fused.named_parameters(), scratch.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12, msg=name)
    fused.load_state_dict(scratch.state_dict())
    assert _blocks_unchanged(fused)


def test_parameters_given_new_memory_are_stacked_by_copying():
    """assign=True replaces the parameters: the model notices and copies, still correctly."""
    scratch, fused = twin_models("lstm", 1, seed=11)
    fused.load_state_dict({k: v.clone() for k, v in scratch.state_dict().items()}, assign=True)
    assert not _blocks_unchanged(fused)
    X = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(12))
    (want, _), (got, _) = scratch(X, scratch.begin_state(B)), fused(X, fused.begin_state(B))
    assert rel_err(got, want) < RTOL


# ---------------------------------------------------------------- which code runs where


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "copied"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_torchs_kernel_computes_the_scratch_function_state_and_gradients(cell, layers, packed):
    """The path CUDA runs every cell on (cuDNN there): torch's whole-network kernel fed the
    scratch parameters in torch.nn's layout. Called directly, on the CPU, in float64, with
    the layers packed as on CUDA and not; X draws from V = 9 <= H = 12."""
    torch.manual_seed(20 + layers)
    scratch = ScratchLM(9, H, layers, cell).double()
    with torch.no_grad():
        for p in scratch.parameters():
            p.normal_(0.0, 0.3)
    fused = FusedLM(9, H, layers, cell).double()
    fused.load_state_dict(scratch.state_dict())
    for layer in fused.layers:
        if packed:
            layout.pack(layer, cell)
        assert layout.is_packed(layer, cell) == (packed or cell == "lstm")  # lstm: as on the CPU
    if not packed and cell == "lstm":
        fused.load_state_dict(scratch.state_dict(), assign=True)  # unpacked: copied per call
        assert not any(layout.is_packed(layer, cell) for layer in fused.layers)
    X = torch.randint(0, 9, (B, T), generator=torch.Generator().manual_seed(21))
    g = torch.Generator().manual_seed(22)
    zeros = as_tuple(scratch.begin_state(B))
    s0 = [tuple(torch.randn(z.shape, generator=g, dtype=torch.float64) for z in zeros)]
    s0.append(tuple(x.clone() for x in s0[0]))
    for s in s0:
        for x in s:
            x.requires_grad_()
    pick = (lambda s: s) if cell == "lstm" else (lambda s: s[0])
    want, want_state = scratch(X, pick(s0[0]))
    got, got_state = fused._forward_in_torch_kernel(X, pick(s0[1]))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for a, b in zip(as_tuple(got_state), as_tuple(want_state)):
        assert a.shape == (layers, B, H)
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    w = torch.randn(want.shape, generator=g, dtype=torch.float64)
    for logits, state in ((want, want_state), (got, got_state)):
        ((logits * w).sum() + sum((s * s).sum() for s in as_tuple(state))).backward()
    for (name, p), (_, q) in zip(fused.named_parameters(), scratch.named_parameters()):
        assert q.grad.norm() > 0, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=name)
    for a, b in zip(s0[1], s0[0]):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_cuda_runs_every_cell_in_torchs_kernel_while_v_is_at_most_h():
    from rnnlab.models.fused import path_for

    for cell in CELLS:
        assert path_for(cell, "cuda", 28, 512) == "torch-kernel"  # cuDNN
        assert path_for(cell, "cuda", 512, 512) == "torch-kernel"
        assert path_for(cell, "cuda", 10_000, 200) == "torch-ops"  # words: the row lookup
        for vocab in (28, 10_000):  # Triton only when asked for
            assert FusedLM(vocab, 16, 1, cell).path("cuda") != "triton"
            assert TritonLM(vocab, 16, 1, cell).path("cuda") == "triton"


def test_the_cpu_keeps_its_measured_paths_and_never_runs_triton():
    from rnnlab.models.fused import path_for

    assert path_for("lstm", "cpu", 28, 256) == "torch-kernel"  # oneDNN's LSTM
    assert path_for("lstm", "cpu", 10_000, 200) == "torch-ops"
    for cell in ("rnn", "gru"):
        assert path_for(cell, "cpu", 28, 256) == "torch-ops"  # cpu.py
    assert path_for("gru", "meta", 28, 256) == "torch-ops"
    for cell, vocab, hidden in (("lstm", 28, 256), ("lstm", 300, 200), ("gru", 28, 256)):
        model = TritonLM(vocab, hidden, 1, cell)
        assert model.path("cpu") == path_for(cell, "cpu", vocab, hidden)


@pytest.mark.parametrize("cell", CELLS)
def test_packing_covers_the_cells_torchs_kernel_runs_on_the_device(cell):
    def packed(model):
        return all(layout.is_packed(layer, cell) for layer in model.layers)

    assert packed(FusedLM(9, H, 2, cell)) == (cell == "lstm")  # the CPU: as measured
    for V, triton, want in ((9, False, True), (20, False, False), (9, True, False)):
        model = (TritonLM if triton else FusedLM)(V, H, 2, cell)
        model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()}, assign=True)
        assert not packed(model)  # new memory for each parameter: unpacked
        model._pack("cuda")  # what .cuda() does, without a GPU
        assert packed(model) == want, (V, triton)


def test_the_recurrence_is_tritons_only_when_asked_and_on_cuda(monkeypatch):
    from types import SimpleNamespace

    from rnnlab.experimental import triton_rnn as kernels

    on_cuda = SimpleNamespace(is_cuda=True, shape=(2, 1, 16))  # XW as the dispatch sees it
    fused, triton = FusedLM(V, 16, 1, "rnn"), TritonLM(V, 16, 1, "rnn")
    assert fused.recurrence(on_cuda) is cpu.recurrence
    assert triton.recurrence(torch.zeros(2, 1, 16)) is cpu.recurrence
    if kernels.triton is not None:
        assert triton.recurrence(on_cuda) is kernels.recurrence
    monkeypatch.setattr(triton_model, "_loaded", False)  # as where Triton cannot be imported
    with pytest.raises(RnnlabError, match="triton on CUDA needs the triton package.*--device cpu"):
        triton.recurrence(on_cuda)


@pytest.mark.parametrize("cell", CELLS)
def test_the_triton_model_is_the_fused_model_off_cuda(cell):
    scratch, fused = twin_models(cell, 2, seed=30)
    triton = build_model(ModelConfig(cell=cell, impl="triton", hidden=H, layers=2), V)
    assert type(triton) is TritonLM and triton.cuda_graph_safe
    assert list(triton.state_dict()) == list(scratch.state_dict())
    triton.load_state_dict(scratch.state_dict())
    X = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(31))
    (want, _), (got, _) = fused(X, fused.begin_state(B)), triton(X, triton.begin_state(B))
    assert torch.equal(got, want)


def test_triton_trains_only_on_cuda_with_triton_and_a_supported_size(monkeypatch):
    from rnnlab.experimental import triton_rnn as kernels
    from rnnlab.models import check_device

    config = ModelConfig(cell="gru", impl="triton", hidden=64)
    check_device(replace(config, impl="fused"), "cpu")  # nothing to check
    check_device(replace(config, impl="scratch"), "cuda")
    with pytest.raises(RnnlabError, match="only on a CUDA GPU.*--device cuda.*--impl fused"):
        check_device(config, "cpu")
    if kernels.triton is not None:
        monkeypatch.setattr(kernels.torch.cuda, "is_available", lambda: True)  # a GPU, as seen
        check_device(config, "cuda")
        with pytest.raises(RnnlabError, match="multiples of 16 \\(got 100\\); use --impl fused"):
            check_device(replace(config, hidden=100), "cuda")
    monkeypatch.setattr(triton_model, "_loaded", False)
    with pytest.raises(RnnlabError, match="--impl triton needs the triton package.*--impl fused"):
        check_device(config, "cuda")
