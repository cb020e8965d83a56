"""The cell registry (rnnlab.models.cells): one entry per cell, and state helpers for any
number of state parts. Each cell's function is checked against torch.nn in
tests/test_models.py and the fused recurrences in tests/test_fused.py; here, that the
entries agree with what they name."""

from __future__ import annotations

import pytest
import torch

from rnnlab.models.cells import (
    CELLS,
    layer_state,
    map_state,
    stack_states,
    state_of,
    state_parts,
    zero_state,
)
from rnnlab.options import CELLS as CELL_NAMES


def test_every_cell_the_options_name_has_one_entry():
    assert tuple(CELLS) == CELL_NAMES
    assert all(cell.name == name for name, cell in CELLS.items())


@pytest.mark.parametrize("name", CELL_NAMES)
def test_an_entrys_gates_are_its_layers_parameters(name):
    cell = CELLS[name]
    layer = cell.new_layer(5, 3)
    named = {n for gate in cell.gates for n in gate} | (
        {cell.recurrent_bias} if cell.recurrent_bias else set()
    )
    assert named == {n for n, _ in layer.named_parameters()}
    for w_x, w_h, b in cell.gates:
        assert getattr(layer, w_x).shape == (5, 3)
        assert getattr(layer, w_h).shape == (3, 3)
        assert getattr(layer, b).shape == (3,)


@pytest.mark.parametrize("name", CELL_NAMES)
def test_an_entrys_torch_class_has_its_gates_and_state_parts(name):
    cell = CELLS[name]
    rnn = cell.torch_class(5, 3, **cell.torch_options)
    assert rnn.weight_ih_l0.shape == (cell.num_gates * 3, 5)
    X = torch.zeros(4, 2, 5)
    state = zero_state(name, (1, 2, 3))
    out, last = rnn(X, state)
    assert out.shape == (4, 2, 3)
    assert len(state_parts(last)) == len(state_parts(state)) == cell.state_parts


def test_state_helpers_work_for_any_number_of_parts():
    three = tuple(torch.full((2, 4, 3), float(i)) for i in range(3))  # L=2, B=4, H=3
    assert state_parts(three) == three and state_of(three) == three
    one = torch.ones(2, 4, 3)
    assert state_parts(one) == (one,) and state_of([one]) is one
    doubled = map_state(lambda part: 2 * part, three)
    assert [float(part[0, 0, 0]) for part in doubled] == [0.0, 2.0, 4.0]
    assert map_state(lambda part: part, None) is None
    layers = [layer_state(three, i) for i in range(2)]  # (B, H) per part
    assert all(len(parts) == 3 and parts[0].shape == (4, 3) for parts in layers)
    stacked = stack_states(layers)
    assert all(torch.equal(a, b) for a, b in zip(stacked, three, strict=True))
    single = stack_states([layer_state(one, i) for i in range(2)])
    assert torch.equal(single, one)


def test_the_page_reads_a_relu_rnn_as_any_other_cell():
    """rnn-relu (the worked example of a new cell): its states are the page's h1, never
    negative (a ReLU's outputs), and its predictions are probabilities."""
    from rnnlab.config import ModelConfig, TrainConfig
    from rnnlab.lens import Lens
    from rnnlab.models import ScratchLM
    from rnnlab.vocab import Vocab

    torch.manual_seed(0)
    cfg = TrainConfig(mode="chars", model=ModelConfig(cell="rnn-relu", impl="scratch", hidden=4))
    vocab = Vocab(list("abc \n"))
    reading = Lens(cfg, vocab, ScratchLM(len(vocab), 4, 1, "rnn-relu")).read("abc ab")
    assert set(reading.activations) == {"h1"} and reading.activations["h1"].shape == (6, 4)
    assert (reading.activations["h1"] >= 0).all()
    assert all(0 < p < 1 for p in reading.probs[1:])
