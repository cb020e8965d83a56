"""The checkpoint format and its verification.

    RUN_DIR/checkpoint.json        {"current": "checkpoints/gen-000012", "generation": 12,
                                    "manifest_sha256": ...}
    RUN_DIR/checkpoints/gen-000012/
      model.safetensors    the weights (safetensors: data, no pickle)
      trainer.safetensors  optimizer tensors, the carried hidden state, RNG states
      trainer.json         epoch and batch position, partial epoch sums, optimizer
                           settings, metrics history, the config it was trained with
      manifest.json        sha256 of each file above and of vocab.json

A checkpoint is written whole into a new folder, then ``checkpoint.json`` is
switched to it in one atomic rename; until then the previous one is current.
Loading checks every file against the manifest, so a truncated or flipped byte
is reported instead of trained on. Design notes: docs/run-directory.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import files, rundir
from .config import TrainConfig, conflicts, flag
from .errors import RnnlabError
from .models import build_model
from .rundir import CHECKPOINTS, CONFIG, MODEL, POINTER, VOCAB
from .train import EpochProgress, NonFiniteError

TRAINER_TENSORS, TRAINER_JSON, MANIFEST = ("trainer.safetensors", "trainer.json", "manifest.json")
FORMAT = 1


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
) -> int:
    """Write a new checkpoint and make it the current one; returns its generation number.

    ``epoch`` is the epoch in progress (0-based) and ``progress`` how far it got;
    at an epoch's end pass epoch + 1 and a fresh EpochProgress. Refuses (NonFiniteError)
    to write weights or optimizer state that are not finite numbers.
    """
    run = Path(run)
    weights = dict(model.state_dict())
    opt_plain, opt_tensors = _optimizer_parts(optimizer)
    if not _all_finite(list(weights.values()) + list(opt_tensors.values())):
        raise NonFiniteError(
            f"the weights are no longer finite numbers at epoch {epoch + 1}, "
            f"batch {progress.batch}; the previous checkpoint is kept: lower "
            f"--lr or --clip and train again"
        )
    carry_kind, carry = _carry_tensors(progress.state)
    rng = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    trainer = {
        "format": FORMAT,
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
        "history": history,
        "config": cfg.to_dict(),
    }
    blobs = {
        MODEL: st_save(_cpu_tensors(weights)),
        TRAINER_TENSORS: st_save(_cpu_tensors({**opt_tensors, **carry, **rng})),
        TRAINER_JSON: json_bytes(trainer),
    }
    try:
        vocab_sha = sha256((run / VOCAB).read_bytes())
        generation = read_pointer(run)["generation"] + 1 if has_checkpoint(run) else 1
        folder_name = f"{CHECKPOINTS}/gen-{generation:06d}"
        folder = run / folder_name
        (run / CHECKPOINTS).mkdir(exist_ok=True)
        if folder.exists():  # left by a save that crashed before its switch
            shutil.rmtree(folder)
        folder.mkdir()
        for name, data in blobs.items():
            files.atomic_write(folder / name, data)
        manifest = {
            "format": FORMAT,
            "generation": generation,
            "epoch": epoch,
            "batch": progress.batch,
            "vocab_sha256": vocab_sha,
            "files": {name: sha256(data) for name, data in blobs.items()},
        }
        manifest_bytes = json_bytes(manifest)
        files.atomic_write(folder / MANIFEST, manifest_bytes)
        files.fsync_dir(run / CHECKPOINTS)
        # The switch: from here on the new checkpoint is the current one.
        files.atomic_write(
            run / POINTER,
            json_bytes(
                {
                    "current": folder_name,
                    "generation": generation,
                    "manifest_sha256": sha256(manifest_bytes),
                }
            ),
        )
    except OSError as e:
        raise rundir.write_error(run, e) from None
    _after_switch(run, folder)
    return generation


def _after_switch(run: Path, current: Path) -> None:
    """Point RUN/model.safetensors at the current weights; delete older checkpoints.

    Best effort: a failure here leaves the new checkpoint current and complete.
    """
    link_tmp = run / ".model.safetensors.link.tmp"
    try:
        if link_tmp.exists():
            link_tmp.unlink()
        try:
            os.link(current / MODEL, link_tmp)
            os.replace(link_tmp, run / MODEL)
        except OSError:  # a file system without hard links: copy instead
            files.atomic_write(run / MODEL, (current / MODEL).read_bytes())
        files.fsync_dir(run)
        for old in (run / CHECKPOINTS).iterdir():
            if old != current and old.name.startswith("gen-"):
                shutil.rmtree(old, ignore_errors=True)
    except OSError:
        pass


# ---------------------------------------------------------------- loading


def _damaged(path: Path, what: str) -> RnnlabError:
    return RnnlabError(
        f"{path} {what}; the checkpoint cannot be used: restore the run directory "
        f"from a backup, or train again (a new --out, or delete {path.parent})"
    )


def has_checkpoint(run: Path) -> bool:
    """Whether ``run`` has a current checkpoint (its pointer, checkpoint.json)."""
    return (Path(run) / POINTER).exists()


def read_pointer(run: Path) -> dict[str, Any]:
    """checkpoint.json: which checkpoint folder is current, and its manifest's sha256."""
    path = Path(run) / POINTER
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not (
            isinstance(data, dict)
            and isinstance(data.get("generation"), int)
            and isinstance(data.get("current"), str)
            and data["current"].startswith(CHECKPOINTS + "/gen-")
        ):
            raise ValueError
        return data
    except FileNotFoundError:
        raise RnnlabError(
            f"{run} has no checkpoint (checkpoint.json is missing: training stopped "
            f"before saving one, or it was deleted); train again with: rnnlab train "
            f"--out {run} --resume"
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise RnnlabError(
            f"{path} is damaged (not the pointer rnnlab writes); restore the run "
            f"directory from a backup, or train again"
        ) from None


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


def _read_verified(path: Path, expected_sha: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _damaged(path, "is missing") from None
    except OSError as e:
        raise _damaged(path, f"cannot be read ({e.strerror})") from None
    if sha256(data) != expected_sha:
        raise _damaged(
            path, "is corrupted or truncated (its sha256 does not match the checkpoint's manifest)"
        )
    return data


def read_checkpoint(run: Path) -> Checkpoint:
    """Read and verify the current checkpoint of ``run``; RnnlabError says what is wrong."""
    run = Path(run)
    pointer = read_pointer(run)
    folder = run / pointer["current"]
    manifest_bytes = _read_verified(folder / MANIFEST, str(pointer.get("manifest_sha256")))
    try:
        manifest = json.loads(manifest_bytes)
        if (
            manifest["generation"] != pointer["generation"]
            or folder.name != f"gen-{manifest['generation']:06d}"
        ):
            raise _damaged(run / POINTER, "does not agree with the checkpoint it points to")
        files = manifest["files"]
        blobs = {
            name: _read_verified(folder / name, files[name])
            for name in (MODEL, TRAINER_TENSORS, TRAINER_JSON)
        }
    except (ValueError, KeyError, TypeError):
        raise _damaged(folder / MANIFEST, "is not a valid manifest") from None
    try:
        vocab_bytes = (run / VOCAB).read_bytes()
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
        trainer = json.loads(blobs[TRAINER_JSON])
        p = trainer["progress"]
        carry = [extra[k] for k in sorted(k for k in extra if k.startswith("carry."))]
        state = {"none": None, "tensor": carry[0] if carry else None, "tuple": tuple(carry)}[
            p["carry"]
        ]
        progress = EpochProgress(
            batch=int(p["batch"]),
            loss_sum=float(p["loss_sum"]),
            tokens=int(p["tokens"]),
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
        return Checkpoint(
            int(manifest["generation"]),
            int(trainer["epoch"]),
            progress,
            list(trainer["history"]),
            weights,
            optimizer,
            rng,
            dict(trainer.get("config") or {}),
        )
    except (SafetensorError, ValueError, KeyError, TypeError, IndexError):
        # The sha256 matched, so these files were written like this: not by this rnnlab.
        raise _damaged(folder, "holds a checkpoint this version of rnnlab cannot read") from None


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


def restore_rng(rng: dict[str, torch.Tensor]) -> None:
    if "rng.torch" in rng:
        torch.set_rng_state(rng["rng.torch"])
    cuda = [rng[k] for k in sorted(rng) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def load_run(run: Path, device="cpu"):
    """(config, vocab, model on ``device`` in eval mode, checkpoint) of a trained run."""
    run = Path(run)
    if not run.is_dir():
        raise RnnlabError(f"no run directory {run}; give the --out folder of an rnnlab train run")
    cfg = rundir.read_config(run)
    vocab = rundir.read_vocab(run)
    ckpt = read_checkpoint(run)
    check_config_matches(run, cfg, ckpt)
    model = build_model(cfg.model, len(vocab))
    load_weights(model, ckpt.weights, run)
    model.to(device)
    model.eval()
    return cfg, vocab, model, ckpt
