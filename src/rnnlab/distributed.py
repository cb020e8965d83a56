"""Data-parallel training: one run on several processes or machines, launched by torchrun.

    torchrun --nproc-per-node 2 -m rnnlab train --out runs/tm           # one machine
    torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 --rdzv-id tm -m rnnlab train --out runs/tm   # each machine

torchrun starts the processes and tells each its place (RANK, WORLD_SIZE, LOCAL_RANK);
:func:`from_environment` reads them, :func:`start` joins the process group (gloo
between CPUs, NCCL between GPUs, with gloo beside it for the small CPU messages).
Without torchrun the world is one process and nothing here is used.

Each of N processes (ranks) trains its own streams of every global batch of B streams,
rank r the streams [r*B/N, (r+1)*B/N) (:func:`stream_range`), so it carries their hidden
state from batch to batch as one process would. PyTorch's DistributedDataParallel
averages the gradients, which, with equal shares, is the gradient of the global batch's
mean loss; every rank then clips and steps the same weights in the same way.

Every rank seeds torch alike and draws each dropout mask for all B streams, keeping its
own rows (``TorchLM.share_masks``): the run does not depend on N. What crosses between
ranks besides the gradients: each batch's loss (:meth:`World.mean`), one small message
per batch that says whether to stop and how long rank 0 has trained
(:meth:`World.agree`), the validation loss sums, and for a checkpoint the carried state
and RNG of every rank (:meth:`World.gather`), which rank 0 writes.

If a rank dies, the others' next exchange fails at once (its connection closes), or
after ``timeout`` seconds if it hangs; :func:`missing_ranks` then asks, through
torchrun's key-value store, which ranks still answer, so the error can name the lost one.
"""

from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .errors import ReportedElsewhere, RnnlabError

# How long a rank waits for the others in one exchange before giving up on them (the
# process group's timeout). A killed rank is noticed at once; this bounds a hung one.
DEFAULT_TIMEOUT = 300.0
MAX_TIMEOUT = 86_400.0  # a day
# After a failed exchange, how long the surviving ranks wait for each other to answer
# before they name the ranks that did not.
ROLL_CALL_SECONDS = 5.0


class LostRank(RnnlabError):
    """A rank stopped answering during training (it died, hung, or lost its network)."""


@dataclass(frozen=True)
class World:
    """The processes training one run: this one's rank, their number, its rank on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def parallel(self) -> bool:
        """Whether the run is trained by more than one process."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0: the one that prints and writes the run directory."""
        return self.rank == 0

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a 0-d tensor over the ranks (each rank's share is equal)."""
        if not self.parallel:
            return value
        total = value.detach().clone()
        _collective(dist.all_reduce, total)
        return total / self.size

    def sum(self, values: list[float], dtype=torch.float64) -> list[float]:
        """Element-wise sums of a list of numbers over the ranks, read on the host."""
        if not self.parallel:
            return list(values)
        tensor = torch.tensor(values, dtype=dtype)
        _collective(dist.all_reduce, tensor)
        return tensor.tolist()

    def agree(self, signum: int | None, seconds: float) -> tuple[int | None, float]:
        """(a stop signal any rank received, or None; rank 0's ``seconds``), alike on every
        rank: one exchange of two numbers per rank."""
        if not self.parallel:
            return signum, seconds
        mine = torch.tensor([float(signum or 0), seconds], dtype=torch.float64)
        every = [torch.empty_like(mine) for _ in range(self.size)]
        _collective(dist.all_gather, every, mine)
        signals = [int(t[0]) for t in every if t[0] > 0]
        return (signals[0] if signals else None), float(every[0][1])

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.parallel:
            return [obj]
        out: list[Any] = [None] * self.size
        _collective(dist.all_gather_object, out, obj)
        return out

    def share(self, obj: Any = None) -> Any:
        """Rank 0's ``obj`` (picklable) on every rank; the others pass nothing."""
        if not self.parallel:
            return obj
        box = [obj if self.is_main else None]
        _collective(dist.broadcast_object_list, box, src=0)
        return box[0]


def from_environment(environ=None) -> World:
    """The world torchrun describes in RANK, WORLD_SIZE and LOCAL_RANK (one process if not)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return World()
    try:
        rank, size = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", rank))
    except (KeyError, ValueError):
        raise RnnlabError(
            "WORLD_SIZE is set but RANK/LOCAL_RANK are missing or not numbers; launch "
            "several processes with torchrun, or unset WORLD_SIZE for one"
        ) from None
    if not 0 <= rank < size:
        raise RnnlabError(f"RANK {rank} is not below WORLD_SIZE {size}; launch with torchrun")
    return World(rank, size, local_rank)


def start(world: World, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Join the process group of ``world`` (no-op for one process): gloo, and NCCL for CUDA.

    ``timeout``: seconds an exchange may wait for the other ranks (``--peer-timeout``).
    """
    if not 1 <= timeout <= MAX_TIMEOUT:  # also false for nan
        raise RnnlabError(
            f"--peer-timeout {timeout:g} is out of range; give seconds from 1 to {MAX_TIMEOUT:,.0f}"
        )
    if not world.parallel or dist.is_initialized():
        return
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank % torch.cuda.device_count())
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    except (RuntimeError, ValueError) as e:
        raise RnnlabError(
            f"rank {world.rank} could not join the other {world.size - 1} process(es) "
            f"({_first_line(e)}); check --rdzv-endpoint and that every machine can reach it"
        ) from None


def finish(world: World) -> None:
    """Leave the process group (after training, or on an error)."""
    if world.parallel and dist.is_initialized():
        dist.destroy_process_group()


def stream_range(batch_size: int, world: World) -> slice:
    """The streams of each global batch that rank ``world.rank`` trains: [r*B/N, (r+1)*B/N)."""
    if batch_size % world.size:
        raise RnnlabError(
            f"--batch-size {batch_size} cannot be split evenly over {world.size} processes; "
            f"give a batch size that is a multiple of {world.size}, or another "
            f"--nproc-per-node"
        )
    share = batch_size // world.size
    return slice(world.rank * share, (world.rank + 1) * share)


def split_range(count: int, world: World) -> slice:
    """Rank ``world.rank``'s part of ``count`` items dealt out in contiguous, near-equal parts
    (some parts empty when count < N): how the validation streams are shared."""
    return slice(world.rank * count // world.size, (world.rank + 1) * count // world.size)


def is_lost_connection(error: BaseException) -> bool:
    """Whether ``error`` is an exchange between ranks that failed (a peer died or timed out)."""
    if isinstance(error, LostRank):
        return True
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(error, dist_error):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("gloo" in text or "NCCL" in text)


def missing_ranks(world: World, wait: float = ROLL_CALL_SECONDS) -> list[int] | None:
    """After a failed exchange: the ranks that do not answer within ``wait`` seconds.

    Each surviving rank leaves its name in the process group's key-value store (kept by
    torchrun's agent, so it outlives a dead rank) and reads the others'. None when the
    store cannot be reached either.
    """
    try:
        store = dist.distributed_c10d._get_default_store()
        round_ = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        key = f"rnnlab/alive/{round_}/"
        store.set(key + str(world.rank), "1")
        deadline = time.monotonic() + wait
        while True:
            missing = [r for r in range(world.size) if not store.check([key + str(r)])]
            if not missing or time.monotonic() >= deadline:
                return missing
            time.sleep(0.1)
    except (RuntimeError, ValueError, AttributeError):  # the store is gone too
        return None


def lost_rank_error(world: World, error: BaseException, checkpoint: str) -> RnnlabError:
    """The error to stop with after ``error`` broke an exchange between ranks.

    Names the ranks that no longer answer. The lowest surviving rank reports it; the
    others get a :class:`ReportedElsewhere` with the same message.
    """
    missing = missing_ranks(world)
    if missing:
        who = ", ".join(map(str, missing))
        what = f"rank {who} stopped answering (its process ended, hung or lost its network)"
        reporter = min(r for r in range(world.size) if r not in missing)
    else:
        what = f"an exchange between the processes failed ({_first_line(error)})"
        reporter = world.rank  # no way to tell who else saw it: each rank reports
    message = f"{what}; {checkpoint}"
    return (LostRank if world.rank == reporter else ReportedElsewhere)(message)


def _collective(fn, *args, **kwargs) -> None:
    """Run a collective; a broken connection becomes LostRank (named by the caller)."""
    try:
        fn(*args, **kwargs)
    except RuntimeError as e:
        if is_lost_connection(e):
            raise LostRank(_first_line(e)) from None
        raise


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
