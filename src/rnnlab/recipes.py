"""Recipes: named sets of training options, each with the result it was measured to reach.

    rnnlab recipes                                  # every recipe, its options and result
    rnnlab train --recipe char-lstm my_text.txt     # a recipe, on your own text
    rnnlab train --recipe shakespeare --epochs 3    # options given on the line win

A recipe only fills in options: ``options_for(name, given)`` returns the recipe's
options updated with the ones given on the command line, and training then runs as
if all of them had been typed. The run's config.json records the options that ran.

``measured`` says what the recipe reached on the project's 2-core CPU, with the
command and the date, or that it has not been measured yet; benchmarks/recipes.py
runs them and docs/results.md keeps the table.

Sources of the settings: ``book`` is d2l 8.5's model; ``ptb-small`` and
``ptb-medium`` follow Zaremba et al. (2014)'s small and medium sizes (2 layers of
200 and 650 units) trained as word_language_model trains them (SGD at learning rate
20, clipping at 0.25, dropout on the embeddings too, tied weights after Press & Wolf
2017); ``ptb-medium`` divides the rate by 4 when validation stops improving, as
word_language_model does, and ``ptb-small`` decays it on a cosine over its 30-minute
limit; ``ptb-bf16`` is ``ptb-small`` at 256 units in bfloat16 arithmetic, which buys
more epochs in the same minutes on a CPU that has bfloat16 instructions; the character
recipes use what AWD-LSTM found for recurrent language models
(locked dropout, AdamW) with a cosine schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import RnnlabError

NOT_MEASURED = "not measured yet"


@dataclass(frozen=True)
class Recipe:
    """A recipe: what it is for, its options (TrainConfig/ModelConfig names) and its result."""

    summary: str
    options: dict[str, Any] = field(default_factory=dict)
    measured: str = NOT_MEASURED


# The character models share their regularization and optimizer.
_CHAR_LSTM = {
    "mode": "chars",
    "impl": "torch",
    "cell": "lstm",
    "embedding": 64,
    "hidden": 512,
    "layers": 2,
    "dropout": 0.2,
    "locked_dropout": True,
    "optimizer": "adamw",
    "lr": 2e-3,
    "weight_decay": 0.01,
    "schedule": "cosine",
    "warmup": 100,
    "clip": 1.0,
    "batch_size": 64,
    "num_steps": 128,
}

# The word models: Penn Treebank, 2 tied LSTM layers, word_language_model's SGD.
PTB_LSTM = {
    "source": "ptb",
    "mode": "words",
    "impl": "torch",
    "cell": "lstm",
    "layers": 2,
    "tie_weights": True,
    "optimizer": "sgd",
    "lr": 20.0,
    "clip": 0.25,
    "schedule": "plateau",
    "batch_size": 20,
    "num_steps": 35,
    "epochs": 40,
}

RECIPES: dict[str, Recipe] = {
    "book": Recipe(
        "the notes' model (d2l 8.5): an RNN of 512 units on one-hot characters, SGD at "
        "learning rate 1, clipping at 1; rnnlab's defaults, written out",
        {
            "mode": "letters",
            "impl": "fused",
            "cell": "rnn",
            "hidden": 512,
            "layers": 1,
            "optimizer": "sgd",
            "lr": 1.0,
            "clip": 1.0,
            "batch_size": 32,
            "num_steps": 35,
            "schedule": "constant",
        },
        "on The Time Machine (letters, the last 10% held out): validation loss 1.703 nats per "
        "letter, perplexity 5.49, at epoch 49 of 50 (one run, 2.4 min wall, about 56,000 "
        "tokens/s; 2026-11-30, benchmarks/recipes.py book); the book's own table, 500 "
        "epochs on 10,000 tokens: benchmarks/timemachine.py",
    ),
    "char-lstm": Recipe(
        "a character model of your own text: 2 LSTM layers of 512 units with locked "
        "dropout, AdamW and a cosine schedule; stops when validation stops improving",
        {**_CHAR_LSTM, "epochs": 20, "patience": 3},
        "on The Time Machine (chars, the last 10% held out): validation loss 1.625 nats per "
        "character after 20 epochs, still falling (one run, 5.7 min wall, about 9,800 "
        "tokens/s; 2026-11-30, benchmarks/recipes.py char-lstm)",
    ),
    "shakespeare": Recipe(
        "the best character model of Tiny Shakespeare in 30 CPU-minutes (nanoGPT's split: "
        "the last 10% held out): 2 LSTM layers of 512 units with locked dropout, 6 epochs",
        {
            **_CHAR_LSTM,
            "source": "tinyshakespeare",
            "val_frac": 0.1,
            "dropout": 0.25,
            "batch_size": 32,
            "num_steps": 64,
            # Past about 7 epochs this model overfits the 1 M characters: the rate is decayed
            # over 6 epochs, or over the 30 minutes where a slow machine cannot train them.
            "epochs": 6,
            "time_limit": 30.0,
        },
        "validation loss 1.4388 and 1.4417 nats per character in nanoGPT's 256-character "
        "blocks (1.4153 and 1.4177 carried) after its 6 epochs; two runs of 5.5-5.6 min at "
        "about 18,000 tokens/s on a fast day (2026-12-04, benchmarks/targets.py "
        "shakespeare-30min); nanoGPT's GPU recipe reports 1.4697 in 256-character blocks",
    ),
    "shakespeare-quick": Recipe(
        "Tiny Shakespeare in 1 min 45 s of training, nanoGPT's CPU recipe's time: one LSTM "
        "layer of 512 units, no dropout, small batches for many updates",
        {
            "source": "tinyshakespeare",
            "mode": "chars",
            "val_frac": 0.1,
            "impl": "torch",
            "cell": "lstm",
            "embedding": 64,
            "hidden": 512,
            "layers": 1,
            "optimizer": "adamw",
            "lr": 3e-3,
            "weight_decay": 0.01,
            "schedule": "cosine",
            "warmup": 50,
            "clip": 1.0,
            "batch_size": 16,
            "num_steps": 64,
            "epochs": 100,
            "time_limit": 1.75,
        },
        "validation loss 1.494 and 1.487 nats per character, carried state (two runs, 109 s "
        "wall each, about 21,000 tokens/s; 2026-11-30, benchmarks/recipes.py "
        "shakespeare-quick); at 2 minutes on 2026-12-03 (15,300 tokens/s): 1.5185 carried, "
        "1.6156 in nanoGPT's 64-character blocks (its CPU recipe: about 1.88), 1.5410 in "
        "256 (benchmarks/sweep.py)",
    ),
    "ptb-small": Recipe(
        "Penn Treebank words, Zaremba et al.'s small size (2 x 200 LSTM) with tied "
        "weights and word_language_model's SGD, its rate decayed on a cosine over 30 "
        "CPU-minutes",
        {
            **PTB_LSTM,
            "embedding": 200,
            "hidden": 200,
            "dropout": 0.2,
            "dropout_input": 0.2,
            "schedule": "cosine",
            "time_limit": 30.0,
        },
        "test perplexity 90.14, validation 93.94 (the best checkpoint, epoch 14; one run, "
        "30.1 min wall, about 7,700 tokens/s; 2026-11-30, benchmarks/recipes.py ptb-small); "
        "word_language_model's tied 2 x 200 on a GPU: 110.44 after 6 epochs, 87.17 after 40",
    ),
    "ptb-bf16": Recipe(
        "Penn Treebank words in 30 CPU-minutes: ptb-small widened to 2 x 256 and trained in "
        "bfloat16 arithmetic, about twice float32's tokens/s on a CPU with AVX-512 BF16 "
        "(on the CPU: bfloat16 has not run on a GPU here)",
        {
            **PTB_LSTM,
            "embedding": 256,
            "hidden": 256,
            "dropout": 0.2,
            "dropout_input": 0.2,
            "schedule": "cosine",
            "time_limit": 30.0,
            "precision": "bfloat16",
            "device": "cpu",
        },
        "test perplexity 86.67 and 86.22, validation 90.05 and 89.90 (two runs, each 30 "
        "minutes scaled by the day's speed to 14.6: 17,861-18,230 tokens/s, 17 epochs; "
        "2026-12-04, benchmarks/targets.py ptb-30min); word_language_model's tied 2 x 200 "
        "after 40 epochs: 87.17",
    ),
    "ptb-medium": Recipe(
        "Penn Treebank words, Zaremba et al.'s medium size (2 x 650 LSTM, dropout 0.5) "
        "with tied weights and word_language_model's SGD schedule",
        {**PTB_LSTM, "embedding": 650, "hidden": 650, "dropout": 0.5, "dropout_input": 0.5},
        "3 of its 40 epochs in 30 minutes: test perplexity 122.31, validation 124.89 after "
        "epoch 3 (one run, about 1,700 tokens/s, so the whole run would take about 6.1 hours "
        "on this CPU; 2026-11-30, benchmarks/recipes.py ptb-medium --time-limit 30)",
    ),
}


def options_for(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """Recipe ``name``'s options, with the options ``given`` on the command line on top."""
    if name not in RECIPES:
        raise RnnlabError(
            f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)} (rnnlab recipes "
            f"lists them)"
        )
    return {**RECIPES[name].options, **given}


def command_line(options: dict[str, Any]) -> str:
    """The options as ``rnnlab train`` flags: --hidden 512 --tie-weights ..."""
    from .options import flag

    parts: list[str] = []
    for name, value in options.items():
        if name == "source":
            parts.insert(0, str(value))
        elif value is True:
            parts.append(flag(name))
        elif value is not False:
            parts.append(f"{flag(name)} {value}")
    return " ".join(parts)


def describe() -> str:
    """Every recipe: its name, what it is for, its options and its measured result."""
    blocks = []
    for name, recipe in RECIPES.items():
        blocks.append(
            f"{name}\n  {recipe.summary}\n  options: {command_line(recipe.options)}\n"
            f"  measured: {recipe.measured}"
        )
    return "\n\n".join(blocks)
