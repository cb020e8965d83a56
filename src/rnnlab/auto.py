"""``--recipe auto``: the options for a text and a time budget, from a measured table.

    rnnlab train my_text.txt --recipe auto --time-limit 5

The choice is made from three things:

* the text: its kind (``chars`` or ``words``, the run's --mode), its training tokens and
  its vocabulary;
* the budget: the minutes given, converted into the table's minutes by this machine's
  speed today (``reference_speed``: a fixed small LSTM trained for a few seconds, the
  same one the sweep measured before each of its runs), so that a slow day buys a
  smaller model, as it should; then converted again by the chosen candidate's own
  speed (``candidate_speed``) against the same timing taken before its run in the
  table (``step_speed``);
* the table (``auto_table.json``, written by ``benchmarks/sweep.py table`` from the
  sweep's rows): for each text the sweep trained and each budget, the candidates it
  tried, ranked by validation loss.

The text of the same kind nearest in size (on a log scale) is taken, then its budget
nearest to the converted minutes, and that budget's best candidate, or a shorter budget's
best where that did better (trained for the minutes that budget is worth). Its options are
then fitted to the text: a text too small for the candidate's batch gets smaller
batches (``fit_batch``), and a candidate the table ran in bfloat16 is left out where
the CPU has no bfloat16 instructions (``runs_here``). The warm-up ends at a tenth of the
time limit at the latest and the cosine decay runs over the limit, or over the
candidate's epochs where it plans fewer (``shakespeare``: 6) and they end first
(rnnlab.schedule), and the best checkpoint (validated at every epoch's end and where
the limit stops the run) is what ``eval`` and ``generate`` read.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

import torch
from torch import nn

from .errors import RnnlabError
from .heap import keep_freed_memory
from .models.layout import num_gates
from .recipes import PTB_LSTM, RECIPES, options_for
from .recipes import describe as describe_recipes

TABLE_FILE = "auto_table.json"
MIN_EPOCH_BATCHES = 20  # a smaller text gets smaller batches until an epoch holds this many
MIN_STEPS = 16  # ... but sequences no shorter than this
EPOCHS = 10_000  # the time limit ends an auto run, unless its candidate plans fewer epochs

# What every character candidate shares: AWD-LSTM's locked dropout and AdamW, a cosine
# decay over the time limit (its floor 0), a 64-wide embedding, clipping at 1.
_CHARS = {
    "impl": "torch",
    "cell": "lstm",
    "embedding": 64,
    "optimizer": "adamw",
    "weight_decay": 0.01,
    "schedule": "cosine",
    "clip": 1.0,
    "num_steps": 64,
}
# The word candidates: the Penn Treebank recipes' tied LSTMs and word_language_model's SGD,
# the rate decayed on a cosine over the time limit.
_WORDS = {
    **{k: v for k, v in PTB_LSTM.items() if k not in ("source", "mode", "epochs")},
    "schedule": "cosine",
}

# The fixed recipes the sweep also tries, each exactly as the recipe is (its epochs and
# patience too) but for the time limit: the table then says how they do at each budget.
RECIPE_CANDIDATES = {"chars": ("shakespeare-quick", "shakespeare", "char-lstm"),
                     "words": ("ptb-small", "ptb-bf16")}  # fmt: skip
_NOT_MODEL = ("source", "mode", "val_frac", "time_limit")

# The configurations the sweep tries, by kind.
CANDIDATES: dict[str, dict[str, dict[str, Any]]] = {
    "chars": {
        "lstm-1x256": {**_CHARS, "hidden": 256, "layers": 1, "lr": 4e-3, "warmup": 50,
                       "batch_size": 16},
        "lstm-1x256-random": {**_CHARS, "hidden": 256, "layers": 1, "lr": 4e-3, "warmup": 50,
                              "batch_size": 16, "sampling": "random"},
        "lstm-2x384": {**_CHARS, "hidden": 384, "layers": 2, "dropout": 0.1,
                       "locked_dropout": True, "lr": 3e-3, "warmup": 100, "batch_size": 16},
    },
    "words": {
        "words-1x200": {**_WORDS, "layers": 1, "embedding": 200, "hidden": 200,
                        "dropout": 0.2, "dropout_input": 0.2},
        "words-2x200-d1": {**_WORDS, "embedding": 200, "hidden": 200, "dropout": 0.1,
                           "dropout_input": 0.1},
        "words-2x400": {**_WORDS, "embedding": 400, "hidden": 400, "dropout": 0.4,
                        "dropout_input": 0.4},
    },
}  # fmt: skip
for _kind, _names in RECIPE_CANDIDATES.items():
    for _name in _names:
        CANDIDATES[_kind][_name] = {
            k: v for k, v in RECIPES[_name].options.items() if k not in _NOT_MODEL
        }


def kind_of(mode: str) -> str:
    """The table's kind of a --mode: ``words``, or ``chars`` for the character modes."""
    return "words" if mode == "words" else "chars"


# ---------------------------------------------------------------- the machine's speed


REFERENCE: dict[str, Any] = {"vocab": 96, "embedding": 64, "hidden": 256, "batch": 16, "steps": 64}


def reference_speed(seconds: float = 3.0) -> float:
    """Tokens per second this machine trains the reference model at, now.

    The reference (REFERENCE: a one-layer LSTM of 256 units on random tokens of a
    96-symbol vocabulary, batch 16 x 64, AdamW) is trained for about ``seconds`` after
    two untimed steps, with torch's threads as they are set; the speed is that of its
    median step.
    """
    r = REFERENCE
    generator = torch.Generator().manual_seed(0)
    embed = nn.Embedding(r["vocab"], r["embedding"])
    lstm = nn.LSTM(r["embedding"], r["hidden"])
    head = nn.Linear(r["hidden"], r["vocab"])
    params = [*embed.parameters(), *lstm.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    X = torch.randint(r["vocab"], (r["steps"], r["batch"]), generator=generator)
    Y = torch.randint(r["vocab"], (r["steps"], r["batch"]), generator=generator)

    def step() -> None:
        out, _ = lstm(embed(X))
        loss = nn.functional.cross_entropy(head(out).flatten(0, 1), Y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return _median_speed(step, r["batch"] * r["steps"], seconds)


def candidate_speed(options: dict[str, Any], vocab: int, seconds: float = 3.0) -> float:
    """Tokens per second this machine trains the candidate ``options`` describe (its batch
    as the table ran it) with a vocabulary of ``vocab``, now: rnnlab's training step on
    random tokens, timed as ``reference_speed`` times the reference. The reference stands
    for a small character model; a word model's step is mostly its output layer, which a
    day's speed can move quite differently (docs/results.md §4), so auto converts the
    minutes by the chosen candidate's own speed."""
    from .config import TrainConfig
    from .models import build_model
    from .train import make_optimizer, make_step

    cfg = TrainConfig.from_options({**options, "time_limit": 1.0})
    model: Any = build_model(cfg.model, vocab).train()
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
    update = make_step(model, optimizer, cfg.clip, precision=cfg.precision)
    generator = torch.Generator().manual_seed(0)
    X, Y = torch.randint(vocab, (2, cfg.batch_size, cfg.num_steps), generator=generator)
    state = [model.begin_state(cfg.batch_size)]

    def step() -> None:
        state[0] = update(X, Y, state[0])[2]

    return _median_speed(step, cfg.batch_size * cfg.num_steps, seconds)


@functools.cache
def fast_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX-512 BF16 or AMX tiles, as
    torch reports them; torch has no public call for it). Elsewhere bfloat16 is emulated,
    slower than float32, so auto leaves out the candidates the table ran in bfloat16."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def runs_here(options: dict[str, Any]) -> bool:
    """Whether a candidate can run here as fast as the table measured it: a bfloat16
    candidate needs :func:`fast_bfloat16`."""
    return options.get("precision", "float32") != "bfloat16" or fast_bfloat16()


def _median_speed(step: Callable[[], None], tokens: int, seconds: float) -> float:
    """Tokens per second of ``step`` (``tokens`` each), from its median over about
    ``seconds`` after two untimed calls: a burst of load from another program hardly
    moves it. Timed as a run trains, with the process keeping freed memory
    (rnnlab.heap): without it a word model's step maps its large blocks afresh each time
    (`ptb-bf16`'s read 12,800 and 17,200 tokens/s, against 19,300 and 20,900 with it)."""
    keep_freed_memory()
    for _ in range(2):
        step()
    times: list[float] = []
    while sum(times) < seconds:
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    times.sort()
    return tokens / times[len(times) // 2]


# ---------------------------------------------------------------- the table


# What ranks the candidates: for characters the validation loss in nanoGPT's protocol at
# its GPU recipe's 256-character blocks (each from a zero state: a model must read well
# both from nothing and over a long stretch), for words rnnlab's carried-state loss, as
# word_language_model and the Penn Treebank literature report it.
METRIC = {"chars": "val_loss_block256", "words": "val_loss"}
METRIC_NAME = {
    "chars": "validation loss in 256-character blocks",
    "words": "validation loss",
}


@dataclass(frozen=True)
class Cell:
    """One text and budget of the sweep: its candidates, best first."""

    text: str
    minutes: float
    reference_tokens_per_s: float  # the reference's speed measured with these runs
    # best first: {"candidate", "loss" (METRIC), "tokens_per_s" (training), and where the
    # sweep took it "step_tokens_per_s" (candidate_speed, just before the run)}
    ranking: list[dict[str, Any]]


@dataclass(frozen=True)
class Table:
    texts: dict[str, dict[str, Any]]  # name -> {"kind", "train_tokens", "vocab"}
    cells: list[Cell]


def load_table(raw: str | None = None) -> Table:
    """The measured table shipped with rnnlab (or the JSON text ``raw``)."""
    if raw is None:
        raw = resources.files("rnnlab").joinpath(TABLE_FILE).read_text(encoding="utf-8")
    data = json.loads(raw)
    cells = [Cell(**cell) for cell in data["cells"]]
    return Table(data["texts"], [c for c in cells if c.ranking])


@dataclass(frozen=True)
class Choice:
    """What --recipe auto chose: the options and the paragraph that says why."""

    options: dict[str, Any]
    why: str
    cell: Cell  # the table's text and budget the candidate comes from


def step_speed(run: dict[str, Any]) -> float:
    """What a candidate's :func:`candidate_speed` now is compared with, for one of its runs
    in the table: the same timing, taken by the sweep just before that run, where the row
    has it (``step_tokens_per_s``); else, for the rows measured before the sweep took it,
    the run's training speed (the step alone read from 30 % below to 25 % above it)."""
    return float(run.get("step_tokens_per_s", run["tokens_per_s"]))


def _nearest(values, target: float, key) -> Any:
    """The value whose key is nearest ``target`` on a log scale (ties: the first)."""
    return min(values, key=lambda v: abs(math.log(key(v) / target)))


def token_cost(options: dict[str, Any], vocab: int) -> float:
    """Multiply-adds per token of a forward step of the model ``options`` describe, with
    a vocabulary of ``vocab``: G*H*(H + input) per layer, then H*V for the output. The
    training speed of a model on another vocabulary scales by the ratio of these."""
    H, G = options["hidden"], num_gates(options["cell"])
    first = options.get("embedding") or vocab
    layers = sum(G * H * (H + (first if layer == 0 else H)) for layer in range(options["layers"]))
    return layers + H * vocab


def fit_batch(options: dict[str, Any], train_tokens: int) -> dict[str, Any]:
    """``options`` with batches small enough that an epoch of ``train_tokens`` holds at
    least MIN_EPOCH_BATCHES of them: the batch halved first, then the sequence length."""
    B, T = options["batch_size"], options["num_steps"]

    def batches(B: int, T: int) -> int:
        return (train_tokens - 1) // (B * T)

    while batches(B, T) < MIN_EPOCH_BATCHES and B > 1:
        B //= 2
    while batches(B, T) < MIN_EPOCH_BATCHES and T > MIN_STEPS:
        T //= 2
    if batches(B, T) < 1:
        raise RnnlabError(
            f"the text has {train_tokens} training tokens, too few for one batch of {B} x {T}; "
            f"give a longer text"
        )
    return {**options, "batch_size": B, "num_steps": T}


def choose(
    kind: str,
    train_tokens: int,
    vocab: int,
    minutes: float,
    speed: float,
    table: Table | None = None,
    timed: tuple[str, float] | None = None,
) -> Choice:
    """The options for a text of ``kind`` with ``train_tokens`` training tokens and a
    vocabulary of ``vocab``, trained for ``minutes`` on a machine whose reference speed
    is ``speed`` tokens/s now. ``timed`` (candidate, tokens/s): where ``speed`` was read
    from a candidate's own timing (``options_for_text``), for the paragraph."""
    table = table or load_table()
    texts = [name for name, t in table.texts.items() if t["kind"] == kind]
    usable = [
        replace(c, ranking=[r for r in c.ranking if runs_here(CANDIDATES[kind][r["candidate"]])])
        for c in table.cells
        if c.text in texts
    ]
    cells = [c for c in usable if c.ranking]
    left_out = sorted(
        {r["candidate"] for c in table.cells if c.text in texts for r in c.ranking}
        - {r["candidate"] for c in cells for r in c.ranking}
    )
    if not cells:
        lacking = f" ({', '.join(left_out)}: bfloat16, which this CPU lacks)" if left_out else ""
        raise RnnlabError(
            f"rnnlab's table has no measured {kind} candidate that runs here{lacking}, so "
            f"--recipe auto cannot choose for --mode {'words' if kind == 'words' else 'chars'}; "
            f"give a named recipe (rnnlab recipes lists them)"
        )
    text = _nearest(
        sorted({c.text for c in cells}), train_tokens, lambda t: table.texts[t]["train_tokens"]
    )
    here = sorted((c for c in cells if c.text == text), key=lambda c: c.minutes)
    # A larger vocabulary makes every step dearer: the minutes buy less, by the ratio of
    # the reference model's cost on the table's text and on this one.
    reference = {"cell": "lstm", "layers": 1, **REFERENCE}
    vocab_factor = token_cost(reference, table.texts[text]["vocab"]) / token_cost(reference, vocab)

    def timed_run(c: Cell) -> dict[str, Any] | None:
        """The timed candidate's run in cell ``c``, where it ran there."""
        names = () if timed is None else (timed[0],)
        return next((r for r in c.ranking if r["candidate"] in names), None)

    def rate(c: Cell) -> float:
        """This machine's speed now over the speed of cell ``c``'s runs: the timed
        candidate's against its own run there, where it ran there (the cells come from
        different days, and the reference has read a day's speed 2 times off for a word
        model); else the reference's against the cell's."""
        run = timed_run(c)
        if timed is not None and run is not None:
            return timed[1] / step_speed(run)
        return speed / c.reference_tokens_per_s

    # The table's minutes that this machine's minutes are worth, cell by cell.
    def worth(c: Cell) -> float:
        return minutes * rate(c) * vocab_factor

    nearest = _nearest(here, 1.0, lambda c: c.minutes / worth(c))
    # A longer budget can do what a shorter one did: where a shorter budget's best reached
    # a lower loss (a small text overfits in a long run), train that, for the minutes here
    # its budget is worth, and stop there.
    cell = min(
        (c for c in here if c.minutes <= nearest.minutes),
        key=lambda c: (c.ranking[0]["loss"], -c.minutes),
    )
    train_minutes = minutes if cell is nearest else round(minutes * cell.minutes / worth(cell), 2)
    best = cell.ranking[0]
    candidate = CANDIDATES[kind][best["candidate"]]
    options = fit_batch(candidate, train_tokens)
    # The candidate's training speed on this machine: its speed in the table's run, scaled
    # as its own step's timing is (where it was timed) or else the reference's
    its_speed = best["tokens_per_s"] * rate(cell)
    expected_speed = (
        its_speed * token_cost(candidate, table.texts[text]["vocab"]) / token_cost(candidate, vocab)
    )
    batch_tokens = options["batch_size"] * options["num_steps"]
    options = {"epochs": EPOCHS, **options, "time_limit": train_minutes}
    expected_batches = min(
        train_minutes * 60 * expected_speed / batch_tokens,
        options["epochs"] * (train_tokens // batch_tokens),  # where its epochs end first
    )
    about = table.texts[text]
    vocab_note = (
        ""
        if abs(vocab_factor - 1) < 0.05
        else f", and its vocabulary makes a step {1 / vocab_factor:.2g} times as costly as on "
        f"{text}'s"
    )
    runner_up = (
        f", ahead of {cell.ranking[1]['candidate']} ({cell.ranking[1]['loss']:.3f})"
        if len(cell.ranking) > 1
        else ""
    )
    epochs_note = (
        f" or its {options['epochs']} epochs, whichever ends first"
        if options["epochs"] < EPOCHS
        else ""
    )
    fitted = options["batch_size"], options["num_steps"]
    original = CANDIDATES[kind][best["candidate"]]
    batch_note = f"batch {fitted[0]} x {fitted[1]}" + (
        ""
        if fitted == (original["batch_size"], original["num_steps"])
        else f" (made smaller from {original['batch_size']} x {original['num_steps']} "
        f"so that an epoch holds at least {MIN_EPOCH_BATCHES} batches)"
    )
    run = timed_run(nearest)
    against = (
        f"{nearest.reference_tokens_per_s:,.0f} when the table's {nearest.minutes:g}-minute "
        f"runs were measured"
    )
    if timed is None:
        measured = (
            f"trains the reference model at {speed:,.0f} tokens/s now (measured for a few "
            f"seconds), against {against}"
        )
    elif run is not None:
        then = (
            "timed the same way before its run of"
            if "step_tokens_per_s" in run
            else "in its run of"
        )
        measured = (
            f"trains {timed[0]} at {timed[1]:,.0f} tokens/s now (timed for a few seconds), "
            f"against {step_speed(run):,.0f} {then} the table's {nearest.minutes:g}-minute "
            f"budget"
        )
    else:
        measured = (
            f"trains {timed[0]} at {timed[1]:,.0f} tokens/s now (timed for a few seconds), as "
            f"fast as the table's runs would have been with the reference model at "
            f"{speed:,.0f} tokens/s, against {against}"
        )
    why = (
        f"--recipe auto: the text has {train_tokens:,} training {kind} and a vocabulary of "
        f"{vocab:,}. This machine {measured}{vocab_note}, so {minutes:g} minute(s) here are worth "
        f"{worth(nearest):.3g} of the table's. The table's nearest {kind} text is {text} "
        f"({about['train_tokens']:,} training {kind}, vocabulary {about['vocab']:,}) and "
        f"its nearest budget {nearest.minutes:g} minute(s), where "
        f"{nearest.ranking[0]['candidate']} reached a {METRIC_NAME[kind]} of "
        f"{nearest.ranking[0]['loss']:.3f}"
        + (
            f"{runner_up}. "
            if cell is nearest
            else f"; its {cell.minutes:g}-minute budget did better, {best['candidate']} "
            f"{best['loss']:.3f}{runner_up} (there the longer run did worse), so it "
            f"trains for the {train_minutes:g} of your {minutes:g} minute(s) that budget "
            f"is worth. "
        )
        + (
            f"({', '.join(left_out)} left out: the table ran them in bfloat16, which this "
            f"CPU has no instructions for.) "
            if left_out
            else ""
        )
        + f"Chosen: {best['candidate']}, {batch_note}, about {expected_batches:,.0f} batches "
        f"at about {expected_speed:,.0f} tokens/s, the rate warmed up over "
        f"{options.get('warmup', 0)} batches (or a tenth of the time, if sooner) and decayed "
        f"on a cosine over the {train_minutes:g} minutes{epochs_note}; the best checkpoint "
        f"is kept."
    )
    return Choice(options, why, cell)


def describe(table: Table | None = None) -> str:
    """Every recipe, then auto and its table, as ``rnnlab recipes`` prints them."""
    table = table or load_table()
    lines = []
    for cell in sorted(table.cells, key=lambda c: (c.text, c.minutes)):
        ranked = ", ".join(f"{r['candidate']} {r['loss']:.3f}" for r in cell.ranking)
        lines.append(f"    {cell.text}, {cell.minutes:g} min: {ranked}")
    return (
        describe_recipes()
        + "\n\nauto\n  rnnlab train TEXT --recipe auto --time-limit MINUTES: the model, batch, "
        "rate and schedule for the text's size and kind and for the minutes at this machine's "
        "speed, from the table the project measured (benchmarks/sweep.py): each candidate's "
        "validation loss (characters: in 256-character blocks, nanoGPT's protocol), best "
        "first, by text and budget:\n"
        + ("\n".join(lines) if lines else "    (no rows measured yet)")
    )


def options_for_text(given: dict[str, Any]) -> Choice:
    """--recipe auto's options for the command line's options ``given`` (flat names, as
    TrainConfig.options()): the table's choice for its text and --time-limit, with the
    options given on top. The text is read here to count its tokens and vocabulary."""
    from .config import TrainConfig
    from .data import prepare

    minutes = given.get("time_limit")
    if minutes is None:
        raise RnnlabError(
            "--recipe auto fits the model to a time budget: give --time-limit MINUTES (for "
            "example --time-limit 5)"
        )
    if "threads" in given and given["threads"]:
        torch.set_num_threads(given["threads"])
    speed = reference_speed()  # first, in a fresh process, as the sweep measured it
    defaults = TrainConfig()
    mode = str(given.get("mode") or "chars")
    if mode not in ("chars", "words"):
        raise RnnlabError(
            f"--recipe auto trains --mode chars or --mode words, not --mode {given['mode']}; "
            f"leave --mode out for characters"
        )
    data = prepare(
        given.get("source", defaults.source),
        mode,
        given.get("max_tokens", defaults.max_tokens),
        given.get("val_frac", defaults.val_frac),
        1,
        1,
    )
    kind, tokens, vocab = kind_of(mode), len(data.train_ids), len(data.vocab)
    table = load_table()
    first = choose(kind, tokens, vocab, float(minutes), speed, table)
    # The reference's speed picks the candidate; the candidate's own speed, against its runs
    # in the table, then says what the minutes are worth for a model of its kind (in a cell
    # where it did not run: the reference's speed it stands for, against the cell's).
    best = first.cell.ranking[0]
    timed = candidate_speed(
        CANDIDATES[kind][best["candidate"]], table.texts[first.cell.text]["vocab"]
    )
    speed = first.cell.reference_tokens_per_s * timed / step_speed(best)
    choice = choose(kind, tokens, vocab, float(minutes), speed, table, (best["candidate"], timed))
    # The options given go on top, but for the budget: auto's time limit is what it chose
    # (shorter, where a shorter budget of the table did better).
    chosen = {**choice.options, "mode": mode, **given, "time_limit": choice.options["time_limit"]}
    return Choice(chosen, choice.why, choice.cell)


def recipe_options(name: str, given: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The options of ``--recipe NAME`` with the options ``given`` on top, and for ``auto``
    the paragraph that says what it chose and why (None for a fixed recipe)."""
    if name == "auto":
        choice = options_for_text(given)
        return choice.options, choice.why
    return options_for(name, given), None
