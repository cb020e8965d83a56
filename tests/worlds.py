"""Worlds for tests: several ranks of one run as threads of this process.

:class:`ThreadRanks` is rnnlab.world's :class:`~rnnlab.world.Ranks` (everything several
processes do) with its exchanges made through memory shared by threads instead of
torch.distributed, and its gradients averaged by hand instead of by
DistributedDataParallel. ``train_on_threads(n, fn)`` runs ``fn(world)`` for each of n ranks
at once and returns their results in rank order.
"""

from __future__ import annotations

import threading
from typing import Any

from rnnlab.train import detach_state, grad_clipping, sequence_loss
from rnnlab.world import Ranks


class Exchange:
    """What n threads hand each other: each puts its object, all wait, all read."""

    def __init__(self, size: int):
        self.slots: list[Any] = [None] * size
        self.barrier = threading.Barrier(size, timeout=60)

    def all_gather(self, rank: int, obj: Any) -> list[Any]:
        self.barrier.wait()  # the previous exchange is read by everyone
        self.slots[rank] = obj
        self.barrier.wait()
        return list(self.slots)


class ThreadRanks(Ranks):
    """Rank ``rank`` of ``size`` threads training one run."""

    def __init__(self, rank: int, size: int, exchange: Exchange):
        super().__init__(rank, size)
        self.exchange = exchange

    def gather(self, obj: Any) -> list[Any]:
        return self.exchange.all_gather(self.rank, obj)

    def share(self, obj: Any = None) -> Any:
        return self.gather(obj)[0]

    def training_step(self, model, optimizer, cfg, device):
        """train.train_step with the gradients averaged over the ranks, after rank 0's
        weights are copied to every rank (as DistributedDataParallel does when it starts)."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for mine, first in zip(params, self.share([p.detach().clone() for p in params])):
            mine.data.copy_(first)

        def step(X, Y, state):
            outputs, state = model(X, state)
            loss = sequence_loss(outputs, Y, model)
            optimizer.zero_grad()
            loss.backward()
            every = self.gather([p.grad.clone() for p in params])
            for i, p in enumerate(params):
                p.grad.copy_(sum(grads[i] for grads in every) / self.size)
            norm = grad_clipping(params, cfg.clip)
            optimizer.step()
            return loss.detach(), norm, detach_state(state)

        return step


def train_on_threads(size: int, fn) -> list[Any]:
    """``fn(world)`` for each of ``size`` ThreadRanks at once; their results in rank order
    (an exception in any thread is raised here)."""
    exchange = Exchange(size)
    results: list[Any] = [None] * size
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        try:
            results[rank] = fn(ThreadRanks(rank, size, exchange))
        except BaseException as e:  # handed to the caller below
            errors.append(e)
            exchange.barrier.abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
