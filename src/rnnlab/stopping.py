"""When a run stops: a signal, and the clock its time limit follows.

The first SIGINT or SIGTERM asks the trainer to stop after the current batch
(:class:`StopSignals`); a second one ends the process at once, which loses nothing, since
every file is written atomically. A run's seconds of training are counted across resumes
(:class:`Clock`), by this process or, in a data-parallel run, as rank 0 counted them at
the last agreement (rnnlab.world).
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from .world import World


class StopSignals:
    """Turn the first SIGINT/SIGTERM into a request to stop after the current batch."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        self.signum = signum
        # A second signal ends the process at once (the last checkpoint is whole, as every
        # file is written atomically); by the signal itself, so no Python code runs then.
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_DFL)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False


class Clock:
    """The run's seconds of training, across resumes: this process' own count and the
    count its world agreed on (rank 0's, in a data-parallel run)."""

    def __init__(self, world: World, seconds: float = 0.0):
        self.world = world
        self.started: float | None = None  # time.monotonic() when this process began training
        self.before = seconds  # the run's seconds of training before that
        self.agreed = seconds

    def start(self, seconds: float) -> None:
        self.started, self.before, self.agreed = time.monotonic(), seconds, seconds

    def own(self) -> float:
        """Seconds of training in the whole run up to now, by this process' clock."""
        if self.started is None:
            return self.before
        return self.before + (time.monotonic() - self.started)

    def now(self) -> float:
        """The seconds that the schedule and the time limit follow (World.seconds)."""
        return self.world.seconds(self.own(), self.agreed)
