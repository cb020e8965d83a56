"""``rnnlab eval``: which text a trained run is scored on, and its score there.

    rnnlab eval runs/tm                          # the run's own validation split
    rnnlab eval runs/ptb --split test            # a built-in corpus' held-out file
    rnnlab eval runs/tm other.txt --block-size 64   # another text, nanoGPT's protocol

The text is the run's validation split (the same cut as in training, refused if the text
changed since), a held-out split of a built-in corpus, or any text read with the run's
vocabulary; never the run's own training text. Scored in rnnlab's protocol (each of the
streams carries its state through its share of the text) or, with ``--block-size N``,
nanoGPT's (non-overlapping blocks of N tokens, each from a zero state).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from . import rundir
from .command_config import EvalConfig
from .corpus import is_builtin
from .data import has_split, held_out_ids, prepare
from .errors import RnnlabError
from .heap import keep_freed_memory
from .train import bits_per_token, perplexity, resolve_device, score_text
from .trained import load_run

UNKNOWN_WARNING = 0.5  # a warning when more than this fraction of the text is <unk>


def score_run(
    run_dir: Path, cfg: EvalConfig, accept_changed_source: bool = False
) -> dict[str, Any]:
    """The score of the run in ``run_dir`` on the text ``cfg`` names, as ``eval --json``
    prints it: ppl, bpt, tokens, loss (nats per token), source, checkpoint, epoch,
    batch_size (the streams scored at once) and block_size (0: the state carried). The
    process keeps freed memory from then on (rnnlab.heap)."""
    keep_freed_memory()
    device = resolve_device(cfg.device)
    run, vocab, model, ckpt = load_run(run_dir, device, cfg.checkpoint)
    if cfg.source is None and cfg.split is None:
        data = prepare(run.source, run.mode, run.max_tokens, run.val_frac, run.batch_size,
                       run.num_steps, vocab=vocab)  # fmt: skip
        rundir.check_source(run_dir, run, data.text_sha256, accept_changed_source)
        ids = data.val_ids
        what = f"the validation split of {run.source}"
    else:
        source = cfg.source if cfg.source is not None else run.source
        split = cfg.split or "train"
        if cfg.split and not has_split(source, cfg.split):
            raise RnnlabError(
                f"{source!r} has no {cfg.split!r} split (only built-in ptb has "
                f"valid/test files); leave out --split, or give a held-out file"
            )
        if is_builtin(source) and split == "train" and source == run.source:
            raise RnnlabError(
                f"{source} is the run's training text; leave out SOURCE for its "
                f"validation split, or give --split or a held-out file"
            )
        ids = held_out_ids(source, run.mode, vocab, split)
        what = f"{source}" + (f" ({cfg.split})" if cfg.split else "")
    unknown = float((ids == vocab.unk).float().mean()) if len(ids) else 0.0
    if unknown > UNKNOWN_WARNING:
        print(
            f"rnnlab: warning: {unknown:.0%} of the tokens of {what} are not in the run's "
            f"vocabulary (read as <unk>), so the figure says little about this text",
            file=sys.stderr,
        )
    streams = cfg.batch_size or run.eval_batch_size or run.batch_size
    loss, tokens, streams = score_text(model, ids, streams, run.num_steps, cfg.block_size, device)
    return {
        "ppl": perplexity(loss),
        "bpt": bits_per_token(loss),
        "tokens": tokens,
        "loss": loss,
        "source": what,
        "checkpoint": ckpt.which,  # best, or latest (asked for, or where there is no best)
        "epoch": ckpt.epoch,  # epochs trained when it was saved
        "batch_size": int(streams),
        "block_size": cfg.block_size,
    }
