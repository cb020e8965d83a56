"""How an option is declared and checked, and every option's list of choices.

Plain data and the standard library only, so that the configuration, the command line and
its --help read it without importing torch. A field made by :func:`option` carries its help,
its choices and its check; :func:`check_fields` checks a dataclass's fields against them.
The lists of choices below are the one place each is written: the module that implements a
choice keys its table by these names (``rnnlab.train``'s optimizers, ``rnnlab.schedule``'s
schedules, ``rnnlab.models.cells``' cells, ...), and a test checks that the two agree.
"""

from __future__ import annotations

import math
import os
import reprlib
from collections.abc import Callable, Sequence
from dataclasses import field, fields
from typing import Any

from .errors import RnnlabError

# The largest value of each number an option or a config.json may give; each is far
# beyond any sensible run and only stops a typo or a hostile file before it costs
# memory or time (models.check_fits then measures a model against this machine).
MAX_SAMPLES = 1000  # continuations one generate command prints
MAX_SEED = 2**64 - 1  # torch.manual_seed and numpy's SeedSequence take any seed below 2**64
MAX_WIDTH = 1_000_000  # hidden and embedding: one (H, H) float32 matrix would be 4 TB
MAX_LAYERS = 1_000  # over a hundred times the deepest recurrent LMs in use (GNMT stacks 8)
MAX_BATCH = 1_000_000  # B and T: more than any run uses; check_fits bounds their product
MAX_EPOCHS = 1_000_000  # also between samples, and bench's batches: days at 1 ms each
MAX_TOKENS = 10**12  # terabytes of text, more than a machine reads; also between checkpoints
MAX_VOCAB = 10**9  # top-k and top: no vocabulary has a billion distinct tokens
MAX_LR = 1e3  # 50 times word_language_model's SGD rate of 20; Adam's are near 1e-3
MAX_CLIP = 1e6  # a gradient norm of a million means the run has diverged: no clipping
MAX_TEMPERATURE = 100.0  # logits 10 apart then differ by e**0.1: sampling is near uniform
MAX_MINUTES = 10**7  # a time limit of 19 years
MAX_WEIGHT_DECAY = 100.0  # 10**4 times AdamW's default of 0.01
# A run's config.json may move to a machine with fewer CPUs (generate and eval ignore the
# threads): the trainer checks --threads against this machine when it applies it.
MAX_THREADS = 1024


def machine_cpus() -> int:
    """This machine's CPU count: the most torch threads an option may ask for."""
    return os.cpu_count() or 1


def option(
    default: Any,
    help: str,
    *,
    choices: Sequence[str] | None = None,
    check: str | None = None,
    at_most: float | Callable[[], int] | None = None,
    flag: bool = True,
    metavar: str | None = None,
) -> Any:
    """A dataclass field with its command-line help, its allowed values and its check.

    The field's annotation says the value's type (``bool``, ``int``, ``float`` or
    ``str``; ``| None`` allows None, "not given"); a float field also takes a whole
    number. check: "positive" (whole number > 0), "count" (whole number >= 0), "rate"
    (finite number > 0), "fraction" (0 < x < 1), "dropout" (0 <= x < 1),
    "temperature" (finite number >= 0, 0 meaning greedy), "nonnegative" (finite number
    >= 0), "path" (text, not empty, no NUL character);
    ``at_most``: the largest number allowed, or a function giving this machine's limit;
    ``flag=False`` keeps it off the command line; ``metavar``: how its help names the
    value (default N, X or TEXT, by type).
    """
    return field(
        default=default,
        metadata={
            "help": help,
            "choices": choices,
            "check": check,
            "at_most": at_most,
            "flag": flag,
            "metavar": metavar,
        },
    )


def flag(name: str) -> str:
    """The command-line spelling of an option: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def _label(f: Any) -> str:
    """How a message names field ``f``: its flag, or SOURCE for a positional argument."""
    return flag(f.name) if f.metadata.get("flag", False) else f.name.upper()


def _annotation(f: Any) -> tuple[str, bool]:
    """A field's type name and whether it allows None: ``int | None`` -> ("int", True)."""
    parts = [p.strip() for p in str(f.type).split("|")]
    return next(p for p in parts if p != "None"), "None" in parts


def value_type(f: Any) -> type:
    """The Python type of a field's values (bool, int, float or str; a list's items aside)."""
    return {"bool": bool, "int": int, "float": float}.get(_annotation(f)[0], str)


class _Short(reprlib.Repr):
    """repr, shortened: strings and containers cut, depth limited, huge integers described."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 60
        self.maxlevel = 3

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr of a 4,300-digit int raises; a 40-digit one is noise
            return f"an integer of about {int(x.bit_length() * math.log10(2)) + 1} digits"
        return super().repr_int(x, level)


shown = _Short().repr  # a value as a one-line message shows it


def _number(limit: float) -> str:
    """A bound as a message shows it: 1,000,000 rather than 1e+06 or 1000000.0."""
    whole = isinstance(limit, int) or (limit.is_integer() and abs(limit) < 1e16)
    return f"{int(limit):,}" if whole else f"{limit:g}"


def _check(
    label: str, value: Any, kind: str, check: str | None, choices, at_most, optional: bool
) -> None:
    """Raise RnnlabError if ``value`` is not allowed for the option called ``label``."""
    if value is None and optional:
        return  # None means "not given": each field that allows it says what it means
    whole = isinstance(value, int) and not isinstance(value, bool)
    number = whole or isinstance(value, float)
    if kind == "bool" and not isinstance(value, bool):
        raise RnnlabError(f"{label} must be true or false, got {shown(value)}")
    if kind == "str" and not isinstance(value, str):
        raise RnnlabError(f"{label} must be text, got {shown(value)}")
    if choices is not None and value not in choices:
        raise RnnlabError(
            f"{label} {shown(value)} is not known; choose one of {', '.join(choices)}"
        )
    if check == "path" and (value == "" or "\0" in value):
        raise RnnlabError(
            f"{label} must be a name or a path (not empty, no NUL), got {shown(value)}"
        )
    if check == "positive" and not (whole and value > 0):
        raise RnnlabError(f"{label} must be a positive whole number, got {shown(value)}")
    if check == "count" and not (whole and value >= 0):
        raise RnnlabError(f"{label} must be 0 or a positive whole number, got {shown(value)}")
    # an int is always finite (math.isfinite of a huge int would overflow)
    finite = number and (whole or math.isfinite(value))
    if check == "rate" and not (finite and value > 0):
        raise RnnlabError(f"{label} must be a positive finite number, got {shown(value)}")
    if check == "temperature" and not (finite and value >= 0):
        raise RnnlabError(
            f"{label} must be 0 (greedy) or a positive finite number, got {shown(value)}"
        )
    if check == "nonnegative" and not (finite and value >= 0):
        raise RnnlabError(f"{label} must be 0 or a positive finite number, got {shown(value)}")
    if check == "fraction" and not (number and 0 < value < 1):
        raise RnnlabError(f"{label} must be between 0 and 1 (exclusive), got {shown(value)}")
    if check == "dropout" and not (number and 0 <= value < 1):
        raise RnnlabError(f"{label} must be at least 0 and below 1, got {shown(value)}")
    if (kind == "int" and not whole) or (kind == "float" and not number):
        raise RnnlabError(
            f"{label} must be a {'whole number' if kind == 'int' else 'number'}, got {shown(value)}"
        )
    limit = at_most() if callable(at_most) else at_most
    if limit is not None and value > limit:
        why = " (this machine's CPUs)" if at_most is machine_cpus else ""
        raise RnnlabError(f"{label} must be at most {_number(limit)}{why}, got {shown(value)}")


def check_fields(obj: Any) -> None:
    """Check every field of dataclass ``obj`` against its annotation and metadata."""
    for f in fields(obj):
        value, meta, label = getattr(obj, f.name), f.metadata, _label(f)
        kind, optional = _annotation(f)
        if meta.get("check") == "list":
            if not isinstance(value, (tuple, list)):
                raise RnnlabError(f"{label} must be a comma-separated list, got {shown(value)}")
            if not value and not meta.get("allow_empty", False):
                raise RnnlabError(f"{label} is empty; give a comma-separated list")
            item = meta["item"].__name__
            for x in value:
                _check(label, x, item, meta["item_check"], meta["choices"], meta["at_most"], False)
        elif kind in ("bool", "int", "float", "str"):
            _check(label, value, kind, meta["check"], meta["choices"], meta["at_most"], optional)


def list_option(
    default: tuple,
    help: str,
    *,
    item: type = str,
    choices: Sequence[str] | None = None,
    item_check: str | None = None,
    at_most: float | None = None,
    allow_empty: bool = False,
) -> Any:
    """A comma-separated list option; each item is checked as :func:`option`'s.

    ``allow_empty``: an empty list is a value (the field's help says what it means);
    otherwise it is refused.
    """
    return field(
        default=default,
        metadata={
            "help": help,
            "choices": choices,
            "check": "list",
            "item": item,
            "item_check": item_check,
            "at_most": at_most,
            "allow_empty": allow_empty,
            "flag": True,
        },
    )


# ---- the lists of choices, each with the words --help shows where it has them ----

# The recurrent cells; rnnlab.models.cells holds what each one is.
CELLS = ("rnn", "gru", "lstm", "rnn-relu")

# Each implementation and what it is.
IMPLS = {
    "scratch": "the book's loops over raw tensors (models/scratch.py)",
    "torch": "torch.nn's RNN/GRU/LSTM; adds embedding, dropout (locked too), weight tying and "
    "an adaptive softmax",
    "fused": "the scratch model's function and parameters, computed fast (on CUDA by cuDNN)",
    "triton": "fused, with Triton kernels for the recurrences on CUDA; experimental: never "
    "yet run on a GPU",
}
# The book's one-hot models: the same parameters and state_dict keys, so a run may switch
# between them on --resume and a checkpoint of one loads into any other.
ONE_HOT_IMPLS = ("scratch", "fused", "triton")
# Implementations not yet verified where they are meant to run: only ever used when asked for.
EXPERIMENTAL_IMPLS = ("triton",)

# Each tokenization mode and what it does (rnnlab.tokenize).
MODES = {
    "d2l": "the book's letters, lines joined with no separator",
    "letters": "a-z and space, a line break read as a space",
    "chars": "every character as it is",
    "words": "whitespace-separated words and <eos> per line",
}
SAMPLINGS = ("sequential", "random")  # how minibatches are cut (rnnlab.batches)
HELD_OUT_SPLITS = ("valid", "test")  # the splits a built-in corpus may have besides "train"
SCHEDULES = ("constant", "cosine", "plateau")  # the learning rate over a run (rnnlab.schedule)
OPTIMIZERS = ("sgd", "adam", "adamw")  # rnnlab.train.make_optimizer
# the arithmetic of the training step (rnnlab.train.train_step): name -> torch.autocast dtype
PRECISIONS = ("float32", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")  # auto: cuda where torch sees a GPU, else cpu
# Which checkpoint of a run generate and eval read (trained.load_run): the one of the
# lowest validation loss (the latest where there is none yet), or the latest.
CHECKPOINT_CHOICES = ("best", "latest")
# Each export format and what it is for (rnnlab.export).
EXPORT_FORMATS = {
    "onnx": "ONNX, for onnxruntime and other ONNX runtimes (needs the onnxscript package)",
    "torchscript": "TorchScript, for torch.jit.load in Python or LibTorch in C++",
}
MAX_LENGTH = 1_000_000  # tokens one generate call may produce
