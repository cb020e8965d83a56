"""What a checkpoint must satisfy before a run resumes from it, and its older format.

A checkpoint is untrusted input (a damaged disk, an edited file, another version's run):
``rnnlab.checkpoint`` verifies its files against their manifest and the shapes of its
weights; this module checks the rest of what a resume loads: the optimizer's settings and
per-parameter state (:func:`optimizer_state_problem`), and the carried hidden state
(:func:`state_fits`), and where the checkpoint stands in the run (:func:`position_problem`).
:func:`clock_of_format_1` rebuilds the schedule's state of a
checkpoint written before there were schedules (trainer.json format 1, rnnlm 0.1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from .checkpoint import Checkpoint
from .models.cells import state_parts
from .schedule import ScheduleState, improves

MAX_OPTIMIZER_SETTING = 1e9  # no rate, decay, momentum or epsilon of an optimizer comes near


def optimizer_state_problem(saved: dict[str, Any], optimizer) -> str | None:
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


def state_fits(state, expected) -> bool:
    """Whether a carried state has the parts, shapes and dtypes of ``expected`` (a fresh
    ``begin_state``): (L, B, H) per part (one, h, or several, as the LSTM's (h, c))."""
    parts, want = state_parts(state), state_parts(expected)
    return len(parts) == len(want) and all(
        p.shape == w.shape and p.dtype == w.dtype for p, w in zip(parts, want)
    )


def position_problem(
    ckpt: Checkpoint, batches_in: Callable[[int], int], tokens_per_batch: int
) -> str | None:
    """What in ``ckpt``'s position does not fit the run it belongs to; None if all does.

    ``batches_in(e)``: the batches epoch ``e`` (0-based) of the run has;
    ``tokens_per_batch``: B * T. The types and signs were checked on reading; these are
    the ranges only the run knows: a history of epochs 1..epoch, an epoch within the
    run's epochs, a batch within its epoch, no more tokens than its batches hold, and a
    schedule that has not counted more batches than were trained.
    """
    epoch, batch, tokens = ckpt.epoch, ckpt.progress.batch, ckpt.progress.tokens
    epochs = ckpt.config.get("epochs")
    if isinstance(epochs, int) and not isinstance(epochs, bool) and epoch > epochs:
        return f"is at epoch {epoch} of a run of {epochs} epochs"
    if [record["epoch"] for record in ckpt.history] != list(range(1, epoch + 1)):
        return f"is at epoch {epoch} but its history does not list epochs 1 to {epoch}"
    if batch > 0:
        in_epoch = batches_in(epoch)
        if batch >= in_epoch:
            return f"is at batch {batch} of epoch {epoch + 1}, which has {in_epoch} batches"
    if tokens > batch * tokens_per_batch:
        return f"counts {tokens} tokens in {batch} batches of {tokens_per_batch} tokens"
    if ckpt.schedule is not None:
        trained = sum(batches_in(e) for e in range(epoch)) + batch
        if ckpt.schedule.batches > trained:
            return (
                f"has a schedule that counted {ckpt.schedule.batches} batches where "
                f"{trained} were trained"
            )
        best_at = (ckpt.schedule.best_epoch, ckpt.schedule.best_batch)
        if best_at > (epoch, batch) or best_at[1] >= batches_in(best_at[0]):
            return (
                f"names its best at batch {best_at[1]} after epoch {best_at[0]}, which the run "
                f"at epoch {epoch}, batch {batch} has not reached"
            )
    return None


def clock_of_format_1(
    ckpt: Checkpoint, lr: float, batches_before: Callable[[int], int]
) -> ScheduleState:
    """The schedule's state of a checkpoint written before schedules (constant ones, at
    ``lr``), from its history: the batches (``batches_before(epoch)`` plus the epoch's
    own) and seconds trained, and the lowest validation loss."""
    clock = ScheduleState(
        lr=lr,
        batches=batches_before(ckpt.epoch) + ckpt.progress.batch,
        seconds=ckpt.progress.seconds + sum(_finite(r.get("seconds")) or 0.0 for r in ckpt.history),
    )
    for record in ckpt.history:
        loss = _finite(record.get("val_loss"))
        if loss is None:
            loss = math.log(record["val_ppl"])  # checked: a positive finite number
        if improves(clock, loss):
            clock = replace(clock, best_loss=loss, best_epoch=record["epoch"])
    return clock


def _finite(value: Any) -> float | None:
    """A JSON value as a finite non-negative float, or None if it is not one."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) and value >= 0 else None
