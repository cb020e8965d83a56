"""Fit a run directory: build or resume a model, then train it epoch by epoch.

    rnnlab train --out runs/tm        # what the command line calls: fit(cfg, "runs/tm")

Each epoch: train.run_epoch over that epoch's batches (rebuilt from (seed, epoch)),
evaluate on the validation split, append a metrics record, checkpoint, rewrite
metrics.jsonl and perplexity.png, print one log line (and a greedy sample every
``sample_every`` epochs, as d2l's train_ch8 does every 10).

Resuming is exact: the checkpoint holds the weights, the optimizer state, the
carried hidden state, the epoch's partial loss sums and torch's RNG (dropout),
and the batches of an epoch depend only on (seed, epoch), so a run stopped at any
batch and resumed computes what the uninterrupted run would have, bit for bit on
the CPU.

SIGINT/SIGTERM: the current batch finishes, a checkpoint is written, and fit
returns 130 or 143. A second signal acts at once (atomic writes keep the last
checkpoint). A non-finite loss raises train.NonFiniteError before anything is saved.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import torch

from . import checkpoint as ckpt_io
from . import rundir, train
from .batches import epoch_batches, eval_batches
from .config import RESUMABLE_CHANGES, TrainConfig, conflicts, flag
from .data import Dataset, prepare
from .errors import RnnlabError
from .generate import continue_text, default_prompt
from .models import build_model, usable_impl
from .train import EpochProgress, bits_per_token, evaluate, make_optimizer, perplexity, run_epoch

SAMPLE_LENGTH = 50  # tokens of each sample printed during training (d2l's predict_ch8 uses 50)


class StopSignals:
    """Turn the first SIGINT/SIGTERM into a request to stop after the current batch."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        self.signum = signum
        for s in self.SIGNALS:  # a second signal acts at once
            signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended."""
        return 128 + int(self.signum or 0)

    @property
    def name(self) -> str:
        """The signal's name, such as SIGINT ("" if none came)."""
        return signal.Signals(self.signum).name if self.signum else ""


def _to_device(state, device):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.to(device) for s in state)
    return state.to(device)


class Trainer:
    """One run directory being trained: the model, its optimizer and where training stands."""

    def __init__(
        self,
        cfg: TrainConfig,
        run: Path,
        data: Dataset,
        device: torch.device,
        out: TextIO,
        err: TextIO,
        quiet: bool,
    ):
        self.cfg, self.run, self.data, self.device = cfg, Path(run), data, device
        self.out, self.err, self.quiet = out, err, quiet
        torch.manual_seed(cfg.seed)
        self.impl, why = usable_impl(cfg.model.impl)
        if why:
            self.warn(
                f"{why}; training with --impl {self.impl}, the same model computed more slowly"
            )
        self.model = build_model(cfg.model, len(data.vocab)).to(device)
        self.optimizer = make_optimizer(cfg.optimizer, self.model.parameters(), cfg.lr)
        self.epoch = 0
        self.progress = EpochProgress()
        self.history: list[dict[str, Any]] = []

    def warn(self, message: str) -> None:
        print(f"rnnlab: warning: {message}", file=self.err)

    def log(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.out, flush=True)

    def restore(self, ckpt: ckpt_io.Checkpoint) -> None:
        ckpt_io.load_weights(self.model, ckpt.weights, self.run)
        try:
            self.optimizer.load_state_dict(ckpt.optimizer)
        except (ValueError, KeyError, RuntimeError) as e:
            raise RnnlabError(
                f"the optimizer state in {self.run} does not fit the model ({e}); "
                f"the run directory is damaged: restore it or train again"
            ) from None
        ckpt_io.restore_rng(ckpt.rng)
        self.epoch, self.history = ckpt.epoch, ckpt.history
        self.progress = ckpt.progress
        self.progress.state = _to_device(self.progress.state, self.device)

    def save(self, epoch: int, progress: EpochProgress) -> None:
        ckpt_io.save_checkpoint(
            self.run, self.model, self.optimizer, epoch, progress, self.history, self.cfg
        )

    def sample(self) -> str:
        """A greedy continuation of the run's prompt, as training prints it."""
        text = (
            continue_text(
                self.model,
                self.data.vocab,
                self.cfg.mode,
                self.cfg.prefix or "",
                SAMPLE_LENGTH,
                device=self.device,
            )
            if self.cfg.prefix
            else ""
        )
        self.model.train()
        return text

    def train_epoch(self, epoch: int, step: train.Step, stop: StopSignals, use_bar: bool) -> int:
        """Train epoch ``epoch`` from where ``self.progress`` stands; returns its batch count.

        Stops early, after a whole batch, when a signal has come.
        """
        cfg = self.cfg
        X, Y = epoch_batches(
            self.data.train_ids, cfg.batch_size, cfg.num_steps, cfg.sampling, cfg.seed, epoch
        )
        X, Y = X.to(self.device), Y.to(self.device)
        nb = len(X)
        bar = None
        if use_bar:
            from tqdm import tqdm

            bar = tqdm(
                total=nb,
                initial=self.progress.batch,
                file=self.err,
                leave=False,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                unit="batch",
            )

        def on_batch(p: EpochProgress) -> bool:
            if bar is not None:
                bar.update(p.batch - bar.n)
            if stop.signum is not None:
                return True
            if cfg.checkpoint_every and p.batch % cfg.checkpoint_every == 0 and p.batch < nb:
                self.save(epoch, p)
            return False

        try:
            self.progress = run_epoch(
                self.model,
                self.optimizer,
                X,
                Y,
                sampling=cfg.sampling,
                clip=cfg.clip,
                progress=self.progress,
                epoch=epoch,
                step=step,
                on_batch=on_batch,
            )
        finally:
            if bar is not None:
                bar.close()
        return nb

    def fit(self) -> int:
        cfg, device = self.cfg, self.device
        B, T = cfg.batch_size, cfg.num_steps
        VX, VY = (t.to(device) for t in eval_batches(self.data.val_ids, B, T))
        for p in self.model.parameters():
            # Start from zeroed gradients, as a resumed run's later steps do (0 + g and a fresh
            # g can differ in the sign of a zero): resumed and uninterrupted runs agree bitwise.
            p.grad = torch.zeros_like(p)
        use_bar = not self.quiet and hasattr(self.err, "isatty") and self.err.isatty()
        step = train.make_step(self.model, self.optimizer, cfg.clip)
        with StopSignals() as stop:
            for epoch in range(self.epoch, cfg.epochs):
                nb = self.train_epoch(epoch, step, stop, use_bar)
                if stop.signum is not None and self.progress.batch < nb:
                    self.save(epoch, self.progress)
                    return self.interrupted(stop, epoch, self.progress.batch, nb)
                self.end_epoch(epoch, VX, VY)
                if stop.signum is not None:
                    return self.interrupted(stop, epoch + 1, 0, nb)
        last = self.history[-1] if self.history else None
        if last is not None:
            self.log(
                f"perplexity {last['train_ppl']:.1f}, {last['tokens_per_s']:,.0f} tokens/s "
                f"on {device}"
            )
            sample = self.sample()
            if sample:
                self.log(sample)
        return 0

    def end_epoch(self, epoch: int, VX, VY) -> None:
        cfg, p = self.cfg, self.progress
        val_loss = evaluate(self.model, VX, VY)
        if not math.isfinite(val_loss):
            raise train.NonFiniteError(
                f"the validation loss is {val_loss} after epoch {epoch + 1}; the last checkpoint "
                f"is kept: lower --lr or --clip and train again"
            )
        record = {
            "epoch": epoch + 1,
            "train_loss": p.loss,
            "train_ppl": p.ppl,
            "val_loss": val_loss,
            "val_ppl": perplexity(val_loss),
            "val_bpt": bits_per_token(val_loss),
            "tokens": p.tokens,
            "tokens_per_s": p.tokens / max(p.seconds, 1e-9),
            "seconds": p.seconds,
        }
        self.history.append(record)
        self.epoch, self.progress = epoch + 1, EpochProgress()
        self.save(self.epoch, self.progress)
        rundir.write_metrics(self.run, self.history, self.plot_title())
        self.log(
            f"epoch {epoch + 1}/{cfg.epochs}  train ppl {record['train_ppl']:.2f}  "
            f"val ppl {record['val_ppl']:.2f}  val bpt {record['val_bpt']:.3f}  "
            f"{record['tokens_per_s']:,.0f} tokens/s  {record['seconds']:.1f} s"
        )
        if cfg.sample_every and (epoch + 1) % cfg.sample_every == 0 and epoch + 1 < cfg.epochs:
            sample = self.sample()
            if sample:
                self.log(f"  {sample}")

    def plot_title(self) -> str:
        cfg = self.cfg
        return f"{cfg.model.cell} ({self.impl}), H={cfg.model.hidden}, {Path(cfg.source).name}"

    def interrupted(self, stop: StopSignals, epoch: int, batch: int, nb: int) -> int:
        name = stop.name
        where = f"epoch {epoch + 1}, batch {batch}/{nb}" if batch else f"the end of epoch {epoch}"
        print(
            f"rnnlab: {name} received: stopped at {where}; checkpoint saved in {self.run}; "
            f"resume with: rnnlab train --out {self.run} --resume",
            file=self.err,
            flush=True,
        )
        return stop.exit_status


def fit(
    cfg: TrainConfig | None,
    run,
    *,
    resume: bool = False,
    given: dict[str, Any] | None = None,
    quiet: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Train the run directory ``run``; returns the exit status (0, or 130/143 if interrupted).

    ``cfg`` may be None with ``resume``: the run's config.json is used.
    ``given``: the options given explicitly (flat names, as TrainConfig.options());
    on --resume they must agree with the run's config.json, except those in
    config.RESUMABLE_CHANGES.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    run = Path(run)
    given = given or {}
    if run.exists() and not run.is_dir():
        raise RnnlabError(f"--out {run} is a file, not a folder; choose another --out")
    checkpoint = None
    if resume:
        if not rundir.has_run(run):
            raise RnnlabError(
                f"nothing to resume in {run} (no config.json there); start the run without --resume"
            )
        saved = rundir.read_config(run)
        diff = conflicts(saved, given)
        if diff:
            name, (now, then) = next(iter(diff.items()))
            raise RnnlabError(
                f"{flag(name)} {now!r} conflicts with the run in {run}, which was "
                f"started with {flag(name)} {then!r}; leave {flag(name)} out to "
                f"resume it, or start a new run with another --out"
            )
        changes = {k: v for k, v in given.items() if k in RESUMABLE_CHANGES or k == "impl"}
        cfg = TrainConfig.from_options({**saved.options(), **changes})
        saved_vocab = rundir.read_vocab(run)
        if ckpt_io.has_checkpoint(run):
            checkpoint = ckpt_io.read_checkpoint(run)
            ckpt_io.check_config_matches(run, saved, checkpoint)
    elif rundir.has_run(run) or (run / rundir.POINTER).exists():
        raise RnnlabError(
            f"{run} already holds a run; add --resume to continue it, or choose another --out"
        )
    if cfg is None:
        raise RnnlabError("no configuration given for a new run")
    device = train.resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = prepare(
        cfg.source, cfg.mode, cfg.max_tokens, cfg.val_frac, cfg.batch_size, cfg.num_steps
    )
    if cfg.prefix is None:  # the run's own text, not another corpus' phrase
        start = data.vocab.to_tokens(data.train_ids[:400].tolist())
        cfg = replace(cfg, prefix=default_prompt(start, cfg.mode))
    if resume:
        if data.vocab.idx_to_token != saved_vocab.idx_to_token:
            raise RnnlabError(
                f"{cfg.source} no longer gives the vocabulary the run in {run} was "
                f"trained with (the text changed); restore the text, or start a "
                f"new run with another --out"
            )
        if cfg != saved:
            rundir.write_config(run, cfg)
    else:
        rundir.create(run, cfg, data.vocab)
    trainer = Trainer(cfg, run, data, device, out, err, quiet)
    if checkpoint is not None:
        trainer.restore(checkpoint)
        if trainer.history:  # a crash may have come between the checkpoint and these files
            rundir.write_metrics(run, trainer.history, trainer.plot_title())
    elif resume:
        trainer.warn(f"{run} has no checkpoint yet; starting its training from the beginning")
    if trainer.epoch >= cfg.epochs:
        print(
            f"the run in {run} has already trained its {cfg.epochs} epoch(s); give --epochs "
            f"larger than {trainer.epoch} to train it longer",
            file=out,
        )
        return 0
    return trainer.fit()
