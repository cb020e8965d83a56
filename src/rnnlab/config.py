"""What a training run is: its model and its options, each with its default, help and check.

``ModelConfig`` says what builds a model; ``TrainConfig`` says the rest of a training run
and holds a ``ModelConfig``; a run directory keeps it as ``config.json``. The other
commands' options are rnnlab.command_config's. Each field carries its help text and, where
the values are a fixed list, that list (rnnlab.options, the one place each is written); the
command line builds its options from these fields, and each dataclass checks its values in
``__post_init__`` (the only place options are validated): each value's type, from its
annotation, and each number's range, up to ``at_most`` (a MAX_ constant of rnnlab.options,
or this machine's CPU count).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .corpus import CORPORA
from .errors import RnnlabError
from .options import (
    CELLS,
    DEVICES,
    IMPLS,
    MAX_BATCH,
    MAX_CLIP,
    MAX_EPOCHS,
    MAX_LAYERS,
    MAX_LR,
    MAX_MINUTES,
    MAX_SEED,
    MAX_THREADS,
    MAX_TOKENS,
    MAX_VOCAB,
    MAX_WEIGHT_DECAY,
    MAX_WIDTH,
    MODES,
    ONE_HOT_IMPLS,
    OPTIMIZERS,
    PRECISIONS,
    SAMPLINGS,
    SCHEDULES,
    check_fields,
    flag,
    list_option,
    option,
    shown,
)

SOURCE_HELP = (
    f"a built-in corpus ({', '.join(CORPORA)}) or the path of a UTF-8 text file or "
    f"of a folder of .txt files"
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
        "then cosine decay to --min-lr-frac x --lr by the end of the run (its --epochs or "
        "its --time-limit, whichever ends first); plateau: divide the rate by 4 after each "
        "epoch whose validation loss is not the lowest so far",
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
    precision: str = option(
        "float32",
        "arithmetic of the training step: float32; bfloat16: the matrix products and the "
        "recurrence in bfloat16 (torch.autocast), the weights, the loss and the optimizer in "
        "float32, validation in float32 (--impl torch; measured on the CPU only, never yet "
        "on a GPU)",
        choices=PRECISIONS,
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
        if self.precision != "float32" and self.model.impl != "torch":
            raise RnnlabError(
                f"--precision {self.precision} autocasts torch.nn's layers, and this run's "
                f"--impl is {self.model.impl}; add --impl torch, or leave --precision out"
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


def first_conflict(saved: TrainConfig, given: dict[str, Any]) -> tuple[str, str] | None:
    """The first of :func:`conflicts` as messages name it: ("--hidden 256", "--hidden 512")."""
    for name, (now, then) in conflicts(saved, given).items():
        return f"{flag(name)} {now!r}", f"{flag(name)} {then!r}"
    return None


def resumed(saved: TrainConfig, given: dict[str, Any]) -> TrainConfig:
    """The config a run resumes with: the saved one, with the options given now that may
    change (``given`` has passed :func:`conflicts`, so any other option is the saved one)."""
    changes = {k: v for k, v in given.items() if k in RESUMABLE_CHANGES or k == "impl"}
    return TrainConfig.from_options({**saved.options(), **changes})
