"""How many CPU threads torch computes with when ``--threads`` is not given: the cores that
no other program is using, looked at again every few seconds.

torch's own default is a thread per core. On a machine that is doing other work (a second
run, a browser, a build), each parallel product then waits for a thread whose core is busy
elsewhere, and a run slows several times over; one thread does not wait. So the default
counts the cores the other programs keep busy, from the kernel's CPU counters
(``/proc/stat``) less this process's own time, and leaves those to them:

    threads = max(1, cores - floor(busy elsewhere + 0.65))

A core counts as taken once others use more than 0.35 of it. Programs run with ``nice``
(priority below normal) are not counted: they give way to a training run by themselves.
Two default runs side by side each see the other and drop to one thread; when one ends, the
other goes back to all cores. ``OMP_NUM_THREADS`` in the environment (torchrun sets it for
each of its processes) is a choice already made, and is kept. The measurements behind the
rule are in docs/threads.md.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

STAT = Path("/proc/stat")
INTERVAL = 2.0  # seconds between looks at the counters (at a batch's end)
TAKEN_FROM = 0.35  # a core counts as taken once others use more than this much of it


def usable_cpus() -> set[int] | None:
    """The CPUs this process may run on (None where the system does not say)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def busy_seconds(cpus: set[int] | None, stat_text: str, count_niced: bool) -> float | None:
    """The CPU seconds spent on ``cpus`` (all where None) outside idle, from /proc/stat's
    text: user, system and interrupts; nice time too where ``count_niced``. None if the
    text has no counters for them."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total, found = 0, False
    for line in stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        fields = [int(v) for v in rest.split()]
        user, nice, system, _idle, _iowait, irq, softirq = (fields + [0] * 7)[:7]
        total += user + system + irq + softirq + (nice if count_niced else 0)
        found = True
    return total / ticks if found else None


def own_seconds() -> float:
    """The CPU seconds this process (all its threads) has used."""
    times = os.times()
    return times.user + times.system


def threads_for(cores: int, busy_elsewhere: float) -> int:
    """The threads to use on ``cores`` cores when other programs keep ``busy_elsewhere``
    cores' worth of them busy."""
    taken = math.floor(max(busy_elsewhere, 0.0) + 1.0 - TAKEN_FROM)
    return max(1, min(cores, cores - taken))


class ThreadGovernor:
    """Sets torch's thread count to the cores free of other work, at most every INTERVAL.

    Use as a context manager around training (the thread count before is restored at the
    end) and call :meth:`update` after each batch. ``read_stat``, ``own`` and ``clock``
    are the kernel's counters, this process's CPU time and a monotonic clock (seams for
    tests). Disabled (``update`` returns at once) where the counters cannot be read.
    """

    def __init__(
        self,
        read_stat: Callable[[], str] | None = None,
        own: Callable[[], float] = own_seconds,
        clock: Callable[[], float] = time.monotonic,
        interval: float = INTERVAL,
    ):
        self.read_stat = read_stat or (lambda: STAT.read_text())
        self.own, self.clock, self.interval = own, clock, interval
        self.cpus = usable_cpus()
        self.cores = len(self.cpus) if self.cpus else (os.cpu_count() or 1)
        self.count_niced = _niceness() > 0  # then this process's own time is nice time
        self.threads_before = torch.get_num_threads()
        self.last: tuple[float, float, float] | None = None
        self.threads = self.threads_before
        self.changes = 0

    def __enter__(self) -> ThreadGovernor:
        first = self._sample()
        if first is not None:
            self.last = first
            self._set(threads_for(self.cores, _load_elsewhere(self.cores)))
        return self

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.threads_before)

    def _sample(self) -> tuple[float, float, float] | None:
        try:
            busy = busy_seconds(self.cpus, self.read_stat(), self.count_niced)
        except (OSError, ValueError):
            return None
        return None if busy is None else (self.clock(), busy, self.own())

    def _set(self, threads: int) -> None:
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads
            self.changes += 1

    def update(self) -> None:
        """Look at the counters if INTERVAL has passed; set the threads they call for."""
        if self.last is None or self.clock() - self.last[0] < self.interval:
            return
        now = self._sample()
        if now is None:
            self.last = None
            return
        (t0, busy0, own0), (t1, busy1, own1) = self.last, now
        self.last = now
        wall = t1 - t0
        if wall > 0:
            self._set(threads_for(self.cores, ((busy1 - busy0) - (own1 - own0)) / wall))


def _niceness() -> int:
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):
        return 0


def _load_elsewhere(cores: int) -> float:
    """A first guess of the cores others keep busy, before any counters were compared: the
    threads running on the machine at this moment (/proc/loadavg's fourth field) less this
    process's own running threads, at most all cores; 0 where the system does not say."""
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        own = sum(
            1
            for task in Path("/proc/self/task").iterdir()
            if (task / "stat").read_text().rpartition(")")[2].split()[0] == "R"
        )
    except (OSError, ValueError, IndexError):
        return 0.0
    return float(min(cores, max(0, running - own)))


def governor_for(threads_option: int) -> ThreadGovernor | None:
    """The governor for a run given ``--threads threads_option``; None where the threads are
    already chosen: by the option (not 0) or by OMP_NUM_THREADS."""
    if threads_option or os.environ.get("OMP_NUM_THREADS"):
        return None
    return ThreadGovernor()
