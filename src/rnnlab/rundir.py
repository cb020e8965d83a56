"""The run directory: what a training run writes, and where.

    RUN_DIR/
      config.json        every option of the run and the rnnlab version (TrainConfig)
      vocab.json         the vocabulary (Vocab.to_json)
      checkpoint.json    pointer to the current checkpoint folder, and its manifest's sha256
      checkpoints/gen-000012/   the current checkpoint (see rnnlab.checkpoint)
      model.safetensors  the current checkpoint's weights, for other tools
      metrics.jsonl      one JSON object per finished epoch
      perplexity.png     training and validation perplexity against epoch

Every file is written whole or not at all (:func:`rnnlab.files.atomic_write`).
Run directories written by rnnlm 0.1 have the same layout and load as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import files
from .config import TrainConfig
from .errors import RnnlabError
from .plot import perplexity_png
from .vocab import Vocab

CONFIG, VOCAB, POINTER, METRICS, PLOT, MODEL = (
    "config.json",
    "vocab.json",
    "checkpoint.json",
    "metrics.jsonl",
    "perplexity.png",
    "model.safetensors",
)
CHECKPOINTS = "checkpoints"


def write_error(run: Path, e: OSError) -> RnnlabError:
    """The error for a failed write into ``run``: the previous checkpoint is kept."""
    return RnnlabError(
        f"could not write to run directory {run} ({e.strerror or e}); the "
        f"previous checkpoint, if any, is kept; free disk space or fix "
        f"permissions, then resume with: rnnlab train --out {run} --resume"
    )


def has_run(run: Path) -> bool:
    """Whether ``run`` holds a run (its config.json)."""
    return (Path(run) / CONFIG).exists()


def create(run: Path, cfg: TrainConfig, vocab: Vocab) -> None:
    """Create ``run`` and write config.json and vocab.json (the parts fixed for the whole run)."""
    run = Path(run)
    try:
        run.mkdir(parents=True, exist_ok=True)
        files.atomic_write(run / VOCAB, vocab.to_json().encode("utf-8"))
        write_config(run, cfg)
    except OSError as e:
        raise write_error(run, e) from None


def write_config(run: Path, cfg: TrainConfig) -> None:
    """(Re)write config.json."""
    data = (json.dumps(cfg.to_dict(), indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        files.atomic_write(Path(run) / CONFIG, data)
    except OSError as e:
        raise write_error(Path(run), e) from None


def read_config(run: Path) -> TrainConfig:
    """The TrainConfig in ``run``/config.json; RnnlabError if it is missing or damaged."""
    path = Path(run) / CONFIG
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RnnlabError(
            f"{path.parent} is not a run directory (it has no config.json); "
            f"give the --out folder of an rnnlab train run"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise RnnlabError(f"cannot read {path} ({e}); restore it or retrain") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise RnnlabError(
            f"{path} is not valid JSON (truncated or damaged); restore it or retrain"
        ) from None
    return TrainConfig.from_dict(data, str(path))


def read_vocab(run: Path) -> Vocab:
    """The vocabulary in ``run``/vocab.json."""
    path = Path(run) / VOCAB
    try:
        return Vocab.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RnnlabError(
            f"{run} has no vocab.json; the run directory is incomplete: restore it or train again"
        ) from None
    except (OSError, UnicodeDecodeError):
        raise RnnlabError(
            f"{path} cannot be read as UTF-8 text; the run directory is damaged: "
            f"restore it or train again"
        ) from None


def write_metrics(run: Path, history: list[dict[str, Any]], plot_title: str = "") -> None:
    """Rewrite metrics.jsonl and perplexity.png from the history kept in the checkpoint."""
    run = Path(run)
    data = "".join(json.dumps(record) + "\n" for record in history).encode("utf-8")
    try:
        files.atomic_write(run / METRICS, data)
        files.atomic_write(run / PLOT, perplexity_png(history, plot_title))
    except OSError as e:
        raise write_error(run, e) from None
