"""Fit a run directory: build or resume a model, then train it epoch by epoch.

    rnnlab train --out runs/tm        # what the command line calls: fit(cfg, "runs/tm")

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

The device is checked before anything is read: ``--impl triton`` and ``--cuda-graph``
(both experimental) need CUDA. One training step is made per run
(``train.make_step``), so a CUDA-graphed step captures once.

Under torchrun (``world``, :mod:`rnnlab.distributed`), each process trains its share of
every batch's streams; rank 0 alone reads and writes the run directory, tells the others
what to train, and gathers what a checkpoint needs from them. Decisions to stop are
exchanged every checked batch, so every rank stops after the same batch.

SIGINT/SIGTERM: the current batch finishes, a checkpoint is written, and fit
returns 130 or 143. A second signal acts at once (atomic writes keep the last
checkpoint). ``time_limit``: once that many minutes of training have passed (counted
across resumes), the same, but fit returns 0. A non-finite loss raises
train.NonFiniteError before anything is saved.
"""

from __future__ import annotations

import contextlib
import gc
import math
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO, cast

import torch

from . import board, files, rundir, train
from . import checkpoint as ckpt_io
from .average import WeightAverage
from .batches import epoch_batches, eval_batches, num_batches
from .config import RESUMABLE_CHANGES, TrainConfig, conflicts, flag, machine_cpus
from .data import Dataset, prepare
from .distributed import (
    LostRank,
    World,
    is_lost_connection,
    lost_rank_error,
    split_range,
    stream_range,
)
from .errors import ReportedElsewhere, RnnlabError
from .generate import continue_text, default_prompt
from .models import build_model, check_device, check_fits, usable_impl
from .schedule import (
    Schedule,
    ScheduleState,
    after_epoch,
    at_stop,
    improves,
    patience_epochs,
    warmup_for,
)
from .threads import governor_for
from .train import (
    BatchLoss,
    EpochProgress,
    bits_per_token,
    loss_sum,
    make_optimizer,
    perplexity,
    run_epoch,
)

MAX_OPTIMIZER_SETTING = 1e9  # no rate, decay, momentum or epsilon of an optimizer comes near
SAMPLE_LENGTH = 50  # tokens of each sample printed during training (d2l's predict_ch8 uses 50)


class StopSignals:
    """Turn the first SIGINT/SIGTERM into a request to stop after the current batch."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        self.signum = signum
        # A second signal ends the process at once (the last checkpoint is whole, as every
        # file is written atomically); by the signal itself, so no Python code runs then.
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_DFL)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False


def _same_kind(saved: Any, fresh: Any) -> bool:
    """Whether a saved optimizer setting has the type (and, for numbers, a finite value) of
    the fresh optimizer's own setting."""
    if isinstance(fresh, bool) or fresh is None or isinstance(fresh, str):
        return type(saved) is type(fresh)
    if isinstance(fresh, (int, float)):
        return (
            isinstance(saved, (int, float))
            and not isinstance(saved, bool)
            and 0 <= saved <= MAX_OPTIMIZER_SETTING  # rates, decays, momenta, epsilons
        )
    if isinstance(fresh, (list, tuple)):  # Adam's betas: saved as a JSON list
        return (
            isinstance(saved, (list, tuple))
            and len(saved) == len(fresh)
            and all(_same_kind(a, b) for a, b in zip(saved, fresh))
        )
    return torch.is_tensor(fresh) and torch.is_tensor(saved) and saved.shape == fresh.shape


def _optimizer_state_problem(saved: dict[str, Any], optimizer) -> str | None:
    """What is wrong with a checkpoint's optimizer state for ``optimizer`` (None: nothing).

    Its settings must be those this optimizer has, of the same types, and each tensor of
    its per-parameter state must have the shape of its parameter (the step: one number).
    """
    fresh_groups = optimizer.state_dict()["param_groups"]
    groups = saved["param_groups"]
    if len(groups) != len(fresh_groups):
        return "has another number of parameter groups"
    for group, fresh in zip(groups, fresh_groups):
        if set(group) != set(fresh):
            return "has other settings than this optimizer"
        for key, value in fresh.items():
            if key != "params" and not _same_kind(group[key], value):
                return f"has a setting {key!r} of the wrong type or out of range"
        if group["params"] != fresh["params"]:
            return "names other parameters"
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, entries in saved["state"].items():
        if not (isinstance(index, int) and 0 <= index < len(params)):
            return "names a parameter the model does not have"
        for key, value in entries.items():
            if not torch.is_tensor(value):
                continue
            want = torch.Size([]) if key == "step" else params[index].shape
            if value.shape != want or not value.is_floating_point():
                return f"has a {key!r} of the wrong shape or type"
    return None


def _same_layout(state, expected) -> bool:
    """Whether a carried state has the shapes and dtypes of ``expected`` (a fresh state)."""
    parts = state if isinstance(state, tuple) else (state,)
    want = expected if isinstance(expected, tuple) else (expected,)
    return len(parts) == len(want) and all(
        p.shape == w.shape and p.dtype == w.dtype for p, w in zip(parts, want)
    )


def _to_device(state, device):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.to(device) for s in state)
    return state.to(device)


def _streams_of(state, streams: slice):
    """Rows ``streams`` of a carried state (L, B, H) or a pair of them."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s[:, streams].contiguous() for s in state)
    return state[:, streams].contiguous()


def _join_streams(states: list):
    """The ranks' carried states (L, B/N, H) (or pairs), in rank order -> (L, B, H)."""
    if states[0] is None:
        return None
    if isinstance(states[0], tuple):
        return tuple(torch.cat(parts, dim=1) for parts in zip(*states))
    return torch.cat(states, dim=1)


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
        world: World | None = None,
    ):
        self.cfg, self.run, self.data, self.device = cfg, Path(run), data, device
        # In a data-parallel run (world.parallel) only rank 0 prints and writes.
        self.world = world or World()
        self.out, self.err, self.quiet = out, err, quiet or not self.world.is_main
        self.streams = stream_range(cfg.batch_size, self.world)  # this rank's share of a batch
        if self.world.parallel and cfg.cuda_graph:
            raise RnnlabError(
                "--cuda-graph does not yet work with torchrun (several processes); leave "
                "--cuda-graph out"
            )
        # Every rank seeds alike: the same initial weights, and the same dropout draws.
        torch.manual_seed(cfg.seed)
        self.impl, why = usable_impl(cfg.model.impl)
        if why:
            self.warn(
                f"{why}; training with --impl {self.impl}, the same model computed more slowly"
            )
        self.model = build_model(cfg.model, len(data.vocab)).to(device)
        # --ema: the averaged weights are the model that is validated and saved
        self.average = WeightAverage(self.model, cfg.ema) if cfg.ema else None
        if self.world.parallel and hasattr(self.model, "share_masks"):
            cast(Any, self.model).share_masks(self.streams, cfg.batch_size)
        self.optimizer = make_optimizer(
            cfg.optimizer, self.model.parameters(), cfg.lr, weight_decay=cfg.weight_decay
        )
        # One step for the whole run: a CUDA-graphed one captures once, at its first batch.
        self.update = train.make_step(
            self.model, self.optimizer, cfg.clip, cuda_graph=cfg.cuda_graph
        )
        self.epoch = 0
        self.progress = EpochProgress()
        self.history: list[dict[str, Any]] = []
        planned = self.batches_before(cfg.epochs) if cfg.schedule == "cosine" else 0
        self.schedule = Schedule(
            cfg.schedule,
            cfg.lr,
            warmup_for(cfg.warmup, planned),
            cfg.min_lr_frac,
            planned if cfg.time_limit is None else 0,
            None if cfg.time_limit is None else cfg.time_limit * 60,
        )
        self.clock = ScheduleState(lr=cfg.lr)
        self.started: float | None = None  # time.monotonic() when this process began training
        self.seconds_before = 0.0  # the run's seconds of training before that
        # In a data-parallel run, the seconds rank 0 had trained at the last agreement
        # (World.agree): every rank's schedule and time limit follow that one clock.
        self.agreed_seconds: float | None = None
        self.signal: int | None = None  # the stop signal, as the ranks agreed on it
        # Without --threads: torch's threads follow the cores other programs leave free.
        self.threads = governor_for(cfg.threads)
        # --tensorboard: the curves, written by rank 0 (checked here, before any training)
        self.board = board.Board(self.run, cfg.tensorboard and self.world.is_main)

    def batches_in(self, epoch: int) -> int:
        """The batches epoch ``epoch`` (0-based) of the run has."""
        cfg = self.cfg
        n = len(self.data.train_ids)
        return num_batches(n, cfg.batch_size, cfg.num_steps, cfg.sampling, cfg.seed, epoch)

    def batches_before(self, epoch: int) -> int:
        """The batches of the run's epochs before ``epoch`` (0-based)."""
        return sum(self.batches_in(e) for e in range(epoch))

    def step(self, X, Y, state):
        """One update (``train.make_step``'s) at the rate the schedule gives; counts the batch."""
        if self.schedule.per_batch:
            self.set_lr(self.schedule.rate(replace(self.clock, seconds=self.elapsed())))
        loss, norm, state = self.update(X, Y, state)
        self.clock = replace(self.clock, batches=self.clock.batches + 1)
        if self.average is not None:
            self.average.update(self.clock.batches)
        loss = self.world.mean(loss)  # the global batch's loss
        self.board.batch(self.clock.batches, loss, norm, self.optimizer.param_groups[0]["lr"])
        return loss, norm, state

    def averaged(self) -> contextlib.AbstractContextManager:
        """Within it, the model holds the weights that are validated and saved: with --ema
        their average, else the weights being trained."""
        return self.average.applied() if self.average is not None else contextlib.nullcontext()

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def elapsed(self) -> float:
        """Seconds of training in the whole run, across resumes, up to now (in a
        data-parallel run, up to the last agreement, by rank 0's clock)."""
        if self.world.parallel:
            return self.clock.seconds if self.agreed_seconds is None else self.agreed_seconds
        return self.own_elapsed()

    def own_elapsed(self) -> float:
        """Seconds of training in the whole run up to now, by this process' clock."""
        if self.started is None:
            return self.clock.seconds
        return self.seconds_before + (time.monotonic() - self.started)

    def agree_on_signal(self, stop: StopSignals) -> None:
        """Set ``self.signal`` to the stop signal received so far (None: none), and the clock.

        In a data-parallel run every rank must decide alike, so they exchange what they
        know (World.agree): a rank told of another's signal stops as if it had its own,
        and one that receives a signal after the exchange acts on it at the next. The
        training loop reads ``self.signal``, never the live ``stop.signum``.
        """
        self.signal, seconds = self.world.agree(stop.signum, self.own_elapsed())
        if self.world.parallel:
            self.agreed_seconds = seconds

    def time_is_up(self, seconds: float | None = None) -> bool:
        """Whether the run has trained its time limit: up to now, or ``seconds`` of it."""
        if self.cfg.time_limit is None:
            return False
        return (self.elapsed() if seconds is None else seconds) >= self.cfg.time_limit * 60

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

    def warn(self, message: str) -> None:
        if self.world.is_main:
            print(f"rnnlab: warning: {message}", file=self.err)

    def log(self, message: str, always: bool = False) -> None:
        """Print a line of the log; if the reader went away (``| head``), go on silently.

        ``always``: also with --quiet (why the run stopped). Only rank 0 ever prints.
        """
        if (self.quiet and not always) or not self.world.is_main:
            return
        try:
            print(message, file=self.out, flush=True)
        except BrokenPipeError:
            self.quiet = True  # training goes on: a closed pipe is no reason to lose it
            files.silence(self.out)

    def restore(self, ckpt: ckpt_io.Checkpoint) -> None:
        """Put the model, optimizer, RNG and epoch position back as ``ckpt`` holds them."""
        damaged = f"the run directory {self.run} is damaged: restore it or train again"
        problem = ckpt_io.position_problem(
            ckpt, self.batches_in, self.cfg.batch_size * self.cfg.num_steps
        )
        if problem:
            raise RnnlabError(f"the checkpoint {problem}; {damaged}")
        ckpt_io.load_weights(self.model, ckpt.weights, self.run)
        if self.average is not None:  # ckpt.weights are the average; then the trained ones
            self.average.restart_from(self.model)
            ckpt_io.load_weights(self.model, ckpt.training_weights or ckpt.weights, self.run)
        problem = _optimizer_state_problem(ckpt.optimizer, self.optimizer)
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
            ckpt_io.restore_rng(ckpt_io.rng_of_rank(ckpt.rng, self.world.rank, self.world.size))
        except (RuntimeError, TypeError, ValueError):
            raise RnnlabError(
                f"the random-number state in the checkpoint is invalid; {damaged}"
            ) from None
        expected = cast(Any, self.model).begin_state(self.cfg.batch_size, "cpu")
        state = ckpt.progress.state
        if state is not None and not _same_layout(state, expected):
            raise RnnlabError(f"the carried hidden state does not fit the model; {damaged}")
        self.epoch, self.history = ckpt.epoch, ckpt.history
        # The checkpoint holds all B streams' state; this rank carries its own.
        self.progress = replace(
            ckpt.progress, state=_to_device(_streams_of(state, self.streams), self.device)
        )
        self.clock = ckpt.schedule or self.clock_of_format_1(ckpt)
        if self.cfg.schedule == "plateau":
            self.set_lr(self.clock.lr)

    def clock_of_format_1(self, ckpt: ckpt_io.Checkpoint) -> ScheduleState:
        """The schedule's state of a checkpoint written before schedules (constant ones),
        from its history: the batches and seconds trained and the lowest validation loss."""
        clock = ScheduleState(
            lr=self.cfg.lr,
            batches=self.batches_before(ckpt.epoch) + ckpt.progress.batch,
            seconds=ckpt.progress.seconds
            + sum(_finite(r.get("seconds")) or 0.0 for r in ckpt.history),
        )
        for record in ckpt.history:
            loss = _finite(record.get("val_loss"))
            if loss is None:
                loss = math.log(record["val_ppl"])  # checked: a positive finite number
            if improves(clock, loss):
                clock = replace(clock, best_loss=loss, best_epoch=record["epoch"])
        return clock

    def save(self, epoch: int, progress: EpochProgress, best: bool = False) -> None:
        """Checkpoint where training stands. In a data-parallel run every rank takes part:
        rank 0 gathers all B streams' carried state and every rank's RNG, and writes."""
        self.clock = replace(self.clock, seconds=self.elapsed())
        rng_of_ranks = None
        if self.world.parallel:
            parts = self.world.gather((_to_device(progress.state, "cpu"), ckpt_io.rng_state()))
            progress = replace(progress, state=_join_streams([state for state, _ in parts]))
            rng_of_ranks = [rng for _, rng in parts]
        problem = None
        if self.world.is_main:
            training = None
            if self.average is not None:
                training = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            try:
                with self.averaged():
                    ckpt_io.save_checkpoint(
                        self.run,
                        self.model,
                        self.optimizer,
                        epoch,
                        progress,
                        self.history,
                        self.cfg,
                        self.clock,
                        best=best,
                        rng_of_ranks=rng_of_ranks,
                        training_weights=training,
                    )
            except RnnlabError as e:
                problem = str(e)
                if not self.world.parallel:
                    raise
        problem = self.world.share(problem)  # a rank 0 that cannot save stops every rank
        if problem is not None:
            raise (RnnlabError if self.world.is_main else ReportedElsewhere)(problem)

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

    def train_epoch(self, epoch: int, stop: StopSignals, use_bar: bool) -> int:
        """Train epoch ``epoch`` from where ``self.progress`` stands; returns its batch count.

        Stops early, after a whole batch, when a signal has come.
        """
        cfg = self.cfg
        X, Y = epoch_batches(
            self.data.train_ids, cfg.batch_size, cfg.num_steps, cfg.sampling, cfg.seed, epoch
        )
        # (nb, B, T) -> this rank's streams (nb, B/N, T): all of them in one process
        X, Y = X[:, self.streams].to(self.device), Y[:, self.streams].to(self.device)
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

    def fit(self) -> int:
        """Train to the end of the run (or until stopped); returns the exit status.

        In a data-parallel run, a rank that stops answering ends every other rank's
        training with an error naming it (:func:`rnnlab.distributed.lost_rank_error`);
        the last checkpoint is left as it was.
        """
        # The signal handling stays for the roll call after a lost rank: torchrun sends the
        # survivors SIGTERM then, and they should stop with the message, not by the signal.
        with StopSignals() as stop, self.threads or contextlib.nullcontext():
            try:
                return self._fit(stop)
            except (RuntimeError, LostRank) as e:
                if not (self.world.parallel and is_lost_connection(e)):
                    raise
                lost = lost_rank_error(
                    self.world,
                    e,
                    f"the last checkpoint in {self.run} is intact: resume with the same "
                    f"command and --resume",
                )
            finally:
                self.board.close()
                if self.world.parallel:
                    # DistributedDataParallel must be gone before the process group: left
                    # to the interpreter's exit, its end can abort the process (torch 2.13,
                    # gloo; about 1 run in 6 here).
                    self.update = train.make_step(self.model, self.optimizer, self.cfg.clip)
                    gc.collect()
        raise lost  # here, not in the except clause: its traceback held the DDP module

    def _fit(self, stop: StopSignals) -> int:
        cfg, device = self.cfg, self.device
        VX, VY = eval_batches(
            self.data.val_ids, cfg.eval_batch_size or cfg.batch_size, cfg.num_steps
        )
        # Each rank scores its share of the validation streams (all of them in one process).
        own = split_range(VX.shape[1], self.world)
        VX, VY = VX[:, own].to(device), VY[:, own].to(device)
        for p in self.model.parameters():
            # Start from zeroed gradients, as a resumed run's later steps do (0 + g and a fresh
            # g can differ in the sign of a zero): resumed and uninterrupted runs agree bitwise.
            p.grad = torch.zeros_like(p)
        if self.world.parallel:
            self.update = self.parallel_step()
        use_bar = not self.quiet and hasattr(self.err, "isatty") and self.err.isatty()
        self.started, self.seconds_before = time.monotonic(), self.clock.seconds
        for epoch in range(self.epoch, cfg.epochs):
            nb = self.train_epoch(epoch, stop, use_bar)
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
                self.log(
                    f"no lower validation loss for {self.patience_wait()} epoch(s): stopped early "
                    f"after epoch {self.epoch}/{cfg.epochs}; the best, epoch "
                    f"{self.clock.best_epoch_ended} (val ppl "
                    f"{perplexity(self.clock.best_loss or 0.0):.2f}), is in "
                    f"{self.run / rundir.BEST_FOLDER}",
                    always=True,
                )
                break
        last = self.history[-1] if self.history else None
        if last is not None and not self.quiet:
            self.log(
                f"perplexity {last['train_ppl']:.1f}, {last['tokens_per_s']:,.0f} tokens/s "
                f"on {device}"
            )
            sample = self.sample()
            if sample:
                self.log(sample)
        return 0

    def parallel_step(self) -> train.Step:
        """The update step of a data-parallel run: the model and its loss wrapped in
        DistributedDataParallel, which averages the gradients over the ranks."""
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(
            BatchLoss(self.model),
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            # an adaptive softmax scores a tail cluster only for batches that need it
            find_unused_parameters=self.cfg.model.adaptive_softmax,
        )
        return train.make_step(self.model, self.optimizer, self.cfg.clip, batch_loss=ddp)

    def validation_loss(self, VX, VY) -> float:
        """Mean loss per token on the validation batches VX, VY (nb, B', T'): in a
        data-parallel run, this rank's streams of them, the sums added over the ranks."""
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
        self.log(
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
                self.update.recapture()
        self.history.append(record)
        # Before the checkpoint: a crash between the two leaves values that a resume from the
        # checkpoint before purges, not a checkpoint whose epoch the curves lack.
        self.board.epoch(self.clock.batches, record)
        self.epoch, self.progress = epoch + 1, EpochProgress()
        self.save(self.epoch, self.progress, best=best)
        if self.world.is_main:
            rundir.write_metrics(self.run, self.history, self.plot_title())
        self.log(
            f"epoch {epoch + 1}/{cfg.epochs}  train ppl {record['train_ppl']:.2f}  "
            f"val ppl {record['val_ppl']:.2f}  val bpt {record['val_bpt']:.3f}  "
            f"{record['tokens_per_s']:,.0f} tokens/s  {record['seconds']:.1f} s"
            + (f"  lr {lr:.4g}" if cfg.schedule != "constant" else "")
        )
        if (
            cfg.sample_every
            and (epoch + 1) % cfg.sample_every == 0
            and epoch + 1 < cfg.epochs
            and not self.quiet
        ):
            sample = self.sample()
            if sample:
                self.log(f"  {sample}")

    def plot_title(self) -> str:
        cfg = self.cfg
        return f"{cfg.model.cell} ({self.impl}), H={cfg.model.hidden}, {Path(cfg.source).name}"

    def launcher(self) -> str:
        """What comes before ``rnnlab train`` in the command that resumes this run."""
        return "torchrun ... -m " if self.world.parallel else ""

    def interrupted(self, epoch: int, batch: int, nb: int) -> int:
        """Report a run stopped by ``self.signal`` (its checkpoint saved); 128 + its number,
        as a shell reports a process the signal ended."""
        signum = int(self.signal or 0)
        if self.world.is_main:
            print(
                f"rnnlab: {signal.Signals(signum).name} received: stopped at "
                f"{_where(epoch, batch, nb)}; checkpoint saved in {self.run}; resume with: "
                f"{self.launcher()}rnnlab train --out {self.run} --resume",
                file=self.err,
                flush=True,
            )
        return 128 + signum

    def out_of_time(self, epoch: int, batch: int, nb: int) -> int:
        """Report a run stopped by its time limit (its checkpoint saved); exit status 0."""
        self.log(
            f"time limit of {self.cfg.time_limit:g} minutes reached ({self.clock.seconds / 60:.3g} "
            f"trained): stopped at {_where(epoch, batch, nb)}; "
            f"checkpoint saved in {self.run}; to train longer: {self.launcher()}rnnlab train "
            f"--out {self.run} "
            f"--resume --time-limit MINUTES (more than {self.cfg.time_limit:g})",
            always=True,
        )
        return 0


def _where(epoch: int, batch: int, nb: int) -> str:
    """Where a run stopped: in epoch ``epoch`` (0-based) after ``batch`` of ``nb`` batches,
    or, with batch 0, at the end of epoch ``epoch`` (1-based)."""
    return f"epoch {epoch + 1}, batch {batch}/{nb}" if batch else f"the end of epoch {epoch}"


def _finite(value: Any) -> float | None:
    """A JSON value as a finite non-negative float, or None if it is not one."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) and value >= 0 else None


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

    ``world``: the processes of a data-parallel run (:mod:`rnnlab.distributed`; default
    one). Rank 0 does all of the above, reading and writing the run directory, and
    sends the others what to train (:class:`_Followers`); they never touch the folder.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    run = Path(run)
    world = world or World()
    if not world.is_main:
        return _follow(run, world, out, err)
    followers = _Followers(world)
    try:
        status = _lead(cfg, run, resume, given, quiet, out, err, accept_changed_source, followers)
    except RnnlabError as e:
        followers.stop(str(e))
        raise
    except BaseException:
        followers.stop("rank 0 stopped with an unexpected error (see its traceback)")
        raise
    followers.stop(None, status)  # when rank 0 found nothing to train
    return status


class _Followers:
    """What rank 0 tells the other ranks of a data-parallel run before training: once,
    either to go (the config and the checkpoint to start from) or to stop (an error's
    message, or an exit status). Nothing to tell in a one-process run."""

    def __init__(self, world: World):
        self.world, self.told = world, False

    def go(self, cfg: TrainConfig, checkpoint: ckpt_io.Checkpoint | None, text_sha: str) -> None:
        if self.world.parallel and not self.told:
            self.told = True
            self.world.share(("go", cfg, checkpoint, text_sha))

    def stop(self, message: str | None, status: int = 2) -> None:
        if self.world.parallel and not self.told:
            self.told = True
            self.world.share(("stop", message, status))


def _ready(world: World, problem: str | None) -> None:
    """Check that every rank could set up its part (rank 0's own is known to be fine)."""
    problems = world.gather(problem)
    for rank, text in enumerate(problems):
        if text is not None:
            raise (RnnlabError if world.is_main else ReportedElsewhere)(f"rank {rank}: {text}")


def _follow(run: Path, world: World, out: TextIO, err: TextIO) -> int:
    """A rank other than 0: wait for rank 0's word, set up the same run, train its streams."""
    message = world.share()
    if message[0] == "stop":
        _, text, status = message
        if text is not None:
            raise ReportedElsewhere(text)
        return status
    _, cfg, checkpoint, text_sha = message
    problem = None
    try:
        device = _device(cfg, world)
        data = _prepare(cfg)
        if data.text_sha256 != text_sha:
            raise RnnlabError(
                f"{cfg.source} here is not the text rank 0 reads (its sha256 differs); give "
                f"every machine the same copy"
            )
        trainer = Trainer(cfg, run, data, device, out, err, True, world)
        if checkpoint is not None:
            trainer.restore(checkpoint)
    except RnnlabError as e:
        problem = " ".join(str(e).split())
    _ready(world, problem)
    return trainer.fit()


def _lead(
    cfg: TrainConfig | None,
    run: Path,
    resume: bool,
    given: dict[str, Any] | None,
    quiet: bool,
    out: TextIO,
    err: TextIO,
    accept_changed_source: bool,
    followers: _Followers,
) -> int:
    """What :func:`fit` does in rank 0 (the only process of a one-process run)."""
    if resume:
        if not rundir.has_run(run):
            raise RnnlabError(
                f"nothing to resume in {run} (no config.json there); start the run without --resume"
            )
        with rundir.RunLock(run):
            return _resume(run, given or {}, quiet, out, err, accept_changed_source, followers)
    if cfg is None:
        raise RnnlabError("no configuration given for a new run")
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
            return _start(cfg, run, quiet, out, err, followers)
    finally:
        if not any(
            ckpt_io.has_checkpoint(run, slot) or ckpt_io.generations(run, slot)
            for slot in (ckpt_io.LATEST, ckpt_io.BEST)
        ):
            _remove_unstarted(run, made)


def _remove_unstarted(run: Path, made: bool) -> None:
    """Remove what a new run wrote before its first checkpoint (and its folder, if made here)."""
    board.remove(run)
    for name in (
        rundir.CONFIG,
        rundir.VOCAB,
        rundir.SOURCE,
        rundir.LOCK,
        rundir.METRICS,
        rundir.PLOT,
        rundir.CHECKPOINTS,
        rundir.BEST_FOLDER,
    ):
        path = run / name
        try:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()  # only an empty checkpoints/ folder
            elif path.exists() or path.is_symlink():
                path.unlink()
        except OSError:
            pass
    if made:
        try:
            run.rmdir()  # only if nothing else is in it
        except OSError:
            pass


def _device(cfg: TrainConfig, world: World) -> torch.device:
    """The device ``cfg`` trains on, once its implementation and --cuda-graph can run there.

    Checks too that the batch can be shared out among ``world``'s ranks; each rank of a
    data-parallel run on GPUs takes its own (the one torchrun's LOCAL_RANK names).
    """
    stream_range(cfg.batch_size, world)
    device = train.resolve_device(cfg.device)
    check_device(cfg.model, device.type)
    if cfg.cuda_graph:
        train.check_cuda_graph(device)
    if device.type == "cuda" and world.parallel:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _start(
    cfg: TrainConfig, run: Path, quiet: bool, out: TextIO, err: TextIO, followers: _Followers
) -> int:
    """A new run in the (locked, empty) folder ``run``."""
    world = followers.world
    device = _device(cfg, world)
    data = _prepare(cfg)
    if cfg.prefix is None:  # the run's own text, not another corpus' phrase
        start = data.vocab.to_tokens(data.train_ids[:400].tolist())
        cfg = replace(cfg, prefix=default_prompt(start, cfg.mode))
    rundir.create(run, cfg, data.vocab)
    rundir.write_source(run, cfg, data.text_sha256)
    trainer = Trainer(cfg, run, data, device, out, err, quiet, world)
    followers.go(cfg, None, data.text_sha256)
    _ready(world, None)
    return trainer.fit()


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


def _resume(
    run: Path,
    given: dict[str, Any],
    quiet: bool,
    out: TextIO,
    err: TextIO,
    accept_changed: bool,
    followers: _Followers,
) -> int:
    """Continue the (locked) run in ``run`` from its checkpoint."""
    world = followers.world
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
    # None: no save ever finished, so the run starts over
    checkpoint, recovered = ckpt_io.latest(run, saved, len(saved_vocab))
    if checkpoint is not None:
        ckpt_io.check_config_matches(run, saved, checkpoint)
    if "cuda_graph" not in given and train.resolve_device(cfg.device).type != "cuda":
        # --cuda-graph only sets the speed on the GPU the run was trained on: off elsewhere.
        cfg = replace(cfg, cuda_graph=False)
    device = _device(cfg, world)
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
    trainer = Trainer(cfg, run, data, device, out, err, quiet, world)
    if checkpoint is not None:
        trainer.restore(checkpoint)
        if recovered:
            ckpt_io.adopt(run, checkpoint)
            trainer.warn(
                f"{run} had lost checkpoint.json; resuming from its newest complete checkpoint "
                f"({checkpoint.epoch} epoch(s) and {checkpoint.progress.batch} batch(es) in)"
            )
        if trainer.history:  # a crash may have come between the checkpoint and these files
            rundir.write_metrics(run, trainer.history, trainer.plot_title())
    else:
        trainer.warn(f"{run} has no checkpoint yet; starting its training from the beginning")
    done = trainer.nothing_left()
    if done:
        print(done, file=out)
        return 0
    if cfg != saved:  # only what will really happen goes into config.json
        rundir.write_config(run, cfg)
    followers.go(cfg, checkpoint, data.text_sha256)
    _ready(world, None)
    return trainer.fit()
