"""The processes that train one run, as the training loop sees them: one, or several under torchrun.

    rnnlab train --out runs/tm                                          # World(): one process
    torchrun --nproc-per-node 2 -m rnnlab train --out runs/tm           # Torchrun: two
    torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29500 --rdzv-id tm -m rnnlab train --out runs/tm   # each machine

The trainer never asks which world it is in: it calls the same methods in both, and
:class:`World`, the one-process world, answers each at once (it holds every stream, writes
the run directory, and an exchange returns its own value). :class:`Ranks` is what several
processes do instead, built on four exchanges (``gather``, ``share``, and the numeric
``mean``/``sum``); :class:`Torchrun` makes those exchanges through torch.distributed and
wraps the model in DistributedDataParallel. Tests run the same :class:`Ranks` logic on
threads (tests/worlds.py).

Each of N processes (ranks) trains its own streams of every global batch of B streams,
rank r the streams [r*B/N, (r+1)*B/N) (:meth:`World.streams`), and carries their hidden
state from batch to batch as one process would. DistributedDataParallel averages the
gradients, which, with equal shares, is the gradient of the global batch's mean loss; every
rank then clips and steps the same weights alike. Every rank seeds torch alike and draws
each dropout mask for all B streams, keeping its own rows (:meth:`World.prepare_model`), so
the run does not depend on N. What crosses between ranks besides the gradients: each
batch's loss (:meth:`World.mean`), one small message per batch that says whether to stop
and how long rank 0 has trained (:meth:`World.agree`), the validation loss sums, and for a
checkpoint the carried state and RNG of every rank (:meth:`World.checkpoint_parts`), which
rank 0 writes. Before training, rank 0 opens the run directory and tells the others what to
train (:meth:`World.lead_or_follow`); they never touch the folder.

If a rank dies, the others' next exchange fails at once (its connection closes), or after
``--peer-timeout`` seconds if it hangs; :meth:`Torchrun.lost` then asks, through torchrun's
key-value store, which ranks still answer, so the error names the lost one.
"""

from __future__ import annotations

import datetime
import gc
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from . import train
from .errors import ReportedElsewhere, RnnlabError
from .models.cells import state_of, state_parts
from .train import BatchLoss, Step

if TYPE_CHECKING:
    from .config import TrainConfig

# How long a rank waits for the others in one exchange before giving up on them (the
# process group's timeout). A killed rank is noticed at once; this bounds a hung one.
DEFAULT_TIMEOUT = 300.0
MAX_TIMEOUT = 86_400.0  # a day
# After a failed exchange, how long the surviving ranks wait for each other to answer
# before they name the ranks that did not.
ROLL_CALL_SECONDS = 5.0


class LostRank(RnnlabError):
    """A rank stopped answering during training (it died, hung, or lost its network)."""


class World:
    """The world of an ordinary run: one process, which trains every stream and writes the
    run directory; every exchange returns at once with this process' own value."""

    rank = 0
    size = 1
    writes = True  # whether this process prints and writes the run directory
    launcher = ""  # what comes before `rnnlab train` in the command that resumes the run

    def streams(self, batch_size: int) -> slice:
        """The streams of each global batch of B = ``batch_size`` that this process trains."""
        return slice(0, batch_size)

    def share_of(self, count: int) -> slice:
        """This process' part of ``count`` items (the validation streams)."""
        return slice(0, count)

    def device(self, device: torch.device) -> torch.device:
        """The device this process trains on, where the run asks for ``device``."""
        return device

    def prepare_model(self, model, batch_size: int) -> None:
        """Make ``model`` draw its dropout masks as one process training all B streams does."""

    def training_step(self, model, optimizer, cfg: TrainConfig, device: torch.device) -> Step:
        """The run's update step: ``train.make_step``'s, or with ``--cuda-graph`` the step
        captured once as a CUDA graph (rnnlab.experimental, never yet run on a GPU)."""
        if cfg.cuda_graph:
            from .experimental.cuda_graph import graphed_step

            return graphed_step(model, optimizer, cfg.clip)
        return train.make_step(model, optimizer, cfg.clip, precision=cfg.precision)

    def after_training(self) -> None:
        """Release what the training step held that must go before the process group."""

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a 0-d tensor over the processes (each one's share is equal)."""
        return value

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums of a list of numbers over the processes."""
        return list(values)

    def agree(self, signum: int | None, seconds: float) -> tuple[int | None, float]:
        """(a stop signal any process received, or None; rank 0's ``seconds``), alike in
        every process."""
        return signum, seconds

    def seconds(self, own: float, agreed: float) -> float:
        """The run's seconds of training that its schedule and time limit follow: this
        process' own clock (``own``), or in several, rank 0's at the last agreement."""
        return own

    def gather(self, obj: Any) -> list[Any]:
        """Every process' ``obj``, in rank order, in every process."""
        return [obj]

    def share(self, obj: Any = None) -> Any:
        """Rank 0's ``obj`` in every process; the others pass nothing."""
        return obj

    def checkpoint_parts(self, state, rng: dict[str, torch.Tensor]):
        """What a checkpoint needs from every process: (the carried state of all B streams,
        every rank's RNG in rank order, or None in one process, whose RNG the checkpoint
        reads itself). ``state``: this process' (L, B', H) on the CPU, or a tuple of them."""
        return state, None

    def write(self, save: Callable[[], None]) -> None:
        """Run ``save`` (a write to the run directory) where the run directory is written;
        its RnnlabError stops every process."""
        save()

    def ready(self, problem: str | None) -> None:
        """Every process has set up its part (``problem``: why this one could not)."""

    def lead_or_follow(
        self,
        lead: Callable[[Followers], int],
        follow: Callable[[TrainConfig, Any, str], int],
    ) -> int:
        """Rank 0 runs ``lead(followers)``, which opens the run directory and tells the others
        through ``followers.go(cfg, checkpoint, text_sha256)`` what to train; the others run
        ``follow(cfg, checkpoint, text_sha256)`` with that. One process only leads."""
        return lead(Followers(self))

    def lost(self, error: BaseException, advice: str) -> RnnlabError | None:
        """The error to stop with after ``error`` broke an exchange between processes (None:
        it did not; raise it as it is)."""
        return None


class Followers:
    """What rank 0 tells the other ranks before training: once, either to go (the config,
    the checkpoint to start from and the text's SHA-256) or to stop (an error's message, or
    an exit status). Nothing to tell in a one-process run."""

    def __init__(self, world: World):
        self.world, self.told = world, False

    def go(self, cfg: TrainConfig, checkpoint, text_sha: str) -> None:
        if self.world.size > 1 and not self.told:
            self.told = True
            self.world.share(("go", cfg, checkpoint, text_sha))
        self.world.ready(None)

    def stop(self, message: str | None, status: int = 2) -> None:
        if self.world.size > 1 and not self.told:
            self.told = True
            self.world.share(("stop", message, status))


class Ranks(World):
    """Several processes training one run: what each does, on top of the exchanges that a
    subclass makes (``gather`` and ``share``; ``mean`` and ``sum`` through them unless it
    has faster ones)."""

    launcher = "torchrun ... -m "

    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size
        self.writes = rank == 0

    def streams(self, batch_size: int) -> slice:
        if batch_size % self.size:
            raise RnnlabError(
                f"--batch-size {batch_size} cannot be split evenly over {self.size} processes; "
                f"give a batch size that is a multiple of {self.size}, or another "
                f"--nproc-per-node"
            )
        share = batch_size // self.size
        return slice(self.rank * share, (self.rank + 1) * share)

    def share_of(self, count: int) -> slice:
        # contiguous, near-equal parts (some empty when count < N)
        return slice(self.rank * count // self.size, (self.rank + 1) * count // self.size)

    def prepare_model(self, model, batch_size: int) -> None:
        if hasattr(model, "share_masks"):
            model.share_masks(self.streams(batch_size), batch_size)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        return sum(self.gather(value.detach())) / self.size

    def sum(self, values: list[float]) -> list[float]:
        return [sum(column) for column in zip(*self.gather(list(values)))]

    def agree(self, signum: int | None, seconds: float) -> tuple[int | None, float]:
        every = self.gather((signum, seconds))
        signals = [s for s, _ in every if s]
        return (signals[0] if signals else None), every[0][1]

    def seconds(self, own: float, agreed: float) -> float:
        return agreed

    def checkpoint_parts(self, state, rng):
        parts = self.gather((state, rng))
        return join_streams([s for s, _ in parts]), [r for _, r in parts]

    def write(self, save: Callable[[], None]) -> None:
        problem = None
        if self.writes:
            try:
                save()
            except RnnlabError as e:
                problem = str(e)
        problem = self.share(problem)  # a rank 0 that cannot save stops every rank
        if problem is not None:
            raise (RnnlabError if self.writes else ReportedElsewhere)(problem)

    def ready(self, problem: str | None) -> None:
        for rank, text in enumerate(self.gather(problem)):
            if text is not None:
                raise (RnnlabError if self.writes else ReportedElsewhere)(f"rank {rank}: {text}")

    def lead_or_follow(self, lead, follow) -> int:
        if self.rank != 0:
            word = self.share()
            if word[0] == "stop":
                _, text, status = word
                if text is not None:
                    raise ReportedElsewhere(text)
                return status
            _, cfg, checkpoint, text_sha = word
            return follow(cfg, checkpoint, text_sha)
        followers = Followers(self)
        try:
            status = lead(followers)
        except RnnlabError as e:
            followers.stop(str(e))
            raise
        except BaseException:
            followers.stop("rank 0 stopped with an unexpected error (see its traceback)")
            raise
        followers.stop(None, status)  # when rank 0 found nothing to train
        return status


class Torchrun(Ranks):
    """The processes torchrun started, exchanging through torch.distributed (gloo between
    CPUs, NCCL between GPUs), the gradients averaged by DistributedDataParallel."""

    def __init__(self, rank: int, size: int, local_rank: int = 0):
        super().__init__(rank, size)
        self.local_rank = local_rank
        self._ddp: Any = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Torchrun) and (self.rank, self.size, self.local_rank) == (
            other.rank,
            other.size,
            other.local_rank,
        )

    def device(self, device: torch.device) -> torch.device:
        """Each rank of a run on GPUs takes its own: the one torchrun's LOCAL_RANK named in
        :func:`start`."""
        return (
            torch.device("cuda", torch.cuda.current_device()) if device.type == "cuda" else device
        )

    def training_step(self, model, optimizer, cfg: TrainConfig, device: torch.device) -> Step:
        """The model and its loss wrapped in DistributedDataParallel, which averages the
        gradients over the ranks."""
        from torch.nn.parallel import DistributedDataParallel

        self._ddp = DistributedDataParallel(
            BatchLoss(model),
            device_ids=[device.index] if device.type == "cuda" else None,
            # an adaptive softmax scores a tail cluster only for batches that need it
            find_unused_parameters=cfg.model.adaptive_softmax,
        )
        return train.make_step(
            model, optimizer, cfg.clip, batch_loss=self._ddp, precision=cfg.precision
        )

    def after_training(self) -> None:
        # DistributedDataParallel must be gone before the process group: left to the
        # interpreter's exit, its end can abort the process (torch 2.13, gloo; docs/distributed.md).
        self._ddp = None
        gc.collect()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        total = value.detach().clone()
        _collective(dist.all_reduce, total)
        return total / self.size

    def sum(self, values: list[float]) -> list[float]:
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64)
        _collective(dist.all_reduce, tensor)
        return tensor.tolist()

    def agree(self, signum: int | None, seconds: float) -> tuple[int | None, float]:
        import torch.distributed as dist

        mine = torch.tensor([float(signum or 0), seconds], dtype=torch.float64)
        every = [torch.empty_like(mine) for _ in range(self.size)]
        _collective(dist.all_gather, every, mine)
        signals = [int(t[0]) for t in every if t[0] > 0]
        return (signals[0] if signals else None), float(every[0][1])

    def gather(self, obj: Any) -> list[Any]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        _collective(dist.all_gather_object, out, obj)
        return out

    def share(self, obj: Any = None) -> Any:
        import torch.distributed as dist

        box = [obj if self.rank == 0 else None]
        _collective(dist.broadcast_object_list, box, src=0)
        return box[0]

    def lost(self, error: BaseException, advice: str) -> RnnlabError | None:
        """Names the ranks that no longer answer; the lowest surviving rank reports it, the
        others get a :class:`ReportedElsewhere` with the same message."""
        if not is_lost_connection(error):
            return None
        missing = missing_ranks(self)
        if missing:
            who = ", ".join(map(str, missing))
            what = f"rank {who} stopped answering (its process ended, hung or lost its network)"
            reporter = min(r for r in range(self.size) if r not in missing)
        else:
            what = f"an exchange between the processes failed ({_first_line(error)})"
            reporter = self.rank  # no way to tell who else saw it: each rank reports
        message = f"{what}; {advice}"
        return (LostRank if self.rank == reporter else ReportedElsewhere)(message)


def join_streams(states: list):
    """The ranks' carried states, in rank order: (L, B/N, H) per part -> (L, B, H) per part."""
    if states[0] is None:
        return None
    return state_of(torch.cat(parts, dim=1) for parts in zip(*map(state_parts, states)))


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
    return World() if size == 1 else Torchrun(rank, size, local_rank)


def start(world: World, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Join the process group of a Torchrun ``world`` (no-op for one process): gloo, and NCCL
    for CUDA. ``timeout``: seconds an exchange may wait for the other ranks (``--peer-timeout``)."""
    if not 1 <= timeout <= MAX_TIMEOUT:  # also false for nan
        raise RnnlabError(
            f"--peer-timeout {timeout:g} is out of range; give seconds from 1 to {MAX_TIMEOUT:,.0f}"
        )
    if not isinstance(world, Torchrun):
        return
    import torch.distributed as dist

    if dist.is_initialized():
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
    if not isinstance(world, Torchrun):
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def end(world: World, status: int) -> int:
    """After :func:`finish`: a rank of several ends its process here with ``status``, its
    output flushed and every file written; one process returns ``status``.

    The interpreter's own teardown is skipped in a rank: with torch 2.13 and gloo it can
    abort (SIGABRT) a process whose run had finished and saved everything, and torchrun
    then reports the whole run as failed (docs/distributed.md, "Found on the way").
    """
    if not isinstance(world, Torchrun):
        return status
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def is_lost_connection(error: BaseException) -> bool:
    """Whether ``error`` is an exchange between ranks that failed (a peer died or timed out)."""
    if isinstance(error, LostRank):
        return True
    import torch.distributed as dist

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
    import torch.distributed as dist

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
