"""The checkpoint format and its verification.

    RUN_DIR/checkpoint.json        {"current": "checkpoints/gen-000012", "generation": 12,
                                    "manifest_sha256": ...}
    RUN_DIR/checkpoints/gen-000012/
      model.safetensors    the weights (safetensors: data, no pickle)
      trainer.safetensors  optimizer tensors, the carried hidden state, RNG states
      trainer.json         epoch and batch position, partial epoch sums, optimizer
                           settings, the schedule's state, metrics history, the config
                           it was trained with
      manifest.json        sha256 of each file above and of vocab.json
    RUN_DIR/best.json              the same pointer, to the best checkpoint
    RUN_DIR/best/gen-000011/       the checkpoint of the epoch with the lowest validation
                                   loss so far: the same four files

A checkpoint is written whole into a new folder, then ``checkpoint.json`` is
switched to it in one atomic rename; until then the previous one is current.
The best checkpoint is a second series of the same folders behind its own pointer
(:data:`BEST`), written, switched and verified the same way, just before the epoch's
own checkpoint, when that epoch's validation loss is the lowest so far.
Loading checks every file against the manifest, so a truncated or flipped byte
is reported instead of trained on. Design notes: docs/run-directory.md.

trainer.json format 2 added ``"schedule"`` (:class:`rnnlab.schedule.ScheduleState`);
format 1, written before it, is still read (its ``schedule`` is None).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import files, rundir
from .config import MAX_LR, TrainConfig, conflicts, flag
from .errors import RnnlabError
from .models import build_model, check_fits, parameter_count
from .rundir import (
    BEST_FOLDER,
    BEST_POINTER,
    CHECKPOINTS,
    CONFIG,
    MODEL,
    POINTER,
    VOCAB,
    VOCAB_LIMIT,
)
from .schedule import ScheduleState
from .train import EpochProgress, NonFiniteError

TRAINER_TENSORS, TRAINER_JSON, MANIFEST = ("trainer.safetensors", "trainer.json", "manifest.json")
FORMAT = 1  # of manifest.json
TRAINER_FORMAT = 2  # of trainer.json: 2 added "schedule"
TRAINER_FORMATS = (1, 2)  # the trainer.json formats this version reads
DAMAGED_RUN = "the run directory is damaged: restore it from a backup, or train again"
# Limits on what is read from a run directory (a hostile file must not exhaust memory).
POINTER_LIMIT, MANIFEST_LIMIT = 4 * files.KIB, 64 * files.KIB
TENSORS_SLACK = 16 * files.MIB  # safetensors headers, RNG states and the carried state's room
READ_ATTEMPTS = 5  # a reader racing a training process retries this often


@dataclass(frozen=True)
class Slot:
    """One series of checkpoints: its pointer file and its folder of gen-NNNNNN folders."""

    pointer: str  # RUN/checkpoint.json
    folder: str  # RUN/checkpoints
    name: str  # how messages call it

    @property
    def pattern(self) -> re.Pattern:
        """The only folders its pointer may name: FOLDER/gen-NNNNNN."""
        return re.compile(re.escape(self.folder) + r"/gen-(\d{6})")


LATEST = Slot(POINTER, CHECKPOINTS, "checkpoint")
BEST = Slot(BEST_POINTER, BEST_FOLDER, "best checkpoint")
SLOTS = {"latest": LATEST, "best": BEST}  # by config.CHECKPOINT_CHOICES


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- saving


def _all_finite(tensors) -> bool:
    flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def _carry_tensors(state) -> tuple[str, dict[str, torch.Tensor]]:
    if state is None:
        return "none", {}
    if isinstance(state, tuple):
        return "tuple", {f"carry.{i}": s for i, s in enumerate(state)}
    return "tensor", {"carry.0": state}


def _optimizer_parts(optimizer) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Split an optimizer state dict into JSON-able settings and named tensors."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for idx, entries in sd["state"].items():
        plain[str(idx)] = {}
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                plain[str(idx)][key] = value
    return {"param_groups": sd["param_groups"], "state": plain}, tensors


def _cpu_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors sharing memory (tied weights), and a GPU
    # tensor must come to the host to be written.
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def save_checkpoint(
    run: Path,
    model,
    optimizer,
    epoch: int,
    progress: EpochProgress,
    history: list[dict[str, Any]],
    cfg: TrainConfig,
    schedule: ScheduleState | None = None,
    *,
    best: bool = False,
    rng_of_ranks: list[dict[str, torch.Tensor]] | None = None,
    training_weights: dict[str, torch.Tensor] | None = None,
) -> int:
    """Write a new checkpoint and make it the current one; returns its generation number.

    ``epoch`` is the epoch in progress (0-based) and ``progress`` how far it got;
    at an epoch's end pass epoch + 1 and a fresh EpochProgress. ``schedule``: where the
    run stands (default: at its start, at ``cfg.lr``). ``best``: the same checkpoint
    becomes the best one first (:data:`BEST`). Refuses (NonFiniteError) to write
    weights or optimizer state that are not finite numbers. ``rng_of_ranks``: in a
    data-parallel run, :func:`rng_state` of every rank, in rank order (this process's
    is also stored as the run's own). ``training_weights``: with --ema, the weights being
    trained, while ``model`` holds the averaged ones (rnnlab.average): the model file gets
    the averaged weights, the trainer's tensors these.
    """
    run = Path(run)
    weights = dict(model.state_dict())
    trained = {f"train.{k}": v for k, v in (training_weights or {}).items()}
    opt_plain, opt_tensors = _optimizer_parts(optimizer)
    if not _all_finite([*weights.values(), *trained.values(), *opt_tensors.values()]):
        raise NonFiniteError(
            f"the weights are no longer finite numbers at epoch {epoch + 1}, "
            f"batch {progress.batch}; the previous checkpoint is kept: lower "
            f"--lr or --clip and train again"
        )
    carry_kind, carry = _carry_tensors(progress.state)
    rng = rng_state()
    for rank, states in enumerate(rng_of_ranks or ()):
        rng.update({f"rng.rank.{rank}.{k[len('rng.') :]}": v for k, v in states.items()})
    schedule = schedule if schedule is not None else ScheduleState(lr=cfg.lr)
    trainer = {
        "format": TRAINER_FORMAT,
        "epoch": epoch,
        "progress": {
            "batch": progress.batch,
            "loss_sum": progress.loss_sum,
            "tokens": progress.tokens,
            "seconds": progress.seconds,
            "last_finite_loss": progress.last_finite_loss,
            "carry": carry_kind,
        },
        "optimizer": opt_plain,
        "schedule": schedule.to_json(),
        "history": history,
        "config": cfg.to_dict(),
    }
    blobs = {
        MODEL: st_save(_cpu_tensors(weights)),
        TRAINER_TENSORS: st_save(_cpu_tensors({**opt_tensors, **carry, **rng, **trained})),
        TRAINER_JSON: json_bytes(trainer),
    }
    try:
        vocab_sha = sha256(files.read_regular(run / VOCAB, VOCAB_LIMIT))
        if best:  # first: a crash between the two then redoes the epoch, best included
            _write_generation(run, BEST, blobs, epoch, progress.batch, vocab_sha)
        generation, previous = _write_generation(
            run, LATEST, blobs, epoch, progress.batch, vocab_sha
        )
    except OSError as e:
        raise rundir.write_error(run, e) from None
    _after_switch(run, generation, previous, blobs[MODEL])
    return generation


def _write_generation(
    run: Path, slot: Slot, blobs: dict[str, bytes], epoch: int, batch: int, vocab_sha: str
) -> tuple[int, int]:
    """Write ``blobs`` whole as a new folder of ``slot`` and switch its pointer to it.

    Returns (its generation, the one current before). Then deletes all but those two.
    """
    folder_of_slot = checkpoints_folder(run, create=True, slot=slot)
    # Numbered past every folder there, so that no save ever writes into (or deletes)
    # a folder that may hold a complete checkpoint, even one the pointer has lost.
    try:
        previous = current_generation(run, slot)
    except RnnlabError:
        if slot is LATEST:
            raise
        previous = 0  # a damaged best.json is replaced: the new best supersedes what it named
    generation = max([*generations(run, slot), previous], default=0) + 1
    folder = folder_of_slot / f"gen-{generation:06d}"
    folder.mkdir()
    for name, data in blobs.items():
        files.atomic_write(folder / name, data)
    manifest = {
        "format": FORMAT,
        "generation": generation,
        "epoch": epoch,
        "batch": batch,
        "vocab_sha256": vocab_sha,
        "files": {name: sha256(data) for name, data in blobs.items()},
    }
    manifest_bytes = json_bytes(manifest)
    files.atomic_write(folder / MANIFEST, manifest_bytes)
    files.fsync_dir(folder_of_slot)
    # The switch: from here on the new checkpoint is the current one.
    write_pointer(run, generation, manifest_bytes, slot)
    if slot is not LATEST:
        _prune(run, slot, {generation, previous})
    return generation, previous


def write_pointer(run: Path, generation: int, manifest_bytes: bytes, slot: Slot = LATEST) -> None:
    """Make checkpoint ``generation`` (with this manifest) the current one, atomically."""
    pointer = {
        "current": f"{slot.folder}/gen-{generation:06d}",
        "generation": generation,
        "manifest_sha256": sha256(manifest_bytes),
    }
    files.atomic_write(Path(run) / slot.pointer, json_bytes(pointer))


def _after_switch(run: Path, generation: int, previous: int, weights: bytes) -> None:
    """Copy the current weights to RUN/model.safetensors; delete all but the last two checkpoints.

    The copy is a file of its own, so that writing over it never touches a checkpoint.
    Best effort: a failure here leaves the new checkpoint current and complete.
    """
    try:
        files.atomic_write(run / MODEL, weights)
    except OSError:
        pass
    _prune(run, LATEST, {generation, previous})


def _prune(run: Path, slot: Slot, keep: set[int]) -> None:
    """Delete the folders of ``slot`` but ``keep`` (best effort).

    The previous checkpoint stays until the next switch, so that a reader (generate,
    eval) that read the pointer just before this switch still finds its files; folders
    of saves killed before their switch go too.
    """
    try:
        numbers = generations(run, slot)
    except RnnlabError:
        return
    for number in numbers:
        if number not in keep:
            _remove_folder(Path(run) / slot.folder / f"gen-{number:06d}")


def _remove_folder(folder: Path) -> None:
    """Delete a checkpoint folder; never through a symbolic link (a link is only unlinked)."""
    try:
        if folder.is_symlink():
            folder.unlink()
        elif folder.is_dir():
            shutil.rmtree(folder)  # rmtree does not follow links inside the folder
    except OSError:
        pass


def checkpoints_folder(run: Path, create: bool = False, slot: Slot = LATEST) -> Path:
    """RUN/checkpoints (or RUN/best): a real folder, as rnnlab never writes or deletes
    through a link."""
    folder = Path(run) / slot.folder
    if folder.is_symlink():
        raise RnnlabError(
            f"{folder} is a symbolic link; rnnlab does not write or delete checkpoints through "
            f"links: replace it with a folder (move its contents into one)"
        )
    if create:
        folder.mkdir(exist_ok=True)
    return folder


def generations(run: Path, slot: Slot = LATEST) -> list[int]:
    """The numbers of the checkpoint folders (real folders named gen-NNNNNN), in order."""
    folder = checkpoints_folder(run, slot=slot)
    if not folder.is_dir():
        return []
    numbers = []
    for entry in folder.iterdir():
        match = slot.pattern.fullmatch(f"{slot.folder}/{entry.name}")
        if match and entry.is_dir() and not entry.is_symlink():
            numbers.append(int(match.group(1)))
    return sorted(numbers)


def current_generation(run: Path, slot: Slot = LATEST) -> int:
    """The generation checkpoint.json (best.json) points to; 0 where there is no pointer."""
    return read_pointer(run, slot)["generation"] if has_checkpoint(run, slot) else 0


# ---------------------------------------------------------------- loading


def _damaged(path: Path, what: str) -> RnnlabError:
    return RnnlabError(
        f"{path} {what}; the checkpoint cannot be used: restore the run directory "
        f"from a backup, or train again (a new --out, or delete {path.parent})"
    )


def has_checkpoint(run: Path, slot: Slot = LATEST) -> bool:
    """Whether ``run`` has a current checkpoint (its pointer, checkpoint.json or best.json)."""
    return (Path(run) / slot.pointer).exists()


def _no_checkpoint(run: Path) -> RnnlabError:
    return RnnlabError(
        f"{run} has no checkpoint (checkpoint.json is missing: training stopped before "
        f"saving one, or it was deleted); train it (again) with: rnnlab train --out {run}"
        f"{' --resume' if rundir.has_run(run) else ''}"
    )


def read_pointer(run: Path, slot: Slot = LATEST) -> dict[str, Any]:
    """checkpoint.json (best.json): which checkpoint folder is current, and its manifest's
    sha256.

    The folder it names must be RUN/checkpoints/gen-NNNNNN (RUN/best/gen-NNNNNN), a real
    folder inside the run directory: a pointer cannot lead outside it.
    """
    path = Path(run) / slot.pointer
    try:
        data = files.read_json(path, DAMAGED_RUN, limit=POINTER_LIMIT)
    except FileNotFoundError:
        raise _no_checkpoint(run) from None
    except OSError as e:
        raise RnnlabError(f"cannot read {path} ({e.strerror or e}); {DAMAGED_RUN}") from None
    current = data.get("current") if isinstance(data, dict) else None
    match = slot.pattern.fullmatch(current) if isinstance(current, str) else None
    if not (
        match
        and type(data.get("generation")) is int
        and int(match.group(1)) == data["generation"]
        and isinstance(data.get("manifest_sha256"), str)
    ):
        raise RnnlabError(f"{path} is damaged (not the pointer rnnlab writes); {DAMAGED_RUN}")
    folder = checkpoints_folder(run, slot=slot) / f"gen-{data['generation']:06d}"
    if folder.is_symlink():
        raise RnnlabError(
            f"{folder} is a symbolic link; a checkpoint must be a folder inside the run "
            f"directory: {DAMAGED_RUN}"
        )
    return data


@dataclass
class Checkpoint:
    """A verified checkpoint, read into memory (tensors on the CPU)."""

    generation: int
    epoch: int
    progress: EpochProgress
    history: list[dict[str, Any]]
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    schedule: ScheduleState | None = None  # None: trainer.json format 1, before schedules
    which: str = "latest"  # the series it was read from: a key of SLOTS
    # --ema: the weights being trained (``weights`` holds their average); None without it
    training_weights: dict[str, torch.Tensor] | None = None


class _Vanished(Exception):
    """A file of the checkpoint being read is gone: a training process moved on meanwhile."""


def _read_verified(path: Path, expected_sha: Any, limit: int) -> bytes:
    try:
        data = files.read_regular(path, limit, DAMAGED_RUN)
    except FileNotFoundError:
        raise _Vanished(path) from None
    except OSError as e:
        raise _damaged(path, f"cannot be read ({e.strerror or e})") from None
    if sha256(data) != expected_sha:
        raise _damaged(
            path, "is corrupted or truncated (its sha256 does not match the checkpoint's manifest)"
        )
    return data


def _number(value: Any, kind: type = float) -> bool:
    """Whether a JSON value is a finite number of ``kind`` (int: a whole number; never a
    bool) within what a training run can reach (below 2**63)."""
    if isinstance(value, bool):
        return False
    if kind is int:
        return isinstance(value, int) and abs(value) < 2**63
    return isinstance(value, (int, float)) and math.isfinite(value) and abs(value) < 2**63


def _check_schedule(schedule: Any, epoch: int) -> bool:
    """Whether trainer.json's "schedule" has the types and ranges of a ScheduleState."""
    if not isinstance(schedule, dict):
        return False
    best_loss, best_epoch = schedule.get("best_loss"), schedule.get("best_epoch")
    best_batch = schedule.get("best_batch", 0)  # written since a time limit's stop is validated
    return (
        _number(schedule.get("lr"))
        and 0 <= schedule["lr"] <= MAX_LR
        and _number(schedule.get("batches"), int)
        and schedule["batches"] >= 0
        and _number(schedule.get("seconds"))
        and schedule["seconds"] >= 0
        and (best_loss is None or _number(best_loss))
        and _number(best_epoch, int)
        and 0 <= schedule["best_epoch"] <= epoch
        and _number(best_batch, int)
        and best_batch >= 0
        and (best_loss is None) == (best_epoch == 0 and best_batch == 0)
    )


def _check_trainer_json(trainer: Any) -> None:
    """Raise ValueError unless trainer.json has the types and ranges this rnnlab writes."""
    progress = trainer.get("progress") if isinstance(trainer, dict) else None
    optimizer = trainer.get("optimizer") if isinstance(trainer, dict) else None
    history = trainer.get("history") if isinstance(trainer, dict) else None
    last = progress.get("last_finite_loss") if isinstance(progress, dict) else None
    ok = (
        isinstance(progress, dict)
        and _number(trainer.get("format"), int)
        and trainer["format"] in TRAINER_FORMATS
        and _number(trainer.get("epoch"), int)
        and trainer["epoch"] >= 0
        and (trainer["format"] == 1 or _check_schedule(trainer.get("schedule"), trainer["epoch"]))
        and all(_number(progress.get(k), int) and progress[k] >= 0 for k in ("batch", "tokens"))
        and all(_number(progress.get(k)) for k in ("loss_sum", "seconds"))
        and (_number(last) or (isinstance(last, float) and math.isnan(last)))  # nan: none yet
        and progress.get("carry") in ("none", "tensor", "tuple")
        and isinstance(optimizer, dict)
        and isinstance(optimizer.get("param_groups"), list)
        and all(isinstance(g, dict) for g in optimizer["param_groups"])
        and isinstance(optimizer.get("state"), dict)
        and all(isinstance(v, dict) for v in optimizer["state"].values())
        and isinstance(history, list)
        and all(
            isinstance(r, dict)
            and _number(r.get("epoch"), int)
            and 1 <= r["epoch"] <= 10**6
            and all(_number(r.get(k)) and 0 < r[k] < 1e305 for k in ("train_ppl", "val_ppl"))
            for r in history
        )
        and isinstance(trainer.get("config", {}), dict)
    )
    if not ok:
        raise ValueError("trainer.json")


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


def tensors_limit(cfg: TrainConfig, vocab_size: int) -> int:
    """The most bytes a checkpoint's tensor file of a run of ``cfg`` can hold.

    Weights: 4 bytes per parameter; trainer tensors: at most two optimizer copies of
    them (and the weights being trained, with --ema) plus the carried state (L, B, H),
    twice for the LSTM.
    """
    weights = 4 * parameter_count(cfg.model, vocab_size)
    carry = 2 * 4 * cfg.model.layers * cfg.batch_size * cfg.model.hidden
    return (4 if cfg.ema else 3) * weights + carry + TENSORS_SLACK


def _tensors_limit_of(run: Path) -> int:
    return tensors_limit(rundir.read_config(run), len(rundir.read_vocab(run)))


def _read_generation(
    run: Path, generation: int, manifest_sha: Any, limit: int, slot: Slot = LATEST
) -> Checkpoint:
    """Read and verify checkpoint ``generation`` of ``run`` against its manifest's sha256.

    ``limit``: the most bytes each tensor file may have (:func:`tensors_limit`).
    """
    folder = checkpoints_folder(run, slot=slot) / f"gen-{generation:06d}"
    manifest_bytes = _read_verified(folder / MANIFEST, manifest_sha, MANIFEST_LIMIT)
    manifest = files.parse_json(manifest_bytes, folder / MANIFEST, DAMAGED_RUN)
    try:
        listed = manifest["files"]
        if type(manifest["generation"]) is not int or manifest["generation"] != generation:
            raise _damaged(run / slot.pointer, "does not agree with the checkpoint it points to")
        if not isinstance(listed, dict):
            raise _damaged(run / slot.pointer, "does not agree with the checkpoint it points to")
        blobs = {
            name: _read_verified(folder / name, listed[name], limit)
            for name, limit in (
                (MODEL, limit),
                (TRAINER_TENSORS, limit),
                (TRAINER_JSON, files.JSON_LIMIT),
            )
        }
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise _damaged(folder / MANIFEST, "is not a valid manifest") from None
    try:
        vocab_bytes = files.read_regular(run / VOCAB, VOCAB_LIMIT, DAMAGED_RUN)
    except OSError:
        raise RnnlabError(f"{run} has no readable vocab.json; restore it or train again") from None
    if sha256(vocab_bytes) != manifest.get("vocab_sha256"):
        raise RnnlabError(
            f"{run / VOCAB} is not the vocabulary this checkpoint was trained with "
            f"(it belongs to another run, or it was edited or damaged); restore the "
            f"original vocab.json, or train again"
        )
    try:
        weights = st_load(blobs[MODEL])
        extra = st_load(blobs[TRAINER_TENSORS])
        trainer = files.parse_json(blobs[TRAINER_JSON], folder / TRAINER_JSON, DAMAGED_RUN)
        _check_trainer_json(trainer)
        p = trainer["progress"]
        carry = [extra[k] for k in sorted(k for k in extra if k.startswith("carry."))]
        state = {"none": None, "tensor": carry[0] if carry else None, "tuple": tuple(carry)}[
            p["carry"]
        ]
        progress = EpochProgress(
            batch=p["batch"],
            loss_sum=float(p["loss_sum"]),
            tokens=p["tokens"],
            seconds=float(p["seconds"]),
            state=state,
            last_finite_loss=float(p["last_finite_loss"]),
        )
        optimizer = {
            "param_groups": trainer["optimizer"]["param_groups"],
            "state": {int(i): dict(v) for i, v in trainer["optimizer"]["state"].items()},
        }
        for key, tensor in extra.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                optimizer["state"].setdefault(int(idx), {})[name] = tensor
        rng = {k: v for k, v in extra.items() if k.startswith("rng.")}
        trained = {k[len("train.") :]: v for k, v in extra.items() if k.startswith("train.")}
        schedule = trainer.get("schedule") if trainer["format"] >= 2 else None
        return Checkpoint(
            generation,
            trainer["epoch"],
            progress,
            list(trainer["history"]),
            weights,
            optimizer,
            rng,
            dict(trainer.get("config") or {}),
            None
            if schedule is None
            else ScheduleState(
                lr=float(schedule["lr"]),
                batches=schedule["batches"],
                seconds=float(schedule["seconds"]),
                best_loss=None if schedule["best_loss"] is None else float(schedule["best_loss"]),
                best_epoch=schedule["best_epoch"],
                best_batch=schedule.get("best_batch", 0),
            ),
            next(k for k, v in SLOTS.items() if v is slot),
            trained or None,
        )
    except (
        SafetensorError,
        ValueError,
        KeyError,
        TypeError,
        IndexError,
        AttributeError,
        RecursionError,
    ):
        # The sha256 matched, so these files were written like this: not by this rnnlab.
        raise _damaged(folder, "holds a checkpoint this version of rnnlab cannot read") from None


def read_checkpoint(run: Path, limit: int | None = None, slot: Slot = LATEST) -> Checkpoint:
    """Read and verify the current checkpoint of ``run``; RnnlabError says what is wrong.

    Safe while a training process saves: if the checkpoint read is replaced (and its
    files deleted) meanwhile, the read starts again from the new pointer. ``limit``:
    :func:`tensors_limit` of the run, where the caller has read its config already.
    ``slot``: BEST reads the best checkpoint instead.
    """
    run = Path(run)
    limit = _tensors_limit_of(run) if limit is None else limit
    for _ in range(READ_ATTEMPTS):
        pointer = read_pointer(run, slot)
        try:
            return _read_generation(
                run, pointer["generation"], pointer["manifest_sha256"], limit, slot
            )
        except _Vanished as gone:
            if read_pointer(run, slot) == pointer:  # nothing moved on: the file is missing
                raise _damaged(gone.args[0], "is missing") from None
    raise RnnlabError(
        f"the checkpoint of {run} was replaced {READ_ATTEMPTS} times while it was read (a "
        f"training process is saving very often); try again, or raise --checkpoint-every"
    )


def recover(run: Path, limit: int | None = None, slot: Slot = LATEST) -> Checkpoint | None:
    """The newest complete checkpoint of ``run`` when checkpoint.json (best.json) is
    missing (else None).

    Each checkpoint folder, newest first, is verified against its own manifest; the first
    that verifies is returned. None where no folder was ever completed (every save was
    killed before writing its manifest). A folder that was complete but no longer verifies
    is an RnnlabError: nothing is written or deleted, and nothing is started over.
    """
    run = Path(run)
    limit = _tensors_limit_of(run) if limit is None else limit
    damaged = []
    for generation in reversed(generations(run, slot)):
        folder = checkpoints_folder(run, slot=slot) / f"gen-{generation:06d}"
        try:
            manifest_bytes = files.read_regular(folder / MANIFEST, MANIFEST_LIMIT, DAMAGED_RUN)
        except FileNotFoundError:
            continue  # a save killed before its manifest: never a checkpoint
        except (RnnlabError, OSError):
            damaged.append(folder.name)
            continue
        try:
            return _read_generation(run, generation, sha256(manifest_bytes), limit, slot)
        except (RnnlabError, _Vanished):
            damaged.append(folder.name)
    if damaged:
        raise RnnlabError(
            f"{run} has no {slot.pointer}, and none of its complete {slot.name}s in "
            f"{slot.folder}/ verifies ({', '.join(damaged)}); nothing was changed or deleted: "
            f"restore the run from a backup, or start a new run with another --out"
        )
    return None


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


def adopt(run: Path, ckpt: Checkpoint) -> None:
    """Make a recovered checkpoint the current one again (rewrite checkpoint.json)."""
    folder = checkpoints_folder(run) / f"gen-{ckpt.generation:06d}"
    try:
        manifest_bytes = files.read_regular(folder / MANIFEST, MANIFEST_LIMIT, DAMAGED_RUN)
        write_pointer(run, ckpt.generation, manifest_bytes)
    except OSError as e:
        raise rundir.write_error(run, e) from None


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
    diff = conflicts(trained, cfg.options())
    if diff:
        name, (now, then) = next(iter(diff.items()))
        raise RnnlabError(
            f"{Path(run) / CONFIG} says {flag(name)} {now!r} but the checkpoint "
            f"was trained with {then!r}; config.json was edited or damaged: restore "
            f"it (set {name} back to {then!r})"
        )


def rng_state() -> dict[str, torch.Tensor]:
    """This process's random-number states, named as a checkpoint stores them."""
    rng = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
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
        raise _no_checkpoint(run)
    check_config_matches(run, cfg, ckpt)
    model = build_model(cfg.model, len(vocab))
    load_weights(model, ckpt.weights, run)
    model.to(device)
    model.eval()
    return cfg, vocab, model, ckpt
