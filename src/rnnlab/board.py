"""TensorBoard curves of a training run, in RUN/tensorboard/ (``rnnlab train --tensorboard``).

    rnnlab train --out runs/tm --tensorboard
    tensorboard --logdir runs/tm/tensorboard

Every value's step is the number of batches the run has trained, counted across
resumes, so curves of batches and of epochs share one axis. Each epoch's values
(``EPOCH_SCALARS``, named as in metrics.jsonl) are written at the step that ends the
epoch, each batch's (``BATCH_SCALARS``) at its own.

A resumed run continues the same curves: each session opens a new event file whose
first event tells TensorBoard to drop, from the files before it, every value at or
after the session's first step (``purge_step``), so whatever an interrupted run had
written after its last checkpoint is replaced, never doubled. TensorBoard reads a
folder's event files in name order, which begins with the second a file was opened,
so a session never opens its file in the same second as the file before it.

Written with torch's ``torch.utils.tensorboard.SummaryWriter``, which needs the
``tensorboard`` package: ``pip install 'rnnlab[tensorboard]'``. Only the process
that writes the run directory (rank 0 under torchrun) makes a Board that writes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from . import rundir
from .errors import RnnlabError
from .train import bits_per_token

FOLDER = rundir.TENSORBOARD
# tag -> the key of a metrics record (rnnlab.trainer) it is written from
EPOCH_SCALARS = {
    "epoch/train_loss": "train_loss",
    "epoch/train_ppl": "train_ppl",
    "epoch/train_bpt": "train_bpt",
    "epoch/val_loss": "val_loss",
    "epoch/val_ppl": "val_ppl",
    "epoch/val_bpt": "val_bpt",
    "epoch/lr": "lr",
    "epoch/tokens_per_s": "tokens_per_s",
}
BATCH_SCALARS = ("batch/loss", "batch/grad_norm", "batch/lr")
INSTALL = "pip install 'rnnlab[tensorboard]'"
EVENT_FILE = "events.out.tfevents."  # how every event file's name begins, then its second


def summary_writer_class() -> Any:
    """torch's SummaryWriter, or an RnnlabError naming the extra that installs it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch.utils.tensorboard imports the tensorboard package
        raise RnnlabError(
            f"--tensorboard needs the tensorboard package, which is not installed: {INSTALL}"
        ) from None
    return SummaryWriter


def _wait_for_a_new_second(folder: Path) -> None:
    """Sleep until the clock has passed the second in which the newest event file of
    ``folder`` was opened, so that a new file's name sorts after it."""
    seconds = [
        int(name.split(".")[3])
        for name in (p.name for p in folder.glob(EVENT_FILE + "*"))
        if name.split(".")[3].isdigit()
    ]
    if seconds:
        time.sleep(max(0.0, max(seconds) + 1 - time.time()))


def remove(run: Path) -> None:
    """Remove the curves of a run that stopped before its first checkpoint (its event files,
    then the folder if that leaves it empty), as the trainer removes the rest of it."""
    folder = Path(run) / FOLDER
    for path in folder.glob(EVENT_FILE + "*"):
        path.unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


class Board:
    """Where a trainer records its curves; one that is not ``active`` records nothing.

    The event file is opened at the first value written, so a run that trains no
    batch leaves no folder. ``batch`` keeps a batch's tensors as they are (reading
    them would wait for the GPU) until ``settle``, which the trainer calls once the
    epoch loop has read them on the host anyway.
    """

    def __init__(self, run: Path, active: bool):
        self.folder = Path(run) / FOLDER
        self.writer_class: Any = summary_writer_class() if active else None
        self.writer: Any = None
        self.pending: list[tuple[int, torch.Tensor, torch.Tensor, float]] = []

    def _write(self, step: int, values: dict[str, float]) -> None:
        if self.writer is None:
            if self.folder.is_dir():
                _wait_for_a_new_second(self.folder)
            # purge_step: this session rewrites its steps, from its first, in every curve.
            self.writer = self.writer_class(str(self.folder), purge_step=step)
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def batch(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor, lr: float) -> None:
        """Keep batch ``step``'s loss and gradient norm (before clipping) and its rate."""
        if self.writer_class is not None:
            self.pending.append((step, loss, grad_norm, lr))

    def settle(self) -> None:
        """Write the batches kept by :meth:`batch`."""
        if not self.pending:
            return
        values = torch.stack([torch.stack([l.float(), n.float()]) for _, l, n, _ in self.pending])
        for (step, _, _, lr), (loss, norm) in zip(self.pending, values.tolist()):
            self._write(step, dict(zip(BATCH_SCALARS, (loss, norm, lr))))
        self.pending.clear()

    def epoch(self, step: int, record: dict[str, Any]) -> None:
        """Write an epoch's metrics record (see rnnlab.trainer) at ``step``; flush to disk."""
        if self.writer_class is None:
            return
        self.settle()
        record = {**record, "train_bpt": bits_per_token(record["train_loss"])}
        self._write(step, {tag: record[key] for tag, key in EPOCH_SCALARS.items()})
        self.writer.flush()

    def close(self) -> None:
        """Close the event file (a later value opens a new one). Batches kept but never
        settled are dropped: the epoch loop stopped before checking them."""
        self.pending.clear()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
