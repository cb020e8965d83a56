"""Checkpoints: a run's state written whole, verified, and read back.

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

What the three data files hold, piece by piece, is rnnlab.run_state's: this module writes
and verifies the files of a mapping of named state, and knows no piece. Reading a run for
its model (``load_run``) is rnnlab.trained's; what a resume checks beyond the files,
rnnlab.restore's.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import files, run_state, rundir
from .config import TrainConfig
from .errors import RnnlabError
from .models import parameter_count
from .rundir import (
    BEST_FOLDER,
    BEST_POINTER,
    CHECKPOINTS,
    MODEL,
    POINTER,
    VOCAB,
    VOCAB_LIMIT,
)
from .train import NonFiniteError

TRAINER_TENSORS, TRAINER_JSON, MANIFEST = ("trainer.safetensors", "trainer.json", "manifest.json")
FORMAT = 1  # of manifest.json
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


def _cpu_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors sharing memory (tied weights), and a GPU
    # tensor must come to the host to be written.
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def save_checkpoint(run: Path, state: Mapping[str, Any], *, best: bool = False) -> int:
    """Write ``state`` (piece name -> value, every piece of rnnlab.run_state.PIECES) as a new
    checkpoint and make it the current one; returns its generation number.

    ``state["epoch"]`` is the epoch in progress (0-based) and ``state["progress"]`` how far
    it got; at an epoch's end, epoch + 1 and a fresh EpochProgress. ``best``: the same
    checkpoint becomes the best one first (:data:`BEST`). Refuses (NonFiniteError) to
    write weights or optimizer state that are not finite numbers.
    """
    run = Path(run)
    epoch, batch = state["epoch"], state["progress"].batch
    try:
        tensors, trainer = run_state.dump(state)
    except ValueError:
        raise NonFiniteError(
            f"the weights are no longer finite numbers at epoch {epoch + 1}, "
            f"batch {batch}; the previous checkpoint is kept: lower "
            f"--lr or --clip and train again"
        ) from None
    blobs = {
        MODEL: st_save(_cpu_tensors(tensors[run_state.WEIGHTS])),
        TRAINER_TENSORS: st_save(_cpu_tensors(tensors[run_state.TENSORS])),
        TRAINER_JSON: json_bytes(trainer),
    }
    try:
        vocab_sha = sha256(files.read_regular(run / VOCAB, VOCAB_LIMIT))
        if best:  # first: a crash between the two then redoes the epoch, best included
            _write_generation(run, BEST, blobs, epoch, batch, vocab_sha)
        generation, previous = _write_generation(run, LATEST, blobs, epoch, batch, vocab_sha)
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


def no_checkpoint(run: Path) -> RnnlabError:
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
        raise no_checkpoint(run) from None
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
    """A verified checkpoint, read into memory (tensors on the CPU): its generation, the
    series it was read from (a key of SLOTS) and its state, piece by piece
    (rnnlab.run_state), each piece also an attribute: ``ckpt.epoch``, ``ckpt.weights``,
    ``ckpt.progress``, ``ckpt.schedule`` (None: trainer.json format 1), ..."""

    generation: int
    which: str
    state: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__.get("state")
        if state is not None and name in state:
            return state[name]
        raise AttributeError(name)


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
        tensors = {
            run_state.WEIGHTS: st_load(blobs[MODEL]),
            run_state.TENSORS: st_load(blobs[TRAINER_TENSORS]),
        }
        trainer = files.parse_json(blobs[TRAINER_JSON], folder / TRAINER_JSON, DAMAGED_RUN)
        which = next(k for k, v in SLOTS.items() if v is slot)
        return Checkpoint(generation, which, run_state.load(tensors, trainer))
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


def adopt(run: Path, ckpt: Checkpoint) -> None:
    """Make a recovered checkpoint the current one again (rewrite checkpoint.json)."""
    folder = checkpoints_folder(run) / f"gen-{ckpt.generation:06d}"
    try:
        manifest_bytes = files.read_regular(folder / MANIFEST, MANIFEST_LIMIT, DAMAGED_RUN)
        write_pointer(run, ckpt.generation, manifest_bytes)
    except OSError as e:
        raise rundir.write_error(run, e) from None
