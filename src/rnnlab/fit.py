"""Train a run directory: open it, start it or resume it, then hand it to the trainer.

    rnnlab train --out runs/tm                 # fit(cfg, "runs/tm")
    rnnlab train --out runs/tm --resume        # fit(None, "runs/tm", resume=True, given=...)

A new run: the folder is checked (empty or new), locked, and gets its config.json,
vocab.json and source.json; a run that stops before its first checkpoint leaves nothing
behind. A resumed run: its config.json is read, the options given now are checked against
it (only rnnlab.config.RESUMABLE_CHANGES may differ), its latest checkpoint is verified
(recovered from the newest complete folder where the pointer was lost) and its text must
still be the one it was trained on. The device is checked before the text is read:
``--impl triton`` and ``--cuda-graph`` (both experimental) need CUDA.

In a data-parallel run (rnnlab.world), rank 0 alone does all of this and then tells the
others what to train; they set up the same model and resume from the same checkpoint.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import torch

from . import board, rundir, train
from . import checkpoint as ckpt_io
from .config import TrainConfig, first_conflict, resumed
from .data import Dataset, prepare
from .errors import RnnlabError
from .generate import default_prompt
from .heap import keep_freed_memory
from .models import check_device, check_fits
from .options import machine_cpus
from .trained import check_config_matches, latest
from .trainer import Log, Trainer
from .world import Followers, World


def fit(
    cfg: TrainConfig | None,
    run,
    *,
    resume: bool = False,
    given: dict[str, Any] | None = None,
    quiet: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
    accept_changed_source: bool = False,
    world: World | None = None,
) -> int:
    """Train the run directory ``run``; returns the exit status (0, or 130/143 if interrupted).

    ``cfg`` may be None with ``resume``: the run's config.json is used.
    ``given``: the options given explicitly (flat names, as TrainConfig.options());
    on --resume they must agree with the run's config.json, except those in
    config.RESUMABLE_CHANGES. ``accept_changed_source``: resume even if the text of
    the source changed since the run was trained on it.

    The run directory is locked for the whole call (a second train of it is refused),
    and a new run that stops before its first checkpoint leaves no folder behind.

    ``world``: the processes that train the run (rnnlab.world; default: this one alone).
    The process keeps freed memory from then on (rnnlab.heap).
    """
    out, err, run = out or sys.stdout, err or sys.stderr, Path(run)
    world = world or World()
    keep_freed_memory()  # each step's buffers reused, from a notebook as from the command line
    log = Log(out, err, quiet, silent=not world.writes)

    def lead(followers: Followers) -> int:
        if resume:
            return _resume(run, given or {}, log, accept_changed_source, followers)
        if cfg is None:
            raise RnnlabError("no configuration given for a new run")
        return _start(cfg, run, log, followers)

    def follow(cfg: TrainConfig, checkpoint, text_sha: str) -> int:
        return _follow(cfg, run, checkpoint, text_sha, log, world)

    return world.lead_or_follow(lead, follow)


def _start(cfg: TrainConfig, run: Path, log: Log, followers: Followers) -> int:
    """A new run in the folder ``run`` (made if missing; refused if it holds anything)."""
    if rundir.has_run(run) or (run / rundir.POINTER).exists():
        raise RnnlabError(
            f"{run} already holds a run; add --resume to continue it, or choose another --out"
        )
    rundir.check_new_out(run)
    made = not run.exists()
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise rundir.write_error(run, e) from None
    try:
        with rundir.RunLock(run):
            device = _device(cfg, followers.world)
            data = _prepare(cfg)
            if cfg.prefix is None:  # the run's own text, not another corpus' phrase
                start = data.vocab.to_tokens(data.train_ids[:400].tolist())
                cfg = replace(cfg, prefix=default_prompt(start, cfg.mode))
            rundir.create(run, cfg, data.vocab)
            rundir.write_source(run, cfg, data.text_sha256)
            trainer = Trainer(cfg, run, data, device, log, followers.world)
            followers.go(cfg, None, data.text_sha256)
            return trainer.fit()
    finally:
        if not any(
            ckpt_io.has_checkpoint(run, slot) or ckpt_io.generations(run, slot)
            for slot in (ckpt_io.LATEST, ckpt_io.BEST)
        ):
            board.remove(run)
            rundir.remove_unstarted(run, made)


def _resume(
    run: Path, given: dict[str, Any], log: Log, accept_changed: bool, followers: Followers
) -> int:
    """Continue the run in ``run`` from its checkpoint (locked while it trains)."""
    if not rundir.has_run(run):
        raise RnnlabError(
            f"nothing to resume in {run} (no config.json there); start the run without --resume"
        )
    with rundir.RunLock(run):
        saved = rundir.read_config(run)
        conflict = first_conflict(saved, given)
        if conflict:
            raise RnnlabError(
                f"{conflict[0]} conflicts with the run in {run}, which was started with "
                f"{conflict[1]}; leave it out to resume the run, or start a new run with "
                f"another --out"
            )
        cfg = resumed(saved, given)
        saved_vocab = rundir.read_vocab(run)
        # None: no save ever finished, so the run starts over
        checkpoint, recovered = latest(run, saved, len(saved_vocab))
        if checkpoint is not None:
            check_config_matches(run, saved, checkpoint)
        if "cuda_graph" not in given and train.resolve_device(cfg.device).type != "cuda":
            # --cuda-graph only sets the speed on the GPU the run was trained on: off elsewhere.
            cfg = replace(cfg, cuda_graph=False)
        device = _device(cfg, followers.world)
        data = _prepare(cfg)
        same_text = rundir.check_source(run, cfg, data.text_sha256, accept_changed)
        if data.vocab.idx_to_token != saved_vocab.idx_to_token:
            raise RnnlabError(
                f"{cfg.source} no longer gives the vocabulary the run in {run} was "
                f"trained with (the text changed); restore the text, or start a "
                f"new run with another --out"
            )
        if not same_text or not (run / rundir.SOURCE).exists():
            rundir.write_source(run, cfg, data.text_sha256)
        trainer = Trainer(cfg, run, data, device, log, followers.world)
        if checkpoint is not None:
            trainer.restore(checkpoint)
            if recovered:
                ckpt_io.adopt(run, checkpoint)
                log.warn(
                    f"{run} had lost checkpoint.json; resuming from its newest complete "
                    f"checkpoint ({checkpoint.epoch} epoch(s) and {checkpoint.progress.batch} "
                    f"batch(es) in)"
                )
            if trainer.history:  # a crash may have come between the checkpoint and these files
                rundir.write_metrics(run, trainer.history, trainer.plot_title())
        else:
            log.warn(f"{run} has no checkpoint yet; starting its training from the beginning")
        done = trainer.nothing_left()
        if done:
            print(done, file=log.out)
            return 0
        if cfg != saved:  # only what will really happen goes into config.json
            rundir.write_config(run, cfg)
        followers.go(cfg, checkpoint, data.text_sha256)
        return trainer.fit()


def _follow(cfg: TrainConfig, run: Path, checkpoint, text_sha: str, log: Log, world: World) -> int:
    """A process other than rank 0: set up the run rank 0 described and train its streams."""
    problem = None
    try:
        device = _device(cfg, world)
        data = _prepare(cfg)
        if data.text_sha256 != text_sha:
            raise RnnlabError(
                f"{cfg.source} here is not the text rank 0 reads (its sha256 differs); give "
                f"every machine the same copy"
            )
        trainer = Trainer(cfg, run, data, device, log, world)
        if checkpoint is not None:
            trainer.restore(checkpoint)
    except RnnlabError as e:
        problem = " ".join(str(e).split())
    world.ready(problem)
    return trainer.fit()


def _device(cfg: TrainConfig, world: World) -> torch.device:
    """The device ``cfg`` trains on, once its implementation and --cuda-graph can run there.

    Checks too that the batch can be shared out among ``world``'s processes.
    """
    world.streams(cfg.batch_size)
    device = train.resolve_device(cfg.device)
    check_device(cfg.model, device.type)
    if cfg.cuda_graph:  # refused before anything is read (its step checks the model too)
        from .experimental.cuda_graph import check_cuda_graph

        check_cuda_graph(device, cfg.schedule, world.size)
    return world.device(device)


def _prepare(cfg: TrainConfig) -> Dataset:
    """The dataset of ``cfg``, with torch's threads set and the model's memory checked."""
    if cfg.threads > machine_cpus():
        raise RnnlabError(
            f"--threads {cfg.threads} is more than this machine's {machine_cpus()} CPUs; give "
            f"--threads {machine_cpus()} or fewer (it may change on --resume)"
        )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = prepare(
        cfg.source, cfg.mode, cfg.max_tokens, cfg.val_frac, cfg.batch_size, cfg.num_steps
    )
    check_fits(cfg.model, len(data.vocab), cfg.batch_size, cfg.num_steps, cfg.optimizer)
    return data
