"""``rnnlab eval --block-size N``: nanoGPT's protocol, checked against a direct computation.

nanoGPT scores held-out text in blocks of ``block_size`` characters, each from nothing; our
``eval`` carries the state through the whole text. The block protocol is computed here
block by block, one block at a time from a zero state in float64, and the command's figure
must match it (relative 1e-6: the command sums float32 losses of many blocks at once).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from rnnlab.batches import block_batches
from rnnlab.cli import main
from rnnlab.data import prepare
from rnnlab.trained import load_run

TINY = "--max-tokens 3000 --hidden 16 --batch-size 8 --num-steps 10 --epochs 2 --quiet".split()
TINY += ["--device", "cpu", "--threads", "1"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "timemachine", "--out", str(path), "--impl", "torch", *TINY]) == 0
    return path


def eval_json(capsys, run, *options) -> dict:
    capsys.readouterr()
    assert main(["eval", str(run), "--json", *map(str, options)]) == 0
    return json.loads(capsys.readouterr().out)


def validation_ids(run):
    cfg, vocab, model, _ = load_run(run, "cpu")
    data = prepare(cfg.source, cfg.mode, cfg.max_tokens, cfg.val_frac, cfg.batch_size,
                   cfg.num_steps, vocab=vocab)  # fmt: skip
    return model, data.val_ids


def block_by_block(model, ids: torch.Tensor, block_size: int) -> float:
    """The mean loss of every target, each block of block_size from a zero state, alone."""
    model = model.double().eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, block_size):
            X = ids[start : start + block_size]
            Y = ids[start + 1 : start + block_size + 1]
            X = X[: len(Y)]
            logits, _ = model(X[None], model.begin_state(1, "cpu"))  # (T, V)
            total += F.cross_entropy(logits.double(), Y, reduction="sum").item()
            count += len(Y)
    return total / count


@pytest.mark.parametrize("block_size", [1, 7, 64, 10_000])
def test_block_protocol_scores_every_target_from_a_zero_state(run, capsys, block_size):
    model, ids = validation_ids(run)
    got = eval_json(capsys, run, "--block-size", block_size, "--batch-size", 5)
    assert got["block_size"] == block_size
    assert got["tokens"] == len(ids) - 1  # every target, the shorter last block included
    want = block_by_block(model, ids, block_size)
    assert math.isclose(got["loss"], want, rel_tol=1e-6), (got["loss"], want)


def test_carrying_the_state_scores_lower_than_short_blocks(run, capsys):
    """The carried state knows more context than a block that starts from nothing."""
    carried = eval_json(capsys, run)
    assert carried["block_size"] == 0
    assert carried["loss"] < eval_json(capsys, run, "--block-size", 1)["loss"]


def test_block_batches_cut_the_text_into_groups_and_a_last_shorter_block():
    ids = torch.arange(24)
    pairs = block_batches(ids, block_size=5, streams=2)  # 23 targets: 4 blocks of 5, then 3
    assert [tuple(X.shape) for X, _ in pairs] == [(1, 2, 5), (1, 2, 5), (1, 1, 3)]
    assert torch.equal(torch.cat([X.flatten() for X, _ in pairs]), ids[:-1])
    assert torch.equal(torch.cat([Y.flatten() for _, Y in pairs]), ids[1:])


def test_a_negative_block_size_is_a_clean_error(run, capsys):
    capsys.readouterr()
    assert main(["eval", str(run), "--block-size", "-3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--block-size" in err[0]
