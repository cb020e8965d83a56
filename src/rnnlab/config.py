"""Every option of every command, with its default, its help and its check, defined once.

``ModelConfig`` says what builds a model; ``TrainConfig`` says the rest of a
training run and holds a ``ModelConfig``; ``GenerateConfig``, ``EvalConfig``,
``DataConfig`` and ``BenchConfig`` hold the other commands' options. Each field
carries its help text and, where the options are a fixed list, the list from the
module that implements them; the command line builds its options from these
fields, and each dataclass checks its values in ``__post_init__`` (the only place
options are validated). A run directory keeps its TrainConfig as ``config.json``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from .batches import SAMPLINGS
from .corpus import CORPORA
from .data import HELD_OUT_SPLITS
from .errors import RnnlabError
from .models import CELLS, IMPLS, ONE_HOT_IMPLS
from .tokenize import MODES
from .train import DEVICES, OPTIMIZERS

SOURCE_HELP = (
    f"a built-in corpus ({', '.join(CORPORA)}) or the path of a UTF-8 text file or "
    f"of a folder of .txt files"
)


def option(
    default: Any,
    help: str,
    *,
    choices: Sequence[str] | None = None,
    check: str | None = None,
    flag: bool = True,
) -> Any:
    """A dataclass field with its command-line help, its allowed values and its check.

    check: "positive" (whole number > 0), "count" (whole number >= 0), "rate"
    (finite number > 0), "fraction" (0 < x < 1), "dropout" (0 <= x < 1),
    "temperature" (finite number >= 0); ``flag=False`` keeps it off the command line.
    """
    return field(
        default=default, metadata={"help": help, "choices": choices, "check": check, "flag": flag}
    )


def flag(name: str) -> str:
    """The command-line spelling of an option: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def _check(name: str, value: Any, check: str | None, choices) -> None:
    """Raise RnnlabError if ``value`` is not allowed for option ``name``."""
    if value is None:
        return  # None means "not given": each field that allows it says what it means
    whole = isinstance(value, int) and not isinstance(value, bool)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if choices is not None and value not in choices:
        raise RnnlabError(
            f"{flag(name)} {value!r} is not known; choose one of {', '.join(choices)}"
        )
    if check == "positive" and not (whole and value > 0):
        raise RnnlabError(f"{flag(name)} must be a positive whole number, got {value!r}")
    if check == "count" and not (whole and value >= 0):
        raise RnnlabError(f"{flag(name)} must be 0 or a positive whole number, got {value!r}")
    if check == "rate" and not (number and math.isfinite(value) and value > 0):
        raise RnnlabError(f"{flag(name)} must be a positive finite number, got {value!r}")
    if check == "temperature" and not (number and math.isfinite(value) and value >= 0):
        raise RnnlabError(
            f"{flag(name)} must be 0 (greedy) or a positive finite number, got {value!r}"
        )
    if check == "fraction" and not (number and 0 < value < 1):
        raise RnnlabError(f"{flag(name)} must be between 0 and 1 (exclusive), got {value!r}")
    if check == "dropout" and not (number and 0 <= value < 1):
        raise RnnlabError(f"{flag(name)} must be at least 0 and below 1, got {value!r}")


def check_fields(obj: Any) -> None:
    """Check every field of dataclass ``obj`` against its metadata."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("check") == "list":
            for item in value:
                _check(f.name, item, f.metadata.get("item_check"), f.metadata.get("choices"))
            if not value:
                raise RnnlabError(f"{flag(f.name)} is empty; give a comma-separated list")
        else:
            _check(f.name, value, f.metadata.get("check"), f.metadata.get("choices"))


def list_option(
    default: tuple,
    help: str,
    *,
    item: type = str,
    choices: Sequence[str] | None = None,
    item_check: str | None = None,
) -> Any:
    """A comma-separated list option (for ``bench``)."""
    return field(
        default=default,
        metadata={
            "help": help,
            "choices": choices,
            "check": "list",
            "item": item,
            "item_check": item_check,
            "flag": True,
        },
    )


@dataclass(frozen=True)
class ModelConfig:
    """What builds a model: the cell, the implementation and the sizes (d2l 8.5's by default)."""

    cell: str = option("rnn", "recurrent cell", choices=CELLS)
    impl: str = option(
        "fused",
        "implementation: " + "; ".join(f"{k}: {v}" for k, v in IMPLS.items()),
        choices=tuple(IMPLS),
    )
    hidden: int = option(512, "hidden units H", check="positive")
    layers: int = option(1, "stacked recurrent layers L", check="positive")
    embedding: int = option(
        0, "embedding size; 0 feeds one-hot vectors (--impl torch)", check="count"
    )
    dropout: float = option(0.0, "dropout on layer outputs (--impl torch)", check="dropout")
    tie_weights: bool = option(
        False,
        "share the embedding and output matrices (--impl torch; "
        "needs --embedding equal to --hidden)",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.impl in ONE_HOT_IMPLS:
            extras = [flag(n) for n in ("dropout", "embedding", "tie_weights") if getattr(self, n)]
            if extras:
                raise RnnlabError(
                    f"{', '.join(extras)} need(s) --impl torch; the {self.impl} "
                    f"models are the book's one-hot models"
                )
        if self.tie_weights and self.embedding != self.hidden:
            raise RnnlabError(
                f"--tie-weights needs --embedding equal to --hidden "
                f"(got embedding {self.embedding}, hidden {self.hidden})"
            )


MODEL_FIELDS = tuple(f.name for f in fields(ModelConfig))

# Options that may change when a run is resumed: they do not change what is computed
# batch by batch (more epochs only extends the run). Every other option is fixed, but
# for --impl between the one-hot implementations, which share their parameters.
RESUMABLE_CHANGES = ("epochs", "device", "prefix", "sample_every", "checkpoint_every", "threads")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; the defaults are the notes' model (d2l 8.5).

    A one-hot RNN with 512 hidden units, SGD with lr 1, gradients clipped to norm 1,
    minibatches of B=32 streams by T=35 steps, sequential partitioning.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    source: str = option("timemachine", SOURCE_HELP, flag=False)  # a positional argument
    mode: str = option(
        "letters",
        "tokenization: " + "; ".join(f"{k}: {v}" for k, v in MODES.items()),
        choices=tuple(MODES),
    )
    max_tokens: int | None = option(
        None, "use only the first N tokens of the corpus (default: all)", check="positive"
    )
    val_frac: float = option(
        0.1,
        "fraction of the text, at its end, held out for validation (ptb uses its own valid file)",
        check="fraction",
    )
    batch_size: int = option(32, "minibatch size B (parallel streams)", check="positive")
    num_steps: int = option(
        35, "time steps T per minibatch (truncated backpropagation length)", check="positive"
    )
    sampling: str = option(
        "sequential",
        "sequential: state carried from batch to batch; random: shuffled subsequences, fresh state",
        choices=SAMPLINGS,
    )
    epochs: int = option(
        50, "epochs to train (on --resume, a larger number trains longer)", check="positive"
    )
    lr: float = option(1.0, "learning rate", check="rate")
    optimizer: str = option("sgd", "optimizer", choices=tuple(OPTIMIZERS))
    clip: float = option(1.0, "clip the gradient to this global L2 norm", check="rate")
    device: str = option(
        "auto", "where to train; auto picks cuda when a GPU is available", choices=DEVICES
    )
    seed: int = option(0, "random seed (initialization, batch order, dropout)", check="count")
    prefix: str | None = option(
        None,
        "prompt of the samples printed during training and the "
        "default of generate (default: the start of the "
        "training text)",
    )
    sample_every: int = option(
        10, "print a greedy sample every N epochs (0: only at the end)", check="count"
    )
    checkpoint_every: int = option(
        0, "also checkpoint every N batches (0: at the end of each epoch only)", check="count"
    )
    threads: int = option(
        0,
        "CPU threads for torch (0: torch's default, one per core); 1 is "
        "often faster on a machine whose cores are busy with other work",
        check="count",
    )

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelConfig):
            raise RnnlabError(f"the model options must be a ModelConfig, got {self.model!r}")
        if not isinstance(self.source, str) or not self.source:
            raise RnnlabError("the corpus (SOURCE) is empty; give a built-in name or a path")
        if self.prefix is not None and not isinstance(self.prefix, str):
            raise RnnlabError(f"--prefix must be text, got {self.prefix!r}")
        check_fields(self)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TrainConfig:
        """A config from flat options (name -> value, as the command line gives them)."""
        model = {k: v for k, v in options.items() if k in MODEL_FIELDS}
        rest = {k: v for k, v in options.items() if k not in MODEL_FIELDS}
        known = {f.name for f in fields(cls)} - {"model"}
        unknown = sorted(set(rest) - known)
        if unknown:
            raise RnnlabError(f"unknown option(s) {', '.join(unknown)}")
        return cls(model=ModelConfig(**model), **rest)

    def options(self) -> dict[str, Any]:
        """The flat options (model fields included): the inverse of :meth:`from_options`."""
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        return {**asdict(self.model), **flat}

    def to_dict(self) -> dict[str, Any]:
        """The options as written to config.json, with the version that wrote them."""
        from . import __version__

        return {
            "version": __version__,
            "model": asdict(self.model),
            **{k: v for k, v in self.options().items() if k not in MODEL_FIELDS},
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "config.json") -> TrainConfig:
        """Rebuild (and check) a config read from ``where``; also reads rnnlm 0.1's flat layout."""
        if not isinstance(data, dict):
            raise RnnlabError(
                f"{where} does not hold a JSON object; the run directory is "
                f"damaged: retrain or restore it"
            )
        data = dict(data)
        data.pop("version", None)
        model = data.pop("model", None)
        if isinstance(model, str):  # rnnlm 0.1: flat, with "model" naming the cell
            data["cell"] = model
        elif isinstance(model, dict):
            data.update(model)
        elif model is not None:
            raise RnnlabError(
                f"{where} has a 'model' entry that is neither a cell name nor an "
                f"object; the run directory is damaged: retrain or restore it"
            )
        try:
            return cls.from_options(data)
        except TypeError as e:
            raise RnnlabError(
                f"{where} is invalid ({e}); the run directory is damaged: retrain or restore it"
            ) from None
        except RnnlabError as e:
            raise RnnlabError(
                f"{where} is invalid: {e}; it was written by another version of "
                f"rnnlab or edited by hand: fix it, or retrain"
            ) from None


def conflicts(saved: TrainConfig, given: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Options given explicitly on resume that differ from the saved run: name -> (given, saved).

    Options in RESUMABLE_CHANGES may differ; so may --impl between the one-hot
    implementations, which have the same parameters.
    """
    old_options = saved.options()
    out = {}
    for name, value in given.items():
        if name in RESUMABLE_CHANGES or name not in old_options:
            continue
        old = old_options[name]
        if name == "impl" and {value, old} <= set(ONE_HOT_IMPLS):
            continue
        if value != old:
            out[name] = (value, old)
    return out


@dataclass(frozen=True)
class GenerateConfig:
    """How ``generate`` continues a prompt: greedy (d2l's predict_ch8) or sampled."""

    prefix: str | None = option(None, "the prompt (default: the run's --prefix)")
    length: int = option(100, "tokens to generate", check="positive")
    temperature: float = option(
        0.0,
        "0: greedy (most likely token); > 0: sample from softmax(logits / T)",
        check="temperature",
    )
    top_k: int = option(0, "sample only among the K most likely tokens (0: all)", check="count")
    seed: int | None = option(None, "random seed for sampling (default: unseeded)", check="count")
    device: str = option("cpu", "where to run the model", choices=DEVICES)

    def __post_init__(self) -> None:
        from .generate import MAX_LENGTH

        check_fields(self)
        if self.length > MAX_LENGTH:
            raise RnnlabError(f"--length must be at most {MAX_LENGTH:,}, got {self.length}")


@dataclass(frozen=True)
class EvalConfig:
    """What ``eval`` measures: the run's validation split, a built-in split, or a file."""

    source: str | None = option(
        None,
        "held-out text: " + SOURCE_HELP + " (default: the run's own validation split)",
        flag=False,
    )
    split: str | None = option(
        None,
        "for a built-in corpus with splits (ptb): which one (default: the run's validation split)",
        choices=HELD_OUT_SPLITS,
    )
    device: str = option("cpu", "where to run the model", choices=DEVICES)
    json: bool = option(False, "print one JSON object (ppl, bpt, tokens) instead of a line")

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class DataConfig:
    """What ``data`` shows of a corpus."""

    source: str = option("timemachine", SOURCE_HELP, flag=False)
    mode: str = option("letters", "tokenization mode", choices=tuple(MODES))
    max_tokens: int | None = option(
        None, "use only the first N tokens (default: all)", check="positive"
    )
    top: int = option(10, "how many frequent tokens to list", check="count")
    json: bool = option(False, "print one JSON object instead of text")

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class BenchConfig:
    """What ``bench`` times: each implementation, cell and size, side by side."""

    device: str = option("cpu", "where to time", choices=("cpu", "cuda"))
    impls: tuple[str, ...] = list_option(
        tuple(IMPLS), "comma-separated implementations", choices=tuple(IMPLS)
    )
    cells: tuple[str, ...] = list_option(CELLS, "comma-separated cells", choices=CELLS)
    hidden: tuple[int, ...] = list_option(
        (256, 512), "comma-separated hidden sizes", item=int, item_check="positive"
    )
    layers: int = option(1, "stacked recurrent layers L", check="positive")
    batch_size: int = option(32, "minibatch size B", check="positive")
    num_steps: int = option(35, "time steps T per minibatch", check="positive")
    batches: int = option(20, "timed batches per configuration", check="positive")
    warmup: int = option(3, "untimed batches before timing", check="count")
    seed: int = option(0, "random seed of the initial weights and the batches", check="count")
    threads: int = option(
        0, "torch's CPU threads for every implementation (0: torch's default)", check="count"
    )
    json: bool = option(False, "print the rows as JSON instead of a table")
    out: str | None = option(
        None, "also write the rows, with the date, torch version and threads, as JSON to this file"
    )

    def __post_init__(self) -> None:
        check_fields(self)


def defaults(cls) -> dict[str, Any]:
    """Each field's default (a ModelConfig's fields for TrainConfig's ``model``)."""
    out = {}
    for f in fields(cls):
        if f.name == "model":
            out.update(defaults(ModelConfig))
        elif f.default is not MISSING:
            out[f.name] = f.default
    return out
