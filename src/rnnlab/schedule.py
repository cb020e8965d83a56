"""Learning-rate schedules: the rate of each batch, from where the run stands.

With k the batches the run has trained (from 0, across epochs and resumes), lr the
run's ``--lr``, W ``--warmup`` (but at most a tenth of the run: of the N batches
--epochs plans, ``warmup_for``, or of its time limit), m = ``--min-lr-frac`` × lr:

    constant   lr_k = lr                                        (d2l; the default)
    cosine     lr_k = lr · (k + 1) / (W + 1)                    k < W: linear warm-up
               lr_k = m + (lr − m) · ½ (1 + cos(π p))           k ≥ W: cosine decay
                   p = (k − W) / (N − W)                        over N planned batches
                   p = max(s / S, (k − W) / (N − W))            or with --time-limit, over S
                                                                seconds or the N batches, which-
                                                                ever ends first; warm-up ends at
                                                                k = W or s = S/10, its rate
                                                                lr · max((k+1) / (W+1), 10 s / S)
               p is clipped to [0, 1], so the rate ends at m and stays there
    plateau    lr_e = lr / 4^j after j epochs whose validation loss was not lower
               than the lowest before them

Cosine decay without restarts is Loshchilov & Hutter, "SGDR" (ICLR 2017); the warm-up
and decay are nanoGPT's ``get_lr``. Plateau is pytorch/examples' word_language_model
rule (``lr /= 4.0`` when the validation loss did not improve).

N is --epochs × the batches of an epoch (summed over the epochs, which differ by their
random offset); with a time limit the decay runs over its wall-clock seconds too, and
p is the larger of the two fractions, so a run ends at the floor whichever of its
--epochs and its limit stops it (a fast machine with a small --epochs anneals over the
epochs, a slow one over the minutes), and a larger limit on --resume stretches what is
left of it. A larger --epochs on --resume stretches N the same way.

Each rate is a pure function of a :class:`ScheduleState`, which the trainer saves in
every checkpoint, so a resumed run computes the rates the uninterrupted run would
have (except with a time limit, where the rates follow the clock, which no rerun
repeats). The state also keeps the lowest validation loss so far, which plateau
reads, the best checkpoint is chosen by, and ``--patience`` counts from (in epochs, but
at least PATIENCE_BATCHES batches: ``patience_epochs``). A run stopped by its time limit
is validated where it stopped, and that loss may become the best (``at_stop``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

PLATEAU_FACTOR = 4.0  # word_language_model divides by 4
WARMUP_SHARE = 10  # warm-up takes at most 1/10 of a run's planned batches
PATIENCE_BATCHES = 100  # --patience waits at least this many batches


@dataclass(frozen=True)
class ScheduleState:
    """Where the run stands, for its schedule, its best checkpoint and its time limit."""

    lr: float  # the rate plateau has reached (its divisions so far); the run's --lr otherwise
    batches: int = 0  # batches trained in the whole run: k above
    seconds: float = 0.0  # wall-clock seconds of training in the whole run, across resumes
    best_loss: float | None = None  # the lowest validation loss so far
    best_epoch: int = 0  # the epochs trained when it was reached (from 1; 0 before the first)
    # 0: at the end of epoch best_epoch; b > 0: b batches into the epoch after it, where
    # a time limit stopped the run and its validation there was the lowest
    best_batch: int = 0

    def to_json(self) -> dict:
        return {
            "lr": self.lr,
            "batches": self.batches,
            "seconds": self.seconds,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "best_batch": self.best_batch,
        }

    @property
    def best_epoch_ended(self) -> int:
        """The epoch (from 1) in which the best was reached: a part-epoch's best counts as
        its epoch's, so --patience counts the whole epochs after it."""
        return self.best_epoch + (1 if self.best_batch else 0)


def improves(state: ScheduleState, val_loss: float) -> bool:
    """Whether ``val_loss`` is lower than every validation loss before it."""
    return state.best_loss is None or val_loss < state.best_loss


def after_epoch(kind: str, state: ScheduleState, epoch: int, val_loss: float) -> ScheduleState:
    """The state after epoch ``epoch`` (from 1) ended with ``val_loss``.

    A new lowest loss becomes the best; under plateau any other loss divides the rate by 4.
    """
    if improves(state, val_loss):
        return replace(state, best_loss=val_loss, best_epoch=epoch, best_batch=0)
    if kind == "plateau":
        return replace(state, lr=state.lr / PLATEAU_FACTOR)
    return state


def at_stop(state: ScheduleState, epochs: int, batch: int, val_loss: float) -> ScheduleState:
    """The state after a time limit stopped the run ``batch`` batches into the epoch after
    ``epochs`` whole ones, with ``val_loss`` there: a new lowest loss becomes the best."""
    if improves(state, val_loss):
        return replace(state, best_loss=val_loss, best_epoch=epochs, best_batch=batch)
    return state


def warmup_for(warmup: int, planned: int) -> int:
    """The warm-up a run gets: ``warmup`` batches, but at most a tenth of the ``planned``
    ones (0: not known), so that a run of few batches is not all warm-up."""
    return min(warmup, planned // WARMUP_SHARE) if planned > 0 else warmup


def patience_epochs(patience: int, batches_per_epoch: int) -> int:
    """The epochs without a lower validation loss that end a run: ``patience``, but at
    least enough to hold PATIENCE_BATCHES batches, so that a text of few batches per
    epoch is not stopped by the noise of a handful of updates."""
    return max(patience, math.ceil(PATIENCE_BATCHES / max(1, batches_per_epoch)))


def cosine_progress(batch: int, warmup: int, planned: int) -> float:
    """p of the cosine decay at batch ``batch`` of ``planned``: (k − W) / (N − W) in [0, 1]."""
    return min(1.0, max(0.0, (batch - warmup) / max(1, planned - warmup)))


def time_progress(seconds: float, limit_seconds: float) -> float:
    """p of the cosine decay after ``seconds`` of a ``limit_seconds`` budget: s / S in [0, 1]."""
    return min(1.0, max(0.0, seconds / limit_seconds))


def cosine_rate(lr: float, batch: int, warmup: int, min_lr_frac: float, progress: float) -> float:
    """The cosine schedule's rate at batch ``batch``: warm-up, else decay at ``progress`` p."""
    if batch < warmup:
        return lr * (batch + 1) / (warmup + 1)
    floor = min_lr_frac * lr
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Schedule:
    """One run's schedule: its kind and settings, and what its decay runs over."""

    kind: str
    lr: float
    warmup: int = 0
    min_lr_frac: float = 0.0
    planned_batches: int = 0  # N: cosine over batches (0: not planned)
    limit_seconds: float | None = None  # S: cosine over the time limit too

    def rate(self, state: ScheduleState) -> float:
        """The rate of the next batch, number ``state.batches``, at ``state.seconds``."""
        if self.kind == "plateau":
            return state.lr
        if self.kind != "cosine":
            return self.lr
        by_batches = cosine_progress(state.batches, self.warmup, self.planned_batches)
        if self.limit_seconds is None:
            return cosine_rate(self.lr, state.batches, self.warmup, self.min_lr_frac, by_batches)
        # Over a time limit the batches are not known ahead: warm-up ends after --warmup
        # batches or a tenth of the limit, whichever comes first; then the decay follows the
        # clock, or the planned batches where they are ahead (the epochs end first).
        share = WARMUP_SHARE * state.seconds / self.limit_seconds
        if state.batches < self.warmup and share < 1.0:
            return self.lr * max((state.batches + 1) / (self.warmup + 1), share)
        progress = time_progress(state.seconds, self.limit_seconds)
        if self.planned_batches:
            progress = max(progress, by_batches)
        return cosine_rate(self.lr, state.batches, 0, self.min_lr_frac, progress)

    @property
    def per_batch(self) -> bool:
        """Whether the rate may change from one batch to the next (else only between epochs)."""
        return self.kind == "cosine"
