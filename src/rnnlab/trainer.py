"""The training loop of one process: a run directory's model trained epoch by epoch.

    trainer = Trainer(cfg, run, data, device, Log(out, err, quiet), world)
    trainer.restore(checkpoint)        # on --resume
    status = trainer.fit()             # what rnnlab.fit calls, after opening the run

Each epoch: train.run_epoch over that epoch's batches (rebuilt from (seed, epoch)),
each at the rate its schedule gives (rnnlab.schedule), evaluate on the validation
split (``eval_batch_size`` streams), append a metrics record, checkpoint (first as the
best checkpoint, if its validation loss is the lowest so far), rewrite metrics.jsonl
and perplexity.png, print one log line (and a greedy sample every ``sample_every``
epochs, as d2l's train_ch8 does every 10). ``patience`` epochs without a lower
validation loss end the run early.

Resuming is exact: the checkpoint holds the weights, the optimizer state, the
carried hidden state, the epoch's partial loss sums, torch's RNG (dropout) and the
schedule's state (batches trained, seconds trained, the lowest validation loss, the
rate), and the batches of an epoch depend only on (seed, epoch), so a run stopped at
any batch and resumed computes what the uninterrupted run would have, bit for bit on
the CPU. (A cosine schedule over a --time-limit follows the clock: it is resumed
where it stood, but no rerun repeats it.)

The loop does not know how many processes train the run: it asks its ``world``
(rnnlab.world) for its streams, its training step, the mean loss, whether to stop and how
long the run has trained, and hands it each write to the run directory; the one-process
world answers at once.

SIGINT/SIGTERM: the current batch finishes, a checkpoint is written, and fit
returns 130 or 143. A second signal acts at once (atomic writes keep the last
checkpoint). ``time_limit``: once that many minutes of training have passed (counted
across resumes), the same, but fit returns 0, after validating the weights it stopped
with (kept as the best when they are). A non-finite loss raises train.NonFiniteError
before anything is saved.
"""

from __future__ import annotations

import contextlib
import math
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO, cast

import torch

from . import board, files, rundir, train
from . import checkpoint as ckpt_io
from .average import WeightAverage
from .batches import epoch_batches, eval_batches, num_batches
from .config import TrainConfig
from .data import Dataset
from .errors import RnnlabError
from .generate import continue_text
from .models import build_model, usable_impl
from .models.cells import map_state
from .restore import clock_of_format_1, optimizer_state_problem, position_problem, state_fits
from .run_state import restore_rng, rng_of_rank, rng_of_ranks, rng_state
from .schedule import (
    Schedule,
    ScheduleState,
    after_epoch,
    at_stop,
    improves,
    patience_epochs,
    warmup_for,
)
from .stopping import Clock, StopSignals
from .threads import governor_for
from .train import EpochProgress, bits_per_token, loss_sum, make_optimizer, perplexity, run_epoch
from .trained import load_weights
from .world import World

SAMPLE_LENGTH = 50  # tokens of each sample printed during training (d2l's predict_ch8 uses 50)


class Log:
    """What a run prints: log lines on ``out`` (none with ``quiet``, but for why it
    stopped), warnings and the stop report on ``err``; nothing at all when ``silent`` (the
    processes of a data-parallel run but rank 0)."""

    def __init__(self, out: TextIO, err: TextIO, quiet: bool, silent: bool = False):
        self.out, self.err = out, err
        self.quiet, self.silent = quiet or silent, silent

    def line(self, message: str, always: bool = False) -> None:
        """Print a line of the log; if the reader went away (``| head``), go on silently."""
        if self.quiet and not (always and not self.silent):
            return
        try:
            print(message, file=self.out, flush=True)
        except BrokenPipeError:
            self.quiet = True  # training goes on: a closed pipe is no reason to lose it
            files.silence(self.out)

    def warn(self, message: str) -> None:
        if not self.silent:
            print(f"rnnlab: warning: {message}", file=self.err)

    def stopped(self, message: str) -> None:
        if not self.silent:
            print(f"rnnlab: {message}", file=self.err, flush=True)

    @property
    def shows_bar(self) -> bool:
        """Whether a progress bar goes to ``err``: a terminal, and not quiet."""
        return not self.quiet and hasattr(self.err, "isatty") and self.err.isatty()


class Trainer:
    """One run directory being trained: the model, its optimizer and where training stands."""

    def __init__(
        self,
        cfg: TrainConfig,
        run: Path,
        data: Dataset,
        device: torch.device,
        log: Log,
        world: World | None = None,
    ):
        self.cfg, self.run, self.data, self.device = cfg, Path(run), data, device
        self.world = world or World()
        self.log = log
        self.streams = self.world.streams(cfg.batch_size)  # this process' share of a batch
        # Every process seeds alike: the same initial weights, and the same dropout draws.
        torch.manual_seed(cfg.seed)
        self.impl, why = usable_impl(cfg.model.impl)
        if why:
            self.log.warn(
                f"{why}; training with --impl {self.impl}, the same model computed more slowly"
            )
        self.model = build_model(cfg.model, len(data.vocab)).to(device)
        self.world.prepare_model(self.model, cfg.batch_size)
        # --ema: the averaged weights are the model that is validated and saved
        self.average = WeightAverage(self.model, cfg.ema) if cfg.ema else None
        self.optimizer = make_optimizer(
            cfg.optimizer, self.model.parameters(), cfg.lr, weight_decay=cfg.weight_decay
        )
        self.update: train.Step | None = None  # made once, in fit: a CUDA graph captures once
        self.epoch = 0
        self.progress = EpochProgress()
        self.history: list[dict[str, Any]] = []
        planned = self.batches_before(cfg.epochs) if cfg.schedule == "cosine" else 0
        self.schedule = Schedule(
            cfg.schedule,
            cfg.lr,
            warmup_for(cfg.warmup, planned),
            cfg.min_lr_frac,
            planned,
            None if cfg.time_limit is None else cfg.time_limit * 60,
        )
        self.clock = ScheduleState(lr=cfg.lr)
        self.seconds = Clock(self.world)
        self.signal: int | None = None  # the stop signal, as the processes agreed on it
        # Without --threads: torch's threads follow the cores other programs leave free.
        self.threads = governor_for(cfg.threads)
        # --tensorboard: the curves (checked here, before any training)
        self.board = board.Board(self.run, cfg.tensorboard and self.world.writes)

    # ---- the run's size and limits ----

    def batches_in(self, epoch: int) -> int:
        """The batches epoch ``epoch`` (0-based) of the run has."""
        cfg = self.cfg
        n = len(self.data.train_ids)
        return num_batches(n, cfg.batch_size, cfg.num_steps, cfg.sampling, cfg.seed, epoch)

    def batches_before(self, epoch: int) -> int:
        """The batches of the run's epochs before ``epoch`` (0-based)."""
        return sum(self.batches_in(e) for e in range(epoch))

    def time_is_up(self, seconds: float | None = None) -> bool:
        """Whether the run has trained its time limit: up to now, or ``seconds`` of it."""
        if self.cfg.time_limit is None:
            return False
        return (self.seconds.now() if seconds is None else seconds) >= self.cfg.time_limit * 60

    def patience_ran_out(self) -> bool:
        """Whether ``patience`` epochs (schedule.patience_epochs: at least PATIENCE_BATCHES
        batches) have passed since the lowest validation loss."""
        if not self.cfg.patience or self.clock.best_loss is None:
            return False
        return self.epoch - self.clock.best_epoch_ended >= self.patience_wait()

    def patience_wait(self) -> int:
        """The epochs --patience waits for a lower validation loss (schedule.patience_epochs)."""
        return patience_epochs(self.cfg.patience, self.batches_in(max(0, self.epoch - 1)))

    def nothing_left(self) -> str | None:
        """Why a resumed run has nothing left to train under its limits (None: it has)."""
        cfg = self.cfg
        if self.epoch >= cfg.epochs:
            return (
                f"the run in {self.run} has already trained {self.epoch} epoch(s); give "
                f"--epochs larger than {self.epoch} to train it longer"
            )
        if self.time_is_up():
            return (
                f"the run in {self.run} has already trained for {self.clock.seconds / 60:.3g} "
                f"minutes, its --time-limit of {cfg.time_limit:g}; give a larger --time-limit "
                f"to train it longer"
            )
        if self.patience_ran_out():
            return (
                f"the run in {self.run} stopped early after epoch {self.epoch}: no lower "
                f"validation loss since epoch {self.clock.best_epoch_ended} (--patience "
                f"{cfg.patience}: {self.patience_wait()} epoch(s) here); give --patience larger "
                f"than {self.patience_wait()} to train it longer"
            )
        return None

    # ---- one batch ----

    def step(self, X, Y, state):
        """One update at the rate the schedule gives; counts the batch. X, Y (B', T): this
        process' streams; returns (the global batch's mean loss, grad norm, new state)."""
        if self.schedule.per_batch:
            self.set_lr(self.schedule.rate(replace(self.clock, seconds=self.seconds.now())))
        loss, norm, state = cast(train.Step, self.update)(X, Y, state)
        self.clock = replace(self.clock, batches=self.clock.batches + 1)
        if self.average is not None:
            self.average.update(self.clock.batches)
        loss = self.world.mean(loss)
        self.board.batch(self.clock.batches, loss, norm, self.optimizer.param_groups[0]["lr"])
        return loss, norm, state

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def agree_on_signal(self, stop: StopSignals) -> None:
        """Set ``self.signal`` to the stop signal received so far (None: none), and the
        seconds trained, as every process agrees on them (World.agree). The loop reads
        ``self.signal``, never the live ``stop.signum``."""
        self.signal, self.seconds.agreed = self.world.agree(stop.signum, self.seconds.own())

    def averaged(self) -> contextlib.AbstractContextManager:
        """Within it, the model holds the weights that are validated and saved: with --ema
        their average, else the weights being trained."""
        return self.average.applied() if self.average is not None else contextlib.nullcontext()

    # ---- checkpoints ----

    def restore(self, ckpt: ckpt_io.Checkpoint) -> None:
        """Put the model, optimizer, RNG and epoch position back as ``ckpt`` holds them."""
        damaged = f"the run directory {self.run} is damaged: restore it or train again"
        problem = position_problem(ckpt, self.batches_in, self.cfg.batch_size * self.cfg.num_steps)
        if problem:
            raise RnnlabError(f"the checkpoint {problem}; {damaged}")
        load_weights(self.model, ckpt.weights, self.run)
        if self.average is not None:  # ckpt.weights are the average; then the trained ones
            self.average.restart_from(self.model)
            load_weights(self.model, ckpt.training_weights or ckpt.weights, self.run)
        problem = optimizer_state_problem(ckpt.optimizer, self.optimizer)
        if problem:
            raise RnnlabError(f"the optimizer state in the checkpoint {problem}; {damaged}")
        try:
            self.optimizer.load_state_dict(ckpt.optimizer)
        except (ValueError, KeyError, RuntimeError, TypeError, IndexError, AttributeError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RnnlabError(
                f"the optimizer state does not fit the model ({reason}); {damaged}"
            ) from None
        try:
            restore_rng(rng_of_rank(ckpt.rng, self.world.rank, self.world.size))
        except (RuntimeError, TypeError, ValueError):
            raise RnnlabError(
                f"the random-number state in the checkpoint is invalid; {damaged}"
            ) from None
        expected = cast(Any, self.model).begin_state(self.cfg.batch_size, "cpu")
        state = ckpt.progress.state
        if state is not None and not state_fits(state, expected):
            raise RnnlabError(f"the carried hidden state does not fit the model; {damaged}")
        self.epoch, self.history = ckpt.epoch, ckpt.history
        # The checkpoint holds all B streams' state; this process carries its own.
        self.progress = replace(ckpt.progress, state=_streams_of(state, self.streams, self.device))
        self.clock = ckpt.schedule or clock_of_format_1(ckpt, self.cfg.lr, self.batches_before)
        self.seconds = Clock(self.world, self.clock.seconds)
        if self.cfg.schedule == "plateau":
            self.set_lr(self.clock.lr)

    def save(self, epoch: int, progress: EpochProgress, best: bool = False) -> None:
        """Checkpoint where training stands (with every process' part of it)."""
        self.clock = replace(self.clock, seconds=self.seconds.now())
        state, ranks = self.world.checkpoint_parts(
            _streams_of(progress.state, slice(None), "cpu"), rng_state()
        )
        progress = replace(progress, state=state)

        def write() -> None:
            training = None  # with --ema: the weights being trained, beside their average
            if self.average is not None:
                training = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            with self.averaged():  # the weights validated and saved: with --ema, the average
                pieces = {  # rnnlab.run_state.PIECES, by name
                    "epoch": epoch,
                    "progress": progress,
                    "optimizer": self.optimizer.state_dict(),
                    "schedule": self.clock,
                    "history": self.history,
                    "config": self.cfg.to_dict(),
                    "weights": dict(self.model.state_dict()),
                    "rng": rng_of_ranks(rng_state(), ranks),
                    "training_weights": training,
                }
                ckpt_io.save_checkpoint(self.run, pieces, best=best)

        self.world.write(write)

    # ---- the loop ----

    def fit(self) -> int:
        """Train to the end of the run (or until stopped); returns the exit status.

        A process of a data-parallel run that stops answering ends every other one's
        training with an error naming it (World.lost); the last checkpoint is left as it was.
        """
        # The signal handling stays for the roll call after a lost process: torchrun sends
        # the survivors SIGTERM then, and they should stop with the message, not by the signal.
        with StopSignals() as stop, self.threads or contextlib.nullcontext():
            try:
                return self._fit(stop)
            except (RuntimeError, RnnlabError) as e:
                lost = self.world.lost(
                    e,
                    f"the last checkpoint in {self.run} is intact: resume with the same "
                    f"command and --resume",
                )
                if lost is None:
                    raise
            finally:
                self.board.close()
                self.update = None
                self.world.after_training()
        raise lost  # here, not in the except clause: its traceback held the training step

    def _fit(self, stop: StopSignals) -> int:
        cfg, device = self.cfg, self.device
        VX, VY = eval_batches(
            self.data.val_ids, cfg.eval_batch_size or cfg.batch_size, cfg.num_steps
        )
        # Each process scores its share of the validation streams.
        own = self.world.share_of(VX.shape[1])
        VX, VY = VX[:, own].to(device), VY[:, own].to(device)
        for p in self.model.parameters():
            # Start from zeroed gradients, as a resumed run's later steps do (0 + g and a fresh
            # g can differ in the sign of a zero): resumed and uninterrupted runs agree bitwise.
            p.grad = torch.zeros_like(p)
        self.update = self.world.training_step(self.model, self.optimizer, cfg, device)
        self.seconds.start(self.clock.seconds)
        for epoch in range(self.epoch, cfg.epochs):
            nb = self.train_epoch(epoch, stop)
            if self.progress.batch < nb:  # stopped by a signal or by the time limit
                if self.signal is not None:
                    self.save(epoch, self.progress)
                    return self.interrupted(epoch, self.progress.batch, nb)
                self.save(epoch, self.progress, best=self.validate_at_stop(epoch, VX, VY))
                return self.out_of_time(epoch, self.progress.batch, nb)
            self.end_epoch(epoch, VX, VY)
            self.agree_on_signal(stop)  # one that came while it validated and saved
            if self.signal is not None:
                return self.interrupted(epoch + 1, 0, nb)
            # The time the checkpoint records, so that a resume sees the same as this test.
            if self.epoch < cfg.epochs and self.time_is_up(self.clock.seconds):
                return self.out_of_time(epoch + 1, 0, nb)
            if self.epoch < cfg.epochs and self.patience_ran_out():
                self.log.line(
                    f"no lower validation loss for {self.patience_wait()} epoch(s): stopped early "
                    f"after epoch {self.epoch}/{cfg.epochs}; the best, epoch "
                    f"{self.clock.best_epoch_ended} (val ppl "
                    f"{perplexity(self.clock.best_loss or 0.0):.2f}), is in "
                    f"{self.run / rundir.BEST_FOLDER}",
                    always=True,
                )
                break
        last = self.history[-1] if self.history else None
        if last is not None and not self.log.quiet:
            self.log.line(
                f"perplexity {last['train_ppl']:.1f}, {last['tokens_per_s']:,.0f} tokens/s "
                f"on {device}"
            )
            sample = self.sample()
            if sample:
                self.log.line(sample)
        return 0

    def train_epoch(self, epoch: int, stop: StopSignals) -> int:
        """Train epoch ``epoch`` from where ``self.progress`` stands; returns its batch count.

        Stops early, after a whole batch, when a signal has come or the time is up.
        """
        cfg = self.cfg
        X, Y = epoch_batches(
            self.data.train_ids, cfg.batch_size, cfg.num_steps, cfg.sampling, cfg.seed, epoch
        )
        # (nb, B, T) -> this process' streams (nb, B', T)
        X, Y = X[:, self.streams].to(self.device), Y[:, self.streams].to(self.device)
        nb = len(X)
        bar = None
        if self.log.shows_bar:
            from tqdm import tqdm

            bar = tqdm(
                total=nb,
                initial=self.progress.batch,
                file=self.log.err,
                leave=False,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                unit="batch",
            )

        def on_batch(p: EpochProgress) -> bool:
            if self.threads is not None:
                self.threads.update()
            self.board.settle()
            if bar is not None:
                bar.update(p.batch - bar.n)
            self.agree_on_signal(stop)
            if self.signal is not None or self.time_is_up():
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
                step=self.step,
                on_batch=on_batch,
                batch_tokens=cfg.batch_size * cfg.num_steps,
            )
        finally:
            if bar is not None:
                bar.close()
        return nb

    # ---- validation, samples and the end of an epoch ----

    def validation_loss(self, VX, VY) -> float:
        """Mean loss per token on the validation batches VX, VY (nb, B', T'): this process'
        streams of them, the sums added over the processes."""
        with self.averaged():
            scored = loss_sum(self.model, VX, VY)
        total, count = self.world.sum([scored, float(VY.numel())])
        return total / count

    def validate_at_stop(self, epoch: int, VX, VY) -> bool:
        """Validate the weights a time limit stopped in epoch ``epoch`` (0-based); whether
        they are the best so far. A cosine schedule over the limit ends here at its lowest
        rate, so these are often the best weights of the run."""
        val_loss = self.validation_loss(VX, VY)
        if not math.isfinite(val_loss):
            return False  # the latest checkpoint keeps them; the best stays what it was
        best = improves(self.clock, val_loss)
        self.clock = at_stop(self.clock, epoch, self.progress.batch, val_loss)
        self.log.line(
            f"validated where it stopped: val ppl {perplexity(val_loss):.2f}"
            + ("  (the lowest so far: kept as the best)" if best else "")
        )
        return best

    def end_epoch(self, epoch: int, VX, VY) -> None:
        cfg, p = self.cfg, self.progress
        lr = self.optimizer.param_groups[0]["lr"]  # the rate of the epoch's last batch
        val_loss = self.validation_loss(VX, VY)
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
            "lr": lr,
        }
        best = improves(self.clock, val_loss)
        self.clock = after_epoch(cfg.schedule, self.clock, epoch + 1, val_loss)
        if self.clock.lr != lr and cfg.schedule == "plateau":
            self.set_lr(self.clock.lr)
            if hasattr(self.update, "recapture"):  # a CUDA graph froze the old rate
                cast(Any, self.update).recapture()
        self.history.append(record)
        # Before the checkpoint: a crash between the two leaves values that a resume from the
        # checkpoint before purges, not a checkpoint whose epoch the curves lack.
        self.board.epoch(self.clock.batches, record)
        self.epoch, self.progress = epoch + 1, EpochProgress()
        self.save(self.epoch, self.progress, best=best)
        self.world.write(lambda: rundir.write_metrics(self.run, self.history, self.plot_title()))
        self.log.line(
            f"epoch {epoch + 1}/{cfg.epochs}  train ppl {record['train_ppl']:.2f}  "
            f"val ppl {record['val_ppl']:.2f}  val bpt {record['val_bpt']:.3f}  "
            f"{record['tokens_per_s']:,.0f} tokens/s  {record['seconds']:.1f} s"
            + (f"  lr {lr:.4g}" if cfg.schedule != "constant" else "")
        )
        if cfg.sample_every and (epoch + 1) % cfg.sample_every == 0 and epoch + 1 < cfg.epochs:
            if not self.log.quiet:
                sample = self.sample()
                if sample:
                    self.log.line(f"  {sample}")

    def sample(self) -> str:
        """A greedy continuation of the run's prompt, as training prints it."""
        if not self.cfg.prefix:
            return ""
        with self.averaged():
            text = continue_text(
                self.model,
                self.data.vocab,
                self.cfg.mode,
                self.cfg.prefix,
                SAMPLE_LENGTH,
                device=self.device,
            )
        self.model.train()
        return text

    def plot_title(self) -> str:
        cfg = self.cfg
        return f"{cfg.model.cell} ({self.impl}), H={cfg.model.hidden}, {Path(cfg.source).name}"

    # ---- how it stopped ----

    def interrupted(self, epoch: int, batch: int, nb: int) -> int:
        """Report a run stopped by ``self.signal`` (its checkpoint saved); 128 + its number,
        as a shell reports a process the signal ended."""
        signum = int(self.signal or 0)
        self.log.stopped(
            f"{signal.Signals(signum).name} received: stopped at {_where(epoch, batch, nb)}; "
            f"checkpoint saved in {self.run}; resume with: {self.world.launcher}rnnlab train "
            f"--out {self.run} --resume"
        )
        return 128 + signum

    def out_of_time(self, epoch: int, batch: int, nb: int) -> int:
        """Report a run stopped by its time limit (its checkpoint saved); exit status 0."""
        self.log.line(
            f"time limit of {self.cfg.time_limit:g} minutes reached ({self.clock.seconds / 60:.3g} "
            f"trained): stopped at {_where(epoch, batch, nb)}; "
            f"checkpoint saved in {self.run}; to train longer: {self.world.launcher}rnnlab train "
            f"--out {self.run} "
            f"--resume --time-limit MINUTES (more than {self.cfg.time_limit:g})",
            always=True,
        )
        return 0


def _where(epoch: int, batch: int, nb: int) -> str:
    """Where a run stopped: in epoch ``epoch`` (0-based) after ``batch`` of ``nb`` batches,
    or, with batch 0, at the end of epoch ``epoch`` (1-based)."""
    return f"epoch {epoch + 1}, batch {batch}/{nb}" if batch else f"the end of epoch {epoch}"


def _streams_of(state, streams: slice, device):
    """Streams ``streams`` of a carried state, on ``device``: (L, B', H) per part."""
    return map_state(lambda part: part[:, streams].contiguous().to(device), state)
