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

SIGINT/SIGTERM: the current batch finishes, a checkpoint is written, and fit
returns 130 or 143. A second signal acts at once (atomic writes keep the last
checkpoint). ``time_limit``: once that many minutes of training have passed (counted
across resumes), the same, but fit returns 0. A non-finite loss raises
train.NonFiniteError before anything is saved.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO, cast

import torch

from . import checkpoint as ckpt_io
from . import files, rundir, train
from .batches import epoch_batches, eval_batches, num_batches
from .config import RESUMABLE_CHANGES, TrainConfig, conflicts, flag, machine_cpus
from .data import Dataset, prepare
from .errors import RnnlabError
from .generate import continue_text, default_prompt
from .models import build_model, check_device, check_fits, usable_impl
from .schedule import Schedule, ScheduleState, after_epoch, improves
from .train import EpochProgress, bits_per_token, evaluate, make_optimizer, perplexity, run_epoch

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

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended."""
        return 128 + int(self.signum or 0)

    @property
    def name(self) -> str:
        """The signal's name, such as SIGINT ("" if none came)."""
        return signal.Signals(self.signum).name if self.signum else ""


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
        self.schedule = Schedule(
            cfg.schedule,
            cfg.lr,
            cfg.warmup,
            cfg.min_lr_frac,
            self.batches_before(cfg.epochs)
            if cfg.schedule == "cosine" and cfg.time_limit is None
            else 0,
            None if cfg.time_limit is None else cfg.time_limit * 60,
        )
        self.clock = ScheduleState(lr=cfg.lr)
        self.started: float | None = None  # time.monotonic() when this process began training
        self.seconds_before = 0.0  # the run's seconds of training before that

    def batches_before(self, epoch: int) -> int:
        """The batches of the run's epochs before ``epoch`` (0-based)."""
        cfg, n = self.cfg, len(self.data.train_ids)
        return sum(
            num_batches(n, cfg.batch_size, cfg.num_steps, cfg.sampling, cfg.seed, e)
            for e in range(epoch)
        )

    def step(self, X, Y, state):
        """One update (``train.make_step``'s) at the rate the schedule gives; counts the batch."""
        if self.schedule.per_batch:
            self.set_lr(self.schedule.rate(replace(self.clock, seconds=self.elapsed())))
        result = self.update(X, Y, state)
        self.clock = replace(self.clock, batches=self.clock.batches + 1)
        return result

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def elapsed(self) -> float:
        """Seconds of training in the whole run, across resumes, up to now."""
        if self.started is None:
            return self.clock.seconds
        return self.seconds_before + (time.monotonic() - self.started)

    def time_is_up(self, seconds: float | None = None) -> bool:
        """Whether the run has trained its time limit: up to now, or ``seconds`` of it."""
        if self.cfg.time_limit is None:
            return False
        return (self.elapsed() if seconds is None else seconds) >= self.cfg.time_limit * 60

    def patience_ran_out(self) -> bool:
        """Whether ``patience`` epochs have passed since the lowest validation loss."""
        best = self.clock.best_epoch
        return bool(self.cfg.patience and best and self.epoch - best >= self.cfg.patience)

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
                f"validation loss since epoch {self.clock.best_epoch} (--patience "
                f"{cfg.patience}); give --patience larger than {cfg.patience} to train it longer"
            )
        return None

    def warn(self, message: str) -> None:
        print(f"rnnlab: warning: {message}", file=self.err)

    def log(self, message: str, always: bool = False) -> None:
        """Print a line of the log; if the reader went away (``| head``), go on silently.

        ``always``: also with --quiet (why the run stopped).
        """
        if self.quiet and not always:
            return
        try:
            print(message, file=self.out, flush=True)
        except BrokenPipeError:
            self.quiet = True  # training goes on: a closed pipe is no reason to lose it
            files.silence(self.out)

    def restore(self, ckpt: ckpt_io.Checkpoint) -> None:
        """Put the model, optimizer, RNG and epoch position back as ``ckpt`` holds them."""
        damaged = f"the run directory {self.run} is damaged: restore it or train again"
        ckpt_io.load_weights(self.model, ckpt.weights, self.run)
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
            ckpt_io.restore_rng(ckpt.rng)
        except (RuntimeError, TypeError, ValueError):
            raise RnnlabError(
                f"the random-number state in the checkpoint is invalid; {damaged}"
            ) from None
        expected = cast(Any, self.model).begin_state(self.cfg.batch_size, "cpu")
        state = ckpt.progress.state
        if state is not None and not _same_layout(state, expected):
            raise RnnlabError(f"the carried hidden state does not fit the model; {damaged}")
        self.epoch, self.history = ckpt.epoch, ckpt.history
        self.progress = ckpt.progress
        self.progress.state = _to_device(self.progress.state, self.device)
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
        self.clock = replace(self.clock, seconds=self.elapsed())
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

    def train_epoch(self, epoch: int, stop: StopSignals, use_bar: bool) -> int:
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
            if stop.signum is not None or self.time_is_up():
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
            )
        finally:
            if bar is not None:
                bar.close()
        return nb

    def fit(self) -> int:
        cfg, device = self.cfg, self.device
        VX, VY = (
            t.to(device)
            for t in eval_batches(
                self.data.val_ids, cfg.eval_batch_size or cfg.batch_size, cfg.num_steps
            )
        )
        for p in self.model.parameters():
            # Start from zeroed gradients, as a resumed run's later steps do (0 + g and a fresh
            # g can differ in the sign of a zero): resumed and uninterrupted runs agree bitwise.
            p.grad = torch.zeros_like(p)
        use_bar = not self.quiet and hasattr(self.err, "isatty") and self.err.isatty()
        self.started, self.seconds_before = time.monotonic(), self.clock.seconds
        with StopSignals() as stop:
            for epoch in range(self.epoch, cfg.epochs):
                nb = self.train_epoch(epoch, stop, use_bar)
                if self.progress.batch < nb:  # stopped by a signal or by the time limit
                    self.save(epoch, self.progress)
                    if stop.signum is not None:
                        return self.interrupted(stop, epoch, self.progress.batch, nb)
                    return self.out_of_time(epoch, self.progress.batch, nb)
                self.end_epoch(epoch, VX, VY)
                if stop.signum is not None:
                    return self.interrupted(stop, epoch + 1, 0, nb)
                # The time the checkpoint records, so that a resume sees the same as this test.
                if self.epoch < cfg.epochs and self.time_is_up(self.clock.seconds):
                    return self.out_of_time(epoch + 1, 0, nb)
                if self.epoch < cfg.epochs and self.patience_ran_out():
                    self.log(
                        f"no lower validation loss for {cfg.patience} epoch(s): stopped early "
                        f"after epoch {self.epoch}/{cfg.epochs}; the best, epoch "
                        f"{self.clock.best_epoch} (val ppl "
                        f"{perplexity(self.clock.best_loss or 0.0):.2f}), is in "
                        f"{self.run / rundir.BEST_FOLDER}",
                        always=True,
                    )
                    break
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
        lr = self.optimizer.param_groups[0]["lr"]  # the rate of the epoch's last batch
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
            "lr": lr,
        }
        best = improves(self.clock, val_loss)
        self.clock = after_epoch(cfg.schedule, self.clock, epoch + 1, val_loss)
        if self.clock.lr != lr and cfg.schedule == "plateau":
            self.set_lr(self.clock.lr)
            if hasattr(self.update, "recapture"):  # a CUDA graph froze the old rate
                self.update.recapture()
        self.history.append(record)
        self.epoch, self.progress = epoch + 1, EpochProgress()
        self.save(self.epoch, self.progress, best=best)
        rundir.write_metrics(self.run, self.history, self.plot_title())
        self.log(
            f"epoch {epoch + 1}/{cfg.epochs}  train ppl {record['train_ppl']:.2f}  "
            f"val ppl {record['val_ppl']:.2f}  val bpt {record['val_bpt']:.3f}  "
            f"{record['tokens_per_s']:,.0f} tokens/s  {record['seconds']:.1f} s"
            + (f"  lr {lr:.4g}" if cfg.schedule != "constant" else "")
        )
        if cfg.sample_every and (epoch + 1) % cfg.sample_every == 0 and epoch + 1 < cfg.epochs:
            sample = self.sample()
            if sample:
                self.log(f"  {sample}")

    def plot_title(self) -> str:
        cfg = self.cfg
        return f"{cfg.model.cell} ({self.impl}), H={cfg.model.hidden}, {Path(cfg.source).name}"

    def interrupted(self, stop: StopSignals, epoch: int, batch: int, nb: int) -> int:
        print(
            f"rnnlab: {stop.name} received: stopped at {_where(epoch, batch, nb)}; checkpoint "
            f"saved in {self.run}; resume with: rnnlab train --out {self.run} --resume",
            file=self.err,
            flush=True,
        )
        return stop.exit_status

    def out_of_time(self, epoch: int, batch: int, nb: int) -> int:
        """Report a run stopped by its time limit (its checkpoint saved); exit status 0."""
        self.log(
            f"time limit of {self.cfg.time_limit:g} minutes reached ({self.clock.seconds / 60:.3g} "
            f"trained): stopped at {_where(epoch, batch, nb)}; "
            f"checkpoint saved in {self.run}; to train longer: rnnlab train --out {self.run} "
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
) -> int:
    """Train the run directory ``run``; returns the exit status (0, or 130/143 if interrupted).

    ``cfg`` may be None with ``resume``: the run's config.json is used.
    ``given``: the options given explicitly (flat names, as TrainConfig.options());
    on --resume they must agree with the run's config.json, except those in
    config.RESUMABLE_CHANGES. ``accept_changed_source``: resume even if the text of
    the source changed since the run was trained on it.

    The run directory is locked for the whole call (a second train of it is refused),
    and a new run that stops before its first checkpoint leaves no folder behind.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    run = Path(run)
    if resume:
        if not rundir.has_run(run):
            raise RnnlabError(
                f"nothing to resume in {run} (no config.json there); start the run without --resume"
            )
        with rundir.RunLock(run):
            return _resume(run, given or {}, quiet, out, err, accept_changed_source)
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
            return _start(cfg, run, quiet, out, err)
    finally:
        if not any(
            ckpt_io.has_checkpoint(run, slot) or ckpt_io.generations(run, slot)
            for slot in (ckpt_io.LATEST, ckpt_io.BEST)
        ):
            _remove_unstarted(run, made)


def _remove_unstarted(run: Path, made: bool) -> None:
    """Remove what a new run wrote before its first checkpoint (and its folder, if made here)."""
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


def _device(cfg: TrainConfig) -> torch.device:
    """The device ``cfg`` trains on, once its implementation and --cuda-graph can run there."""
    device = train.resolve_device(cfg.device)
    check_device(cfg.model, device.type)
    if cfg.cuda_graph:
        train.check_cuda_graph(device)
    return device


def _start(cfg: TrainConfig, run: Path, quiet: bool, out: TextIO, err: TextIO) -> int:
    """A new run in the (locked, empty) folder ``run``."""
    device = _device(cfg)
    data = _prepare(cfg)
    if cfg.prefix is None:  # the run's own text, not another corpus' phrase
        start = data.vocab.to_tokens(data.train_ids[:400].tolist())
        cfg = replace(cfg, prefix=default_prompt(start, cfg.mode))
    rundir.create(run, cfg, data.vocab)
    rundir.write_source(run, cfg, data.text_sha256)
    trainer = Trainer(cfg, run, data, device, out, err, quiet)
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
    run: Path, given: dict[str, Any], quiet: bool, out: TextIO, err: TextIO, accept_changed: bool
) -> int:
    """Continue the (locked) run in ``run`` from its checkpoint."""
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
    device = _device(cfg)
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
    trainer = Trainer(cfg, run, data, device, out, err, quiet)
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
    return trainer.fit()
