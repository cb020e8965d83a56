"""The run directory: what a training run writes, and where.

    RUN_DIR/
      config.json        every option of the run and the rnnlab version (TrainConfig)
      vocab.json         the vocabulary (Vocab.to_json)
      checkpoint.json    pointer to the current checkpoint folder, and its manifest's sha256
      checkpoints/gen-000012/   the current checkpoint (see rnnlab.checkpoint)
      best.json          pointer to the best checkpoint folder, and its manifest's sha256
      best/gen-000011/   the checkpoint of the epoch with the lowest validation loss so far
                         (the same files; generate and eval read it by default)
      model.safetensors  a copy of the current checkpoint's weights, for other tools
      metrics.jsonl      one JSON object per finished epoch
      perplexity.png     training and validation perplexity against epoch
      source.json        a fingerprint of the text trained on: a changed corpus is noticed
      train.lock         held (flock) by the one training process of the run
      tensorboard/       the curves of --tensorboard, for TensorBoard (rnnlab.board)

Every file is written whole or not at all (:func:`rnnlab.files.atomic_write`).
Run directories written by rnnlm 0.1 have the same layout (without best/) and load as
they are; a run without a best checkpoint is read from its latest one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from . import files
from .config import TrainConfig
from .errors import RnnlabError
from .plot import perplexity_png
from .vocab import Vocab

CONFIG, VOCAB, POINTER, METRICS, PLOT, MODEL, SOURCE, LOCK = (
    "config.json",
    "vocab.json",
    "checkpoint.json",
    "metrics.jsonl",
    "perplexity.png",
    "model.safetensors",
    "source.json",
    "train.lock",
)
CHECKPOINTS = "checkpoints"
BEST_POINTER, BEST_FOLDER = "best.json", "best"
# Everything rnnlab keeps in a run directory: its files, and its folders with all inside.
RUN_FILES = (CONFIG, VOCAB, POINTER, BEST_POINTER, METRICS, PLOT, MODEL, SOURCE, LOCK)
TENSORBOARD = "tensorboard"  # the curves of --tensorboard (rnnlab.board)
RUN_FOLDERS = (CHECKPOINTS, BEST_FOLDER, TENSORBOARD)
CONFIG_LIMIT = 1 * files.MIB  # config.json is well under 1 KiB
VOCAB_LIMIT = 256 * files.MIB  # a word vocabulary of millions of entries is a few tens of MiB


def write_error(run: Path, e: OSError) -> RnnlabError:
    """The error for a failed write into ``run``: the previous checkpoint is kept."""
    if (Path(run) / POINTER).exists():
        then = (
            f"the previous checkpoint is kept; free disk space or fix permissions, then "
            f"resume with: rnnlab train --out {run} --resume"
        )
    else:
        then = (
            "free disk space or fix permissions (or choose another --out), then start the run again"
        )
    return RnnlabError(f"could not write to run directory {run} ({e.strerror or e}); {then}")


def has_run(run: Path) -> bool:
    """Whether ``run`` holds a run (its config.json)."""
    return (Path(run) / CONFIG).exists()


def run_holding(path: Path) -> Path | None:
    """The run directory of which ``path`` is a file (one of RUN_FILES, or anything in
    one of RUN_FOLDERS), however it is spelled (``..``, symbolic links); else None.

    A run directory is a folder with config.json and checkpoint.json or checkpoints/.
    """
    real = Path(os.path.realpath(path))
    for folder in real.parents:
        inside = real.relative_to(folder).parts
        own = inside[0] in RUN_FOLDERS or (len(inside) == 1 and inside[0] in RUN_FILES)
        if (
            own
            and has_run(folder)
            and ((folder / POINTER).exists() or (folder / CHECKPOINTS).is_dir())
        ):
            return folder
    return None


def refuse_run_file(path: Path, option: str) -> None:
    """Refuse to write ``path`` (given as ``option``) where it is a run directory's own file."""
    run = run_holding(path)
    if run is not None:
        raise RnnlabError(
            f"{option} {path} is a file of the run directory {run}, and writing it would "
            f"damage the run; give {option} a path outside the run's own files and folders"
        )


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
        data = files.read_json(path, "restore it or retrain", limit=CONFIG_LIMIT)
    except FileNotFoundError:
        raise RnnlabError(
            f"{path.parent} is not a run directory (it has no config.json); "
            f"give the --out folder of an rnnlab train run"
        ) from None
    except OSError as e:
        raise RnnlabError(
            f"cannot read {path} ({e.strerror or e}); restore it or retrain"
        ) from None
    return TrainConfig.from_dict(data, str(path))


def read_vocab(run: Path) -> Vocab:
    """The vocabulary in ``run``/vocab.json."""
    path = Path(run) / VOCAB
    advice = "the run directory is damaged: restore it or train again"
    try:
        data = files.read_json(path, advice, limit=VOCAB_LIMIT)
    except FileNotFoundError:
        raise RnnlabError(
            f"{run} has no vocab.json; the run directory is incomplete: restore it or train again"
        ) from None
    except OSError as e:
        raise RnnlabError(f"cannot read {path} ({e.strerror or e}); {advice}") from None
    return Vocab.from_data(data)


def write_metrics(run: Path, history: list[dict[str, Any]], plot_title: str = "") -> None:
    """Rewrite metrics.jsonl and perplexity.png from the history kept in the checkpoint."""
    run = Path(run)
    data = "".join(json.dumps(record) + "\n" for record in history).encode("utf-8")
    try:
        files.atomic_write(run / METRICS, data)
        files.atomic_write(run / PLOT, perplexity_png(history, plot_title))
    except OSError as e:
        raise write_error(run, e) from None


def check_new_out(run: Path) -> None:
    """A new run's folder must be new or empty: rnnlab never writes over other files."""
    if str(run) in ("", "."):
        raise RnnlabError("--out is empty or the current folder; name a new folder for the run")
    if run.exists() and not run.is_dir():
        raise RnnlabError(f"--out {run} is a file, not a folder; choose another --out")
    if run.is_dir() and any(run.iterdir()):
        raise RnnlabError(
            f"--out {run} is a folder that already holds other files and no run; choose a new "
            f"or empty folder (rnnlab does not write over files it did not make)"
        )


def write_source(run: Path, cfg: TrainConfig, text_sha256: str) -> None:
    """Record what the run is trained on (source.json)."""
    record = {
        "source": cfg.source,
        "mode": cfg.mode,
        "max_tokens": cfg.max_tokens,
        "tokens_sha256": text_sha256,
    }
    try:
        files.atomic_write(Path(run) / SOURCE, (json.dumps(record, indent=1) + "\n").encode())
    except OSError as e:
        raise write_error(Path(run), e) from None


def check_source(run: Path, cfg: TrainConfig, text_sha256: str, accept_changed: bool) -> bool:
    """Whether ``cfg.source`` still gives the text ``run`` was trained on.

    A changed text is an RnnlabError unless ``accept_changed``; then False is returned.
    A run without source.json (rnnlm 0.1 wrote none) is taken as unchanged.
    """
    path = Path(run) / SOURCE
    advice = "the run directory is damaged: restore source.json, or delete it to trust the text"
    try:
        record = files.read_json(path, advice, limit=64 * files.KIB)
    except FileNotFoundError:
        return True
    except OSError as e:
        raise RnnlabError(f"cannot read {path} ({e.strerror or e}); {advice}") from None
    if not isinstance(record, dict) or not isinstance(record.get("tokens_sha256"), str):
        raise RnnlabError(f"{path} is not the record rnnlab writes; {advice}")
    if record["tokens_sha256"] == text_sha256:
        return True
    if accept_changed:
        return False
    raise RnnlabError(
        f"the text of {cfg.source} has changed since the run in {run} was trained on it "
        f"(its tokens no longer match source.json); restore the text, or give "
        f"--accept-changed-source to go on with the new text"
    )


class RunLock:
    """An exclusive lock on a run directory for the life of a training process.

    The lock is flock(2) on RUN/train.lock, which also records the holder's PID; the
    kernel releases it when the process ends, however it ends, so a stale file left
    by a killed run never blocks the next one.
    """

    def __init__(self, run: Path):
        self.path = Path(run) / LOCK
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as e:
            raise write_error(self.path.parent, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RnnlabError(
                f"another rnnlab train (PID {holder}) is training {self.path.parent}; wait for "
                f"it to finish or stop it (Ctrl-C saves a checkpoint), then try again"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock; the file stays, harmlessly
            self.fd = None


def remove_unstarted(run: Path, made: bool) -> None:
    """Remove what a new run wrote before its first checkpoint: its files, its folders where
    they are empty (rnnlab.board removes its curves first), and the folder itself if
    ``made`` for it and nothing else is in it."""
    for name in (*RUN_FILES, *RUN_FOLDERS):
        path = run / name
        try:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()  # only an empty one
            elif path.exists() or path.is_symlink():
                path.unlink()
        except OSError:
            pass
    if made:
        try:
            run.rmdir()
        except OSError:
            pass
