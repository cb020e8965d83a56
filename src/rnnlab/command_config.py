"""The options of the commands besides train: generate, serve, inspect, export, eval, data
and bench, each a frozen dataclass checked in ``__post_init__`` like rnnlab.config's.

The command line builds each command's options from these fields (their help, choices and
checks: rnnlab.options); a training run's own options are rnnlab.config's TrainConfig.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .config import SOURCE_HELP
from .errors import RnnlabError
from .options import (
    CELLS,
    CHECKPOINT_CHOICES,
    DEVICES,
    EXPERIMENTAL_IMPLS,
    EXPORT_FORMATS,
    HELD_OUT_SPLITS,
    IMPLS,
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_LAYERS,
    MAX_LENGTH,
    MAX_SAMPLES,
    MAX_SEED,
    MAX_TEMPERATURE,
    MAX_TOKENS,
    MAX_VOCAB,
    MAX_WIDTH,
    MODES,
    check_fields,
    list_option,
    machine_cpus,
    option,
    shown,
)


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
