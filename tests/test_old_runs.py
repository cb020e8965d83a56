"""Run directories written by earlier versions still load, evaluate the same and resume.

tests/data/run-rnnlab-37f9aa0 was written by main at commit 37f9aa0 (2026-12-04), before
the trainer and checkpoint modules were split:

    rnnlab train timemachine --mode chars --impl torch --cell lstm --hidden 8 --embedding 8 \
        --optimizer adamw --lr 0.01 --schedule cosine --ema 0.9 --epochs 2 \
        --max-tokens 3000 --batch-size 4 --num-steps 16 --sample-every 0 --out RUN --quiet

and `rnnlab eval RUN --json` printed a loss of 3.0626643300056458 on 256 tokens.
(tests/data/run-rnnlm-0.1.0, from rnnlm 0.1.0, is checked in test_checkpoint and test_best.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rnnlab import cli, trained

RUN_37F9AA0 = Path(__file__).parent / "data" / "run-rnnlab-37f9aa0"


def test_the_run_of_37f9aa0_loads_with_its_averaged_weights():
    cfg, vocab, model, ckpt = trained.load_run(RUN_37F9AA0)
    assert (cfg.model.cell, cfg.model.impl, cfg.model.hidden, cfg.ema) == ("lstm", "torch", 8, 0.9)
    assert ckpt.epoch == 2
    assert ckpt.training_weights is not None  # --ema: the weights being trained, kept apart


def test_the_run_of_37f9aa0_evaluates_as_it_did(capsys):
    assert cli.main(["eval", str(RUN_37F9AA0), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["tokens"] == 256
    assert scored["loss"] == pytest.approx(3.0626643300056458, rel=1e-6)


def test_the_run_of_37f9aa0_resumes_for_another_epoch(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(RUN_37F9AA0, run)
    assert cli.main(["train", "--out", str(run), "--resume", "--epochs", "3", "--quiet"]) == 0
    assert trained.load_run(run, which="latest")[3].epoch == 3
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2, 3]
