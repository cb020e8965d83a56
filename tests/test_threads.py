"""The default thread count: the cores other programs leave free (rnnlab.threads).

The governor reads the kernel's counters through seams: here a fake /proc/stat whose
counters the test advances as a machine with other programs on it would.
"""

from __future__ import annotations

import pytest
import torch

from rnnlab import threads
from rnnlab.cli import main
from rnnlab.threads import ThreadGovernor, busy_seconds, governor_for, threads_for

TICKS = 100  # USER_HZ on Linux


@pytest.mark.parametrize(
    "cores, elsewhere, expected",
    [
        (2, 0.0, 2),  # a quiet machine: every core
        (2, 0.3, 2),  # a little background work leaves the core to us
        (2, 0.4, 1),  # more than 0.35 of a core taken: leave it
        (2, 1.0, 1),  # a second run on one thread
        (2, 1.9, 1),  # a second run on two threads
        (2, 4.0, 1),  # four busy processes: still one thread, never none
        (4, 1.5, 2),
        (8, 0.0, 8),
        (1, 0.0, 1),
        (2, -0.2, 2),  # the counters' rounding can make it slightly negative
    ],
)
def test_threads_leave_the_cores_others_use(cores, elsewhere, expected):
    assert threads_for(cores, elsewhere) == expected


def stat_text(per_cpu: list[tuple[int, int, int, int]]) -> str:
    """/proc/stat with (user, nice, system, idle) ticks for each CPU."""
    lines = ["cpu  " + " ".join(str(sum(c[k] for c in per_cpu)) for k in range(4)) + " 0 0 0 0"]
    lines += [f"cpu{i} {u} {n} {s} {idle} 0 3 2 7 0 0" for i, (u, n, s, idle) in enumerate(per_cpu)]
    return "\n".join(lines + ["intr 1 2 3", "ctxt 55"]) + "\n"


def test_busy_seconds_count_user_system_and_interrupts_of_the_usable_cpus():
    text = stat_text([(100, 50, 20, 900), (300, 0, 40, 600)])
    all_busy = busy_seconds(None, text, count_niced=False)
    assert all_busy == pytest.approx((100 + 20 + 5 + 300 + 40 + 5) / TICKS)
    assert busy_seconds({1}, text, count_niced=False) == pytest.approx((300 + 40 + 5) / TICKS)
    assert busy_seconds({0}, text, count_niced=True) == pytest.approx((100 + 50 + 20 + 5) / TICKS)
    assert busy_seconds({5}, text, count_niced=False) is None
    assert busy_seconds(None, "intr 1\n", count_niced=False) is None


class Machine:
    """Two CPUs whose busy ticks grow as the test says; this process's own time too."""

    def __init__(self):
        self.t, self.busy, self.niced, self.mine = 0.0, [0, 0], 0, 0.0

    def run(self, seconds: float, mine: float, others: float, niced: float = 0.0) -> None:
        """``seconds`` pass with this process on ``mine`` cores, others on ``others``
        (and ``niced`` of nice time elsewhere)."""
        self.t += seconds
        self.mine += mine * seconds
        self.busy[0] += round((mine + others) * seconds * TICKS)
        self.niced += round(niced * seconds * TICKS)

    def stat(self) -> str:
        return stat_text([(self.busy[0], self.niced, 0, 0), (0, 0, 0, 0)])


@pytest.fixture
def machine(monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda: {0, 1})
    monkeypatch.setattr(threads, "_load_elsewhere", lambda cores: 0.0)
    monkeypatch.setattr(threads, "_niceness", lambda: 0)
    return Machine()


def test_a_second_run_beside_it_takes_a_thread_and_gives_it_back(machine):
    before = torch.get_num_threads()
    with ThreadGovernor(machine.stat, lambda: machine.mine, lambda: machine.t) as governor:
        assert governor.threads == 2  # the first guess: nothing else running
        machine.run(2.5, mine=2, others=0)
        governor.update()
        assert governor.threads == 2 and torch.get_num_threads() == 2
        machine.run(2.5, mine=1.2, others=0.8)  # another run starts
        governor.update()
        assert governor.threads == 1 and torch.get_num_threads() == 1
        machine.run(1.0, mine=1, others=1)
        governor.update()  # within the interval: no look
        assert governor.threads == 1
        machine.run(2.0, mine=1, others=0)  # it ended
        governor.update()
        assert governor.threads == 2
    assert torch.get_num_threads() == before


def test_niced_work_leaves_every_core_to_the_run(machine):
    with ThreadGovernor(machine.stat, lambda: machine.mine, lambda: machine.t) as governor:
        machine.run(3, mine=1.0, others=0, niced=1.0)
        governor.update()
        assert governor.threads == 2


def test_unreadable_counters_leave_the_threads_alone(machine):
    def no_stat() -> str:
        raise FileNotFoundError("/proc/stat")

    before = torch.get_num_threads()
    with ThreadGovernor(no_stat, lambda: 0.0, lambda: 0.0) as governor:
        governor.update()
        assert governor.changes == 0 and torch.get_num_threads() == before


def test_a_chosen_thread_count_is_kept(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert governor_for(1) is None
    assert isinstance(governor_for(0), ThreadGovernor)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as torchrun sets it for each process
    assert governor_for(0) is None


def test_a_default_run_restores_the_thread_count(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tiny = "--max-tokens 2000 --hidden 8 --batch-size 4 --num-steps 5 --epochs 1 --quiet"
        assert main(["train", "timemachine", "--out", str(tmp_path / "r"), *tiny.split()]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
