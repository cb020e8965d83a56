"""Every option of every command, with its default, its help and its check, defined once.

``ModelConfig`` says what builds a model; ``TrainConfig`` says the rest of a
training run and holds a ``ModelConfig``; ``GenerateConfig``, ``EvalConfig``,
``DataConfig`` and ``BenchConfig`` hold the other commands' options. Each field
carries its help text and, where the options are a fixed list, the list from the
module that implements them; the command line builds its options from these
fields, and each dataclass checks its values in ``__post_init__`` (the only place
options are validated): each value's type, from its annotation, and each number's
range, up to ``at_most`` (a MAX_ constant below, or this machine's CPU count). A run
directory keeps its TrainConfig as ``config.json``.
"""

from __future__ import annotations

import math
import os
import re
import reprlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .batches import SAMPLINGS
from .corpus import CORPORA
from .data import HELD_OUT_SPLITS
from .errors import RnnlabError
from .export import FORMATS as EXPORT_FORMATS
from .generate import MAX_LENGTH
from .models import CELLS, EXPERIMENTAL_IMPLS, IMPLS, ONE_HOT_IMPLS
from .schedule import SCHEDULES
from .tokenize import MODES
from .train import DEVICES, OPTIMIZERS

SOURCE_HELP = (
    f"a built-in corpus ({', '.join(CORPORA)}) or the path of a UTF-8 text file or "
    f"of a folder of .txt files"
)

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


@dataclass(frozen=True)
class ModelConfig:
    """What builds a model: the cell, the implementation and the sizes (d2l 8.5's by default)."""

    cell: str = option("rnn", "recurrent cell", choices=CELLS)
    impl: str = option(
        "fused",
        "implementation: " + "; ".join(f"{k}: {v}" for k, v in IMPLS.items()),
        choices=tuple(IMPLS),
    )
    hidden: int = option(512, "hidden units H", check="positive", at_most=MAX_WIDTH)
    layers: int = option(1, "stacked recurrent layers L", check="positive", at_most=MAX_LAYERS)
    embedding: int = option(
        0,
        "embedding size; 0 feeds one-hot vectors (--impl torch)",
        check="count",
        at_most=MAX_WIDTH,
    )
    dropout: float = option(0.0, "dropout on layer outputs (--impl torch)", check="dropout")
    dropout_input: float = option(
        0.0,
        "dropout on the input of the first layer: the embedding or the one-hot vectors "
        "(--impl torch)",
        check="dropout",
    )
    locked_dropout: bool = option(
        False,
        "variational dropout (Gal & Ghahramani 2016, as in AWD-LSTM): one mask per stream, "
        "the same at every time step, for --dropout-input, between layers and on the last "
        "layer's output (--impl torch); off: a fresh mask per element and step",
    )
    tie_weights: bool = option(
        False,
        "share the embedding and output matrices (--impl torch; "
        "needs --embedding equal to --hidden)",
    )
    adaptive_softmax: bool = option(
        False,
        "adaptive softmax output layer for large vocabularies (Grave et al. 2017): a head "
        "of the most frequent tokens and smaller tail clusters (--impl torch; not with "
        "--tie-weights)",
    )
    cutoffs: tuple[int, ...] = list_option(
        (),
        "comma-separated token ids where the adaptive softmax's clusters start, "
        "increasing and below the vocabulary size V (default: empty, meaning V//20,V//4: "
        "500,2500 for ptb's 10,000 words)",
        item=int,
        item_check="positive",
        at_most=MAX_VOCAB,
        allow_empty=True,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        # config.json gives a list: a tuple compares equal to the command line's value
        object.__setattr__(self, "cutoffs", tuple(self.cutoffs))
        if self.impl in ONE_HOT_IMPLS:
            torch_only = (
                "dropout",
                "dropout_input",
                "locked_dropout",
                "embedding",
                "tie_weights",
                "adaptive_softmax",
            )
            extras = [flag(n) for n in torch_only if getattr(self, n)]
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
        if self.cutoffs and not self.adaptive_softmax:
            raise RnnlabError("--cutoffs needs --adaptive-softmax")
        if any(a >= b for a, b in zip(self.cutoffs, self.cutoffs[1:])):
            raise RnnlabError(f"--cutoffs must increase, got {','.join(map(str, self.cutoffs))}")
        if self.adaptive_softmax and self.tie_weights:
            raise RnnlabError(
                "--tie-weights cannot be used with --adaptive-softmax: tying an adaptive "
                "softmax's clusters to the embedding is not supported; leave one out"
            )


MODEL_FIELDS = tuple(f.name for f in fields(ModelConfig))

# Options that may change when a run is resumed: they do not change what is computed
# batch by batch (more epochs, a longer time limit or more patience only extend the
# run; under --schedule cosine the first two also stretch the rest of the schedule).
# Every other option is fixed, but for --impl between the one-hot implementations,
# which share their parameters.
RESUMABLE_CHANGES = (
    "epochs",
    "time_limit",
    "patience",
    "device",
    "cuda_graph",
    "prefix",
    "sample_every",
    "checkpoint_every",
    "threads",
    "tensorboard",
)
# Which checkpoint of a run generate and eval read (checkpoint.load_run): the one of the
# lowest validation loss (the latest where there is none yet), or the latest.
CHECKPOINT_CHOICES = ("best", "latest")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; the defaults are the notes' model (d2l 8.5).

    A one-hot RNN with 512 hidden units, SGD with lr 1, gradients clipped to norm 1,
    minibatches of B=32 streams by T=35 steps, sequential partitioning.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    source: str = option("timemachine", SOURCE_HELP, check="path", flag=False)  # positional
    mode: str = option(
        "letters",
        "tokenization: " + "; ".join(f"{k}: {v}" for k, v in MODES.items()),
        choices=tuple(MODES),
    )
    max_tokens: int | None = option(
        None,
        "use only the first N tokens of the corpus (default: all)",
        check="positive",
        at_most=MAX_TOKENS,
    )
    val_frac: float = option(
        0.1,
        "fraction of the text, at its end, held out for validation (ptb uses its own valid file)",
        check="fraction",
    )
    batch_size: int = option(
        32, "minibatch size B (parallel streams)", check="positive", at_most=MAX_BATCH
    )
    num_steps: int = option(
        35,
        "time steps T per minibatch (truncated backpropagation length)",
        check="positive",
        at_most=MAX_BATCH,
    )
    sampling: str = option(
        "sequential",
        "sequential: state carried from batch to batch; random: shuffled subsequences, fresh state",
        choices=SAMPLINGS,
    )
    epochs: int = option(
        50,
        "epochs to train (on --resume, a larger number trains longer)",
        check="positive",
        at_most=MAX_EPOCHS,
    )
    lr: float = option(1.0, "learning rate", check="rate", at_most=MAX_LR)
    schedule: str = option(
        "constant",
        "learning-rate schedule: constant; cosine: linear warm-up over --warmup batches, "
        "then cosine decay to --min-lr-frac x --lr by the end of the run (its --epochs, or "
        "its --time-limit); plateau: divide the rate by 4 after each epoch whose validation "
        "loss is not the lowest so far",
        choices=SCHEDULES,
    )
    warmup: int = option(
        0,
        "batches of linear warm-up from 0 to --lr (--schedule cosine)",
        check="count",
        at_most=MAX_TOKENS,
    )
    min_lr_frac: float = option(
        0.0, "the rate --schedule cosine decays to, as a fraction of --lr", check="dropout"
    )
    patience: int = option(
        0,
        "stop when N epochs pass without a lower validation loss (0: never; may change "
        "on --resume)",
        check="count",
        at_most=MAX_EPOCHS,
    )
    time_limit: float | None = option(
        None,
        "stop after this many minutes of training, counted across resumes, with a "
        "checkpoint; --resume with a larger one continues (default: no limit)",
        check="rate",
        at_most=MAX_MINUTES,
        metavar="MINUTES",
    )
    eval_batch_size: int = option(
        0,
        "streams the validation split is scored in at once (0: --batch-size)",
        check="count",
        at_most=MAX_BATCH,
    )
    optimizer: str = option("sgd", "optimizer", choices=tuple(OPTIMIZERS))
    weight_decay: float | None = option(
        None,
        "weight decay: L2 for sgd and adam, decoupled for adamw (Loshchilov & Hutter 2019) "
        "(default: the optimizer's own: 0, or 0.01 for adamw)",
        check="nonnegative",
        at_most=MAX_WEIGHT_DECAY,
    )
    clip: float = option(
        1.0, "clip the gradient to this global L2 norm", check="rate", at_most=MAX_CLIP
    )
    ema: float = option(
        0.0,
        "keep an exponential moving average of the weights with this decay (e.g. 0.999): "
        "it is validated, chosen as the best and saved as the model (0: off)",
        check="dropout",
    )
    device: str = option(
        "auto", "where to train; auto picks cuda when a GPU is available", choices=DEVICES
    )
    cuda_graph: bool = option(
        False,
        "capture the training step once as a CUDA graph and replay it (--device cuda, "
        "--impl fused or triton); experimental: never yet run on a GPU",
    )
    seed: int = option(
        0,
        "random seed (initialization, batch order, dropout), below 2**64",
        check="count",
        at_most=MAX_SEED,
    )
    prefix: str | None = option(
        None,
        "prompt of the samples printed during training and the "
        "default of generate (default: the start of the "
        "training text)",
    )
    sample_every: int = option(
        10,
        "print a greedy sample every N epochs (0: only at the end)",
        check="count",
        at_most=MAX_EPOCHS,
    )
    checkpoint_every: int = option(
        0,
        "also checkpoint every N batches (0: at the end of each epoch only)",
        check="count",
        at_most=MAX_TOKENS,
    )
    threads: int = option(
        0,
        "CPU threads for torch, at most this machine's CPUs (0: the cores other programs "
        "leave free, looked at again every 2 s, or OMP_NUM_THREADS where it is set); give a "
        "number for runs that repeat bit for bit",
        check="count",
        at_most=MAX_THREADS,
    )
    tensorboard: bool = option(
        False,
        "also write the curves (loss, perplexity, bits per token, rate, gradient norm, "
        "tokens/s) to RUN/tensorboard/ for TensorBoard; needs pip install "
        "'rnnlab[tensorboard]' (may be added on --resume)",
    )

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelConfig):
            raise RnnlabError(f"the model options must be a ModelConfig, got {shown(self.model)}")
        check_fields(self)
        if self.schedule != "cosine" and (self.warmup or self.min_lr_frac):
            raise RnnlabError(
                f"--warmup and --min-lr-frac shape --schedule cosine, and this run's schedule "
                f"is {self.schedule}; add --schedule cosine, or leave them out"
            )
        if self.cuda_graph and self.schedule == "cosine":
            raise RnnlabError(
                "--cuda-graph freezes the learning rate when it captures the step, and "
                "--schedule cosine changes it every batch; leave out one of them"
            )

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TrainConfig:
        """A config from flat options (name -> value, as the command line gives them)."""
        model = {k: v for k, v in options.items() if k in MODEL_FIELDS}
        rest = {k: v for k, v in options.items() if k not in MODEL_FIELDS}
        known = {f.name for f in fields(cls)} - {"model"}
        unknown = sorted(shown(name) for name in set(rest) - known)
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
            return cls.from_options(data)  # checks every value's type and range
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
    length: int = option(100, "tokens to generate", check="positive", at_most=MAX_LENGTH)
    temperature: float = option(
        0.0,
        "0: greedy (most likely token); > 0: sample from softmax(logits / T)",
        check="temperature",
        at_most=MAX_TEMPERATURE,
    )
    top_k: int = option(
        0, "sample only among the K most likely tokens (0: all)", check="count", at_most=MAX_VOCAB
    )
    seed: int | None = option(
        None,
        "random seed for sampling, below 2**64 (default: unseeded)",
        check="count",
        at_most=MAX_SEED,
    )
    device: str = option("cpu", "where to run the model", choices=DEVICES)
    checkpoint: str = option(
        "best",
        "best: the weights of the lowest validation loss (the latest where there is "
        "none yet); latest: the last checkpoint saved",
        choices=CHECKPOINT_CHOICES,
    )
    stream: bool | None = option(
        None,
        "print each token as it is generated (default: when the output is a terminal)",
    )
    num_samples: int = option(
        1,
        "how many continuations of the prompt to print, one after another (with --seed, "
        "seeds SEED, SEED+1, ...)",
        check="positive",
        at_most=MAX_SAMPLES,
    )

    def __post_init__(self) -> None:
        check_fields(self)


# A host name or address as --allow-host takes it: letters, digits and . - _ (and : for an
# IPv6 address); no scheme, no port, no path.
HOST_NAME = re.compile(
    r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*"
)

CHECKPOINT_HELP = (
    "best: the weights of the lowest validation loss (the latest where there is none yet); "
    "latest: the last checkpoint saved"
)


@dataclass(frozen=True)
class ServeConfig:
    """Where ``serve`` puts the page that looks inside a run."""

    host: str = option(
        "127.0.0.1",
        "the address to listen on; anything but this machine's own (127.0.0.1, localhost, "
        "::1) lets other machines open the page",
        check="path",
        metavar="ADDRESS",
    )
    port: int = option(8000, "the port to listen on (0: any free one)", check="count",
                       at_most=65535)  # fmt: skip
    checkpoint: str = option("best", CHECKPOINT_HELP, choices=CHECKPOINT_CHOICES)
    # Repeatable (--allow-host a --allow-host b): the command line adds it to serve itself.
    allow_host: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "one more name the page answers to, such as a reverse proxy's (it "
            "always answers to localhost, this machine's name and addresses, and --host); "
            "repeat it for several. Any other name in a request's Host is refused, so that "
            "no web site can reach the page through a name of its own (DNS rebinding)",
            "flag": False,
        },
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if not isinstance(self.allow_host, (tuple, list)):
            raise RnnlabError(f"--allow-host must be a list of names, got {shown(self.allow_host)}")
        for name in self.allow_host:
            if not (isinstance(name, str) and HOST_NAME.fullmatch(name.strip("[]"))):
                raise RnnlabError(
                    f"--allow-host {shown(name)} is not a host name; give a name such as "
                    f"proxy.example.com (no scheme, no port)"
                )


@dataclass(frozen=True)
class InspectConfig:
    """What ``inspect`` writes: one self-contained HTML page of a run reading a text."""

    html: str | None = option(None, "the HTML file to write (required)", check="path",
                              metavar="OUT.html")  # fmt: skip
    text: str | None = option(
        None,
        "a UTF-8 text file to read (default: the start of the run's validation split)",
        check="path",
        metavar="FILE",
    )
    checkpoint: str = option("best", CHECKPOINT_HELP, choices=CHECKPOINT_CHOICES)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.html is None:
            raise RnnlabError("give --html OUT.html, the file to write the page to")


@dataclass(frozen=True)
class ExportConfig:
    """What ``export`` writes: the model's step function as a file other programs run."""

    format: str = option("onnx", "the file format: " + "; ".join(
        f"{k}: {v}" for k, v in EXPORT_FORMATS.items()), choices=tuple(EXPORT_FORMATS))  # fmt: skip
    out: str | None = option(None, "the model file to write, the vocabulary beside it "
                             "(required)", check="path", metavar="FILE")  # fmt: skip
    checkpoint: str = option("best", CHECKPOINT_HELP, choices=CHECKPOINT_CHOICES)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.out is None:
            raise RnnlabError("give --out FILE, the model file to write")


@dataclass(frozen=True)
class EvalConfig:
    """What ``eval`` measures: the run's validation split, a built-in split, or a file."""

    source: str | None = option(
        None,
        "held-out text: " + SOURCE_HELP + " (default: the run's own validation split)",
        check="path",
        flag=False,
    )
    split: str | None = option(
        None,
        "for a built-in corpus with splits (ptb): which one (default: the run's validation split)",
        choices=HELD_OUT_SPLITS,
    )
    device: str = option("cpu", "where to run the model", choices=DEVICES)
    checkpoint: str = option(
        "best",
        "best: the weights of the lowest validation loss (the latest where there is "
        "none yet); latest: the last checkpoint saved",
        choices=CHECKPOINT_CHOICES,
    )
    batch_size: int = option(
        0,
        "streams scored at once (0: the run's --eval-batch-size, else its --batch-size)",
        check="count",
        at_most=MAX_BATCH,
    )
    block_size: int = option(
        0,
        "score the text as nanoGPT does: non-overlapping blocks of N tokens, each from a "
        "zero state (0: the state carried through the whole text)",
        check="count",
        at_most=MAX_BATCH,
    )
    json: bool = option(
        False, "print one JSON object (ppl, bpt, loss, tokens, ...) instead of a line"
    )

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class DataConfig:
    """What ``data`` shows of a corpus."""

    source: str = option("timemachine", SOURCE_HELP, check="path", flag=False)
    mode: str = option("letters", "tokenization mode", choices=tuple(MODES))
    max_tokens: int | None = option(
        None, "use only the first N tokens (default: all)", check="positive", at_most=MAX_TOKENS
    )
    top: int = option(10, "how many frequent tokens to list", check="count", at_most=MAX_VOCAB)
    json: bool = option(False, "print one JSON object instead of text")

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class BenchConfig:
    """What ``bench`` times: each implementation, cell and size, side by side."""

    device: str = option("cpu", "where to time", choices=("cpu", "cuda"))
    impls: tuple[str, ...] = list_option(
        tuple(i for i in IMPLS if i not in EXPERIMENTAL_IMPLS),
        "comma-separated implementations (experimental ones only when named)",
        choices=tuple(IMPLS),
    )
    cells: tuple[str, ...] = list_option(CELLS, "comma-separated cells", choices=CELLS)
    hidden: tuple[int, ...] = list_option(
        (256, 512),
        "comma-separated hidden sizes",
        item=int,
        item_check="positive",
        at_most=MAX_WIDTH,
    )
    layers: int = option(1, "stacked recurrent layers L", check="positive", at_most=MAX_LAYERS)
    batch_size: tuple[int, ...] = list_option(
        (32,),
        "comma-separated minibatch sizes B (each timed with each --num-steps)",
        item=int,
        item_check="positive",
        at_most=MAX_BATCH,
    )
    num_steps: tuple[int, ...] = list_option(
        (35,),
        "comma-separated time steps T per minibatch",
        item=int,
        item_check="positive",
        at_most=MAX_BATCH,
    )
    no_floor: bool = option(
        False,
        "skip timing the floor (the matrix products a training step cannot avoid) and "
        "the fraction of it each row reaches",
    )
    batches: int = option(
        20, "timed batches per configuration", check="positive", at_most=MAX_EPOCHS
    )
    warmup: int = option(3, "untimed batches before timing", check="count", at_most=MAX_EPOCHS)
    seed: int = option(
        0,
        "random seed of the initial weights and the batches, below 2**64",
        check="count",
        at_most=MAX_SEED,
    )
    threads: int = option(
        0,
        "torch's CPU threads for every implementation, at most this machine's CPUs "
        "(0: torch's default)",
        check="count",
        at_most=machine_cpus,
    )
    json: bool = option(False, "print the rows as JSON instead of a table")
    out: str | None = option(
        None,
        "also write the rows, with the date, torch version and threads, as JSON to this file",
        check="path",
    )

    def __post_init__(self) -> None:
        check_fields(self)
