"""A trained run, opened: its config, vocabulary, the checkpoint asked for, and its model.

    cfg, vocab, model, ckpt = load_run("runs/tm")                 # the latest checkpoint
    cfg, vocab, model, ckpt = load_run("runs/tm", which="best")   # the lowest validation loss

What generate, eval, serve, inspect and export read; resuming takes ``latest`` too. A
checkpoint whose pointer was lost is recovered from its newest complete folder (and the
pointer left as it is: reading a run never writes to it).
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import rundir
from .checkpoint import (
    BEST,
    SLOTS,
    Checkpoint,
    has_checkpoint,
    no_checkpoint,
    read_checkpoint,
    recover,
    tensors_limit,
)
from .config import TrainConfig, first_conflict
from .errors import RnnlabError
from .models import build_model, check_fits
from .rundir import CONFIG


def latest(run: Path, cfg: TrainConfig, vocab_size: int) -> tuple[Checkpoint | None, bool]:
    """(the checkpoint to continue from or read, whether it was recovered).

    The current checkpoint; where checkpoint.json is lost, the newest complete one
    (recovered); None where no save ever finished.
    """
    limit = tensors_limit(cfg, vocab_size)
    if has_checkpoint(run):
        return read_checkpoint(run, limit), False
    ckpt = recover(run, limit)
    return ckpt, ckpt is not None


def load_weights(model, weights: dict[str, torch.Tensor], run: Path) -> None:
    """Copy ``weights`` into ``model``; a mismatch means the run's files disagree."""
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise RnnlabError(
            f"the weights in {run} do not fit the model its config.json and "
            f"vocab.json describe ({detail}); the run directory is damaged or mixed "
            f"from two runs: restore it or train again"
        ) from None


def check_config_matches(run: Path, cfg: TrainConfig, ckpt: Checkpoint) -> None:
    """config.json must agree with the config the checkpoint was trained with."""
    if not ckpt.config:
        return
    trained = TrainConfig.from_dict(ckpt.config, f"the checkpoint in {run}")
    conflict = first_conflict(trained, cfg.options())
    if conflict:
        raise RnnlabError(
            f"{Path(run) / CONFIG} says {conflict[0]} but the checkpoint was trained with "
            f"{conflict[1]}; config.json was edited or damaged: restore it as it was"
        )


def best(run: Path, cfg: TrainConfig, vocab_size: int) -> Checkpoint | None:
    """The best checkpoint of ``run`` (the lowest validation loss); None where there is none.

    As for the latest, a lost best.json is recovered from the newest complete folder. A
    damaged one is an RnnlabError that says the latest checkpoint may still serve.
    """
    limit = tensors_limit(cfg, vocab_size)
    try:
        if has_checkpoint(run, BEST):
            return read_checkpoint(run, limit, BEST)
        return recover(run, limit, BEST)
    except RnnlabError as e:
        raise RnnlabError(
            f"the best checkpoint cannot be used: {e}; or give --checkpoint latest to use "
            f"the run's latest checkpoint"
        ) from None


def load_run(run: Path, device="cpu", which: str = "latest"):
    """(config, vocab, model on ``device`` in eval mode, checkpoint) of a trained run.

    ``which``: "latest", or "best" for the best checkpoint (the latest where the run has
    none yet: rnnlm 0.1's runs, runs stopped before an epoch ended). Where the pointer is
    missing, the newest complete checkpoint is used (and the pointer left as it is:
    reading a run never writes to it).
    """
    run = Path(run)
    if not run.is_dir():
        raise RnnlabError(f"no run directory {run}; give the --out folder of an rnnlab train run")
    if which not in SLOTS:
        raise RnnlabError(f"unknown checkpoint {which!r}; choose one of {', '.join(SLOTS)}")
    cfg = rundir.read_config(run)
    vocab = rundir.read_vocab(run)
    check_fits(cfg.model, len(vocab), 1, 1)  # a hostile config.json must not exhaust memory
    ckpt = best(run, cfg, len(vocab)) if which == "best" else None
    if ckpt is None:
        ckpt, _ = latest(run, cfg, len(vocab))
    if ckpt is None:
        raise no_checkpoint(run)
    check_config_matches(run, cfg, ckpt)
    model = build_model(cfg.model, len(vocab))
    load_weights(model, ckpt.weights, run)
    model.to(device)
    model.eval()
    return cfg, vocab, model, ckpt
