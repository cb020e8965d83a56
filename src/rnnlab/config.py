"""TrainConfig: every option of a training run, checked in one place.

The command line fills a TrainConfig, :meth:`TrainConfig.validate` rejects
impossible values with a message that says what to do, and the run directory
keeps it as ``config.json`` (with the package version), so a run can be resumed,
evaluated or sampled without repeating its options.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, Optional

from . import __version__
from .batches import SAMPLINGS
from .errors import RnnlabError
from .models import IMPLS, KINDS
from .tokenize import MODES
from .train import OPTIMIZERS

DEVICES = ("auto", "cpu", "cuda")

# Options that may change when a run is resumed: they do not change what is computed
# batch by batch (more epochs only extends the run). Every other option is fixed.
RESUMABLE_CHANGES = ("epochs", "device", "prefix", "sample_every", "checkpoint_every", "threads")


@dataclass
class TrainConfig:
    """Everything a training run needs; the defaults are the notes' model (d2l 8.5).

    A one-hot RNN with 512 hidden units, SGD with lr 1, gradients clipped to norm 1,
    minibatches of B=32 streams by T=35 steps, sequential partitioning.
    """

    source: str = "timemachine"     # built-in corpus name, or path of a text file or folder
    mode: str = "letters"           # tokenization: d2l, letters, chars, words
    max_tokens: Optional[int] = None  # keep only the first N tokens (None: all)
    val_frac: float = 0.1           # last fraction of the tokens held out for validation
    model: str = "rnn"              # rnn, gru, lstm
    impl: str = "fused"             # scratch, torch, fused
    hidden: int = 512               # H
    layers: int = 1                 # L
    dropout: float = 0.0            # torch impl only
    embedding: int = 0              # embedding size (0: one-hot inputs); torch impl only
    tie_weights: bool = False       # output layer shares the embedding; torch impl only
    batch_size: int = 32            # B
    num_steps: int = 35             # T
    sampling: str = "sequential"    # sequential (state carried) or random
    epochs: int = 50               # ~4 min for the defaults on a 2-core CPU (fused impl)
    lr: float = 1.0
    optimizer: str = "sgd"          # sgd, adam, adamw
    clip: float = 1.0               # gradient clipping: global L2 norm at most this
    device: str = "auto"            # auto, cpu, cuda
    seed: int = 0
    prefix: str = "time traveller"  # prompt of the samples printed during training
    sample_every: int = 10          # print a greedy sample every N epochs (0: never)
    checkpoint_every: int = 0       # also checkpoint every N batches (0: only at epoch ends)
    threads: int = 0                # torch's CPU threads (0: torch's default)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise RnnlabError naming the first impossible option and what to give instead."""
        def choice(name: str, allowed) -> None:
            value = getattr(self, name)
            if value not in allowed:
                raise RnnlabError(f"--{flag(name)} {value!r} is not known; choose one of "
                                 f"{', '.join(allowed)}")

        def positive(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise RnnlabError(f"--{flag(name)} must be a positive whole number, got {value!r}")

        def at_least_zero(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise RnnlabError(f"--{flag(name)} must be 0 or a positive whole number, "
                                 f"got {value!r}")

        if not isinstance(self.source, str) or not self.source:
            raise RnnlabError("the corpus (SOURCE) is empty; give a built-in name or a path")
        choice("mode", MODES)
        choice("model", KINDS)
        choice("impl", IMPLS)
        choice("sampling", SAMPLINGS)
        choice("optimizer", OPTIMIZERS)
        choice("device", DEVICES)
        for name in ("hidden", "layers", "batch_size", "num_steps", "epochs"):
            positive(name)
        for name in ("embedding", "sample_every", "checkpoint_every", "seed", "threads"):
            at_least_zero(name)
        if self.max_tokens is not None:
            positive("max_tokens")
        for name in ("lr", "clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise RnnlabError(f"--{flag(name)} must be a positive finite number, got {value!r}")
        if not isinstance(self.val_frac, (int, float)) or not 0 < self.val_frac < 1:
            raise RnnlabError(f"--val-frac must be between 0 and 1 (exclusive), got "
                             f"{self.val_frac!r}; 0.1 holds out the last tenth of the text")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise RnnlabError(f"--dropout must be at least 0 and below 1, got {self.dropout!r}")
        if self.impl != "torch":
            extras = [f"--{flag(n)}" for n in ("dropout", "embedding", "tie_weights")
                      if getattr(self, n)]
            if extras:
                raise RnnlabError(f"{', '.join(extras)} need(s) --impl torch; the {self.impl} "
                                 f"models are the book's one-hot models")
        if self.tie_weights and self.embedding != self.hidden:
            raise RnnlabError(f"--tie-weights needs --embedding equal to --hidden "
                             f"(got embedding {self.embedding}, hidden {self.hidden})")
        if not isinstance(self.prefix, str):
            raise RnnlabError(f"--prefix must be text, got {self.prefix!r}")

    def to_dict(self) -> Dict[str, Any]:
        """The options as written to config.json, with the version that wrote them."""
        return {**asdict(self), "version": __version__}

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str = "config.json") -> "TrainConfig":
        """Rebuild (and validate) a config read from ``where``."""
        if not isinstance(data, dict):
            raise RnnlabError(f"{where} does not hold a JSON object; the run directory is damaged: "
                             f"retrain or restore it")
        data = dict(data)
        data.pop("version", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RnnlabError(f"{where} has unknown option(s) {', '.join(unknown)}; it was written "
                             f"by another version of rnnlab or edited by hand: fix or remove them")
        try:
            return cls(**data)
        except RnnlabError as e:
            raise RnnlabError(f"{where} is invalid: {e}") from None

    def save(self, path: Path) -> None:
        from .checkpoint import atomic_write  # checkpoint imports config: import here
        atomic_write(Path(path), (json.dumps(self.to_dict(), indent=2) + "\n").encode())

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RnnlabError(f"{path.parent} is not a run directory (it has no config.json); "
                             f"give the --out folder of an rnnlab train run") from None
        except (OSError, UnicodeDecodeError) as e:
            raise RnnlabError(f"cannot read {path} ({e}); restore it or retrain") from None
        try:
            data = json.loads(text)
        except ValueError:
            raise RnnlabError(f"{path} is not valid JSON (truncated or damaged); restore it or "
                             f"retrain") from None
        return cls.from_dict(data, str(path))


def flag(name: str) -> str:
    """The command-line spelling of an option: batch_size -> batch-size."""
    return name.replace("_", "-")


def conflicts(saved: TrainConfig, given: Dict[str, Any]) -> Dict[str, tuple]:
    """Options given explicitly on resume that differ from the saved run: name -> (given, saved).

    Options in RESUMABLE_CHANGES may differ; so may --impl between scratch and fused,
    which have the same parameters.
    """
    out = {}
    for name, value in given.items():
        if name in RESUMABLE_CHANGES or not hasattr(saved, name):
            continue
        old = getattr(saved, name)
        if name == "impl" and {value, old} <= {"scratch", "fused"}:
            continue
        if value != old:
            out[name] = (value, old)
    return out
