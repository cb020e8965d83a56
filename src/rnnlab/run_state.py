"""A run's state, piece by piece, as a checkpoint holds it.

A checkpoint is a mapping of named pieces: the weights, the optimizer, where the epoch
stands (with the carried hidden state), the schedule, the history, the config, the random
state and, with --ema, the weights being trained. Each :class:`Piece` says how its value is
written into the checkpoint's three files, how it is read back, and what its plain part must
look like to be trusted; ``rnnlab.checkpoint`` writes and verifies the files and knows no
piece. Adding a piece of state is one entry in :data:`PIECES` (and the line of the trainer
that puts it into the mapping it saves).

    model.safetensors     the weights ("weights")
    trainer.safetensors   every other piece's tensors, each under its prefix
    trainer.json          {"format": 2, and each piece's plain part under its name}

trainer.json format 2 added ``"schedule"``; format 1 (rnnlm 0.1, before schedules) is read
with ``schedule`` None, and rnnlab.restore rebuilds it from the history.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .options import MAX_LR
from .schedule import ScheduleState
from .train import EpochProgress

TRAINER_FORMAT = 2  # of trainer.json: 2 added "schedule"
TRAINER_FORMATS = (1, 2)  # the trainer.json formats this version reads
WEIGHTS, TENSORS = "weights", "tensors"  # the two tensor files: model.safetensors, trainer's


@dataclass(frozen=True)
class Piece:
    """One named piece of a checkpoint.

    ``dump(value) -> (plain, tensors)``: its part of trainer.json (ignored unless
    ``in_json``) and its tensors, named without the prefix. ``load(plain, tensors,
    trainer) -> value``: the value back, from its part of trainer.json, its tensors (prefix
    removed) and the whole trainer.json (for its format). ``valid(plain, trainer)``: whether
    its part of an untrusted trainer.json has the types and ranges this rnnlab writes.
    """

    name: str
    dump: Callable[[Any], tuple[Any, dict[str, torch.Tensor]]]
    load: Callable[[Any, dict[str, torch.Tensor], dict], Any]
    valid: Callable[[Any, dict], bool] = lambda plain, trainer: True
    in_json: bool = True  # whether trainer.json has an entry of its name
    file: str = TENSORS  # which tensor file holds its tensors
    prefix: str = ""  # the prefix of its tensors' names in that file
    finite: bool = False  # its tensors must be finite numbers to be saved
    required: bool = True  # whether trainer.json must have its entry


def number(value: Any, kind: type = float) -> bool:
    """Whether a JSON value is a finite number of ``kind`` (int: a whole number; never a
    bool) within what a training run can reach (below 2**63)."""
    if isinstance(value, bool):
        return False
    if kind is int:
        return isinstance(value, int) and abs(value) < 2**63
    return isinstance(value, (int, float)) and math.isfinite(value) and abs(value) < 2**63


# ---- each piece: how it is written, read back and checked ----


def _dump_progress(p: EpochProgress) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if p.state is None:
        kind, carry = "none", {}
    elif isinstance(p.state, tuple):
        kind, carry = "tuple", {str(i): s for i, s in enumerate(p.state)}
    else:
        kind, carry = "tensor", {"0": p.state}
    plain = {
        "batch": p.batch,
        "loss_sum": p.loss_sum,
        "tokens": p.tokens,
        "seconds": p.seconds,
        "last_finite_loss": p.last_finite_loss,
        "carry": kind,
    }
    return plain, carry


def _load_progress(p: dict, carry: dict[str, torch.Tensor], trainer: dict) -> EpochProgress:
    parts = [carry[k] for k in sorted(carry, key=int)]
    state = {"none": None, "tensor": parts[0] if parts else None, "tuple": tuple(parts)}
    return EpochProgress(
        batch=p["batch"],
        loss_sum=float(p["loss_sum"]),
        tokens=p["tokens"],
        seconds=float(p["seconds"]),
        state=state[p["carry"]],
        last_finite_loss=float(p["last_finite_loss"]),
    )


def _valid_progress(p: Any, trainer: dict) -> bool:
    last = p.get("last_finite_loss") if isinstance(p, dict) else None
    return (
        isinstance(p, dict)
        and all(number(p.get(k), int) and p[k] >= 0 for k in ("batch", "tokens"))
        and all(number(p.get(k)) for k in ("loss_sum", "seconds"))
        and (number(last) or (isinstance(last, float) and math.isnan(last)))  # nan: none yet
        and p.get("carry") in ("none", "tensor", "tuple")
    )


def _dump_optimizer(sd: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """An optimizer's state_dict split into JSON-able settings and named tensors."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for idx, entries in sd["state"].items():
        plain[str(idx)] = {}
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value
            else:
                plain[str(idx)][key] = value
    return {"param_groups": sd["param_groups"], "state": plain}, tensors


def _load_optimizer(plain: dict, tensors: dict[str, torch.Tensor], trainer: dict) -> dict:
    optimizer = {
        "param_groups": plain["param_groups"],
        "state": {int(i): dict(v) for i, v in plain["state"].items()},
    }
    for key, tensor in tensors.items():
        idx, name = key.split(".", 1)
        optimizer["state"].setdefault(int(idx), {})[name] = tensor
    return optimizer


def _valid_optimizer(plain: Any, trainer: dict) -> bool:
    return (
        isinstance(plain, dict)
        and isinstance(plain.get("param_groups"), list)
        and all(isinstance(g, dict) for g in plain["param_groups"])
        and isinstance(plain.get("state"), dict)
        and all(isinstance(v, dict) for v in plain["state"].values())
    )


def _load_schedule(plain: Any, tensors: dict, trainer: dict) -> ScheduleState | None:
    if trainer["format"] < 2:
        return None  # format 1: before schedules (rnnlab.restore.clock_of_format_1)
    return ScheduleState(
        lr=float(plain["lr"]),
        batches=plain["batches"],
        seconds=float(plain["seconds"]),
        best_loss=None if plain["best_loss"] is None else float(plain["best_loss"]),
        best_epoch=plain["best_epoch"],
        best_batch=plain.get("best_batch", 0),  # written since a time limit's stop is validated
    )


def _valid_schedule(schedule: Any, trainer: dict) -> bool:
    """Whether trainer.json's "schedule" has the types and ranges of a ScheduleState."""
    if trainer["format"] < 2:
        return True
    if not isinstance(schedule, dict):
        return False
    best_loss, best_epoch = schedule.get("best_loss"), schedule.get("best_epoch")
    best_batch = schedule.get("best_batch", 0)
    return (
        number(schedule.get("lr"))
        and 0 <= schedule["lr"] <= MAX_LR
        and number(schedule.get("batches"), int)
        and schedule["batches"] >= 0
        and number(schedule.get("seconds"))
        and schedule["seconds"] >= 0
        and (best_loss is None or number(best_loss))
        and number(best_epoch, int)
        and 0 <= schedule["best_epoch"] <= trainer["epoch"]
        and number(best_batch, int)
        and best_batch >= 0
        and (best_loss is None) == (best_epoch == 0 and best_batch == 0)
    )


def _valid_history(history: Any, trainer: dict) -> bool:
    return isinstance(history, list) and all(
        isinstance(r, dict)
        and number(r.get("epoch"), int)
        and 1 <= r["epoch"] <= 10**6
        and all(number(r.get(k)) and 0 < r[k] < 1e305 for k in ("train_ppl", "val_ppl"))
        for r in history
    )


def _tensors_only(prefix: str = "") -> tuple[Callable, Callable]:
    """(dump, load) of a piece that is a mapping of named tensors (None: an empty one)."""

    def dump(value):
        return None, dict(value or {})

    def load(plain, tensors, trainer):
        return {prefix + k: v for k, v in tensors.items()}

    return dump, load


def _plain(dump_value=lambda v: v) -> tuple[Callable, Callable]:
    """(dump, load) of a piece held in trainer.json alone."""
    return (lambda v: (dump_value(v), {})), (lambda plain, tensors, trainer: plain)


_weights = _tensors_only()
_rng = _tensors_only("rng.")
_trained_dump, _ = _tensors_only()


def _load_trained(plain, tensors, trainer):
    return dict(tensors) or None


PIECES: tuple[Piece, ...] = (
    Piece("epoch", *_plain(), valid=lambda e, t: number(e, int) and e >= 0),
    Piece("progress", _dump_progress, _load_progress, _valid_progress, prefix="carry."),
    Piece(
        "optimizer",
        _dump_optimizer,
        _load_optimizer,
        _valid_optimizer,
        prefix="optim.",
        finite=True,
    ),  # fmt: skip
    Piece(
        "schedule", lambda s: (s.to_json(), {}), _load_schedule, _valid_schedule, required=False
    ),  # fmt: skip
    Piece("history", *_plain(list), valid=_valid_history),
    Piece("config", *_plain(), valid=lambda c, t: isinstance(c, dict), required=False),
    Piece("weights", *_weights, in_json=False, file=WEIGHTS, finite=True),
    # this process' random states, and in a data-parallel run every rank's ("rng.rank.R.")
    Piece(
        "rng",
        lambda rng: (None, {k[len("rng.") :]: v for k, v in rng.items()}),
        _rng[1],
        in_json=False,
        prefix="rng.",
    ),  # fmt: skip
    # --ema: the weights being trained ("weights" holds their average); None without it
    Piece(
        "training_weights",
        _trained_dump,
        _load_trained,
        in_json=False,
        prefix="train.",
        finite=True,
    ),  # fmt: skip
)


def dump(state: Mapping[str, Any]) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """The files of ``state`` (piece name -> value): ({WEIGHTS: tensors, TENSORS: tensors},
    trainer.json's object). Raises ValueError naming a piece whose tensors are not finite."""
    files: dict[str, dict[str, torch.Tensor]] = {WEIGHTS: {}, TENSORS: {}}
    trainer: dict[str, Any] = {"format": TRAINER_FORMAT}
    for piece in PIECES:
        plain, tensors = piece.dump(state[piece.name])
        if piece.finite and not _all_finite(tensors.values()):
            raise ValueError(piece.name)
        if piece.in_json:
            trainer[piece.name] = plain
        files[piece.file].update({piece.prefix + k: v for k, v in tensors.items()})
    return files, trainer


def load(files: Mapping[str, dict[str, torch.Tensor]], trainer: Any) -> dict[str, Any]:
    """The state (piece name -> value) of a checkpoint's files, after checking trainer.json's
    plain parts; raises ValueError (or KeyError, TypeError) where they are not this rnnlab's."""
    if not (
        isinstance(trainer, dict)
        and number(trainer.get("format"), int)
        and trainer["format"] in TRAINER_FORMATS
    ):
        raise ValueError("trainer.json")
    for piece in PIECES:
        if piece.in_json and (piece.required or piece.name in trainer):
            if not piece.valid(trainer.get(piece.name), trainer):
                raise ValueError(piece.name)
    state = {}
    for piece in PIECES:
        tensors = {
            k[len(piece.prefix) :]: v
            for k, v in files[piece.file].items()
            if k.startswith(piece.prefix) and (piece.prefix or piece.file == WEIGHTS)
        }
        default: Any = {} if piece.name == "config" else None
        state[piece.name] = piece.load(trainer.get(piece.name, default), tensors, trainer)
    return state


def _all_finite(tensors) -> bool:
    flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


# ---- the random state, a piece of its own ----


def rng_state() -> dict[str, torch.Tensor]:
    """This process's random-number states, named as a checkpoint stores them."""
    rng = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return rng


def rng_of_ranks(own: dict[str, torch.Tensor], ranks: list | None) -> dict[str, torch.Tensor]:
    """The "rng" piece: this process' states, and in a data-parallel run every rank's
    (``ranks``: rng_state() of each, in rank order) under "rng.rank.R."."""
    rng = dict(own)
    for rank, states in enumerate(ranks or ()):
        rng.update({f"rng.rank.{rank}.{k[len('rng.') :]}": v for k, v in states.items()})
    return rng


def rng_of_rank(rng: dict[str, torch.Tensor], rank: int, size: int) -> dict[str, torch.Tensor]:
    """The states rank ``rank`` of ``size`` processes resumes from: its own where the
    checkpoint was written by as many processes, else the run's own (rank 0's; all ranks
    of a run draw alike, so they hold the same)."""
    prefix = f"rng.rank.{rank}."
    written_by = sum(1 for k in rng if k.startswith("rng.rank.") and k.endswith(".torch"))
    if written_by == size and prefix + "torch" in rng:
        return {"rng." + k[len(prefix) :]: v for k, v in rng.items() if k.startswith(prefix)}
    return {k: v for k, v in rng.items() if not k.startswith("rng.rank.")}


def restore_rng(rng: dict[str, torch.Tensor]) -> None:
    if "rng.torch" in rng:
        torch.set_rng_state(rng["rng.torch"])
    cuda = [rng[k] for k in sorted(rng) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
