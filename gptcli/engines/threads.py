"""How many threads llama.cpp runs: one per physical core, fewer while other processes hold cores."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

def physical_cores() -> int:
    """Physical CPU cores (llama.cpp runs best with one thread per core)."""
    try:
        cores = set()
        base = Path("/sys/devices/system/cpu")
        for topo in base.glob("cpu[0-9]*/topology"):
            pkg = (topo / "physical_package_id").read_text().strip()
            core = (topo / "core_id").read_text().strip()
            cores.add((pkg, core))
        if cores:
            return len(cores)
    except OSError:
        pass
    return max(1, (os.cpu_count() or 2) // 2 if (os.cpu_count() or 1) > 4 else os.cpu_count() or 1)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, a container's limit)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Threads for generation when the user names none: one per physical core this process may use.

    See ``ThreadGovernor`` for what keeps this from collapsing on a busy machine.
    """
    return max(1, min(physical_cores(), usable_cores()))


class ThreadGovernor:
    """Fewer threads while other processes hold cores, so generation never collapses on a busy machine.

    llama.cpp's threads meet at a barrier many times a token (OpenMP's, which spins before it
    sleeps). When another process takes a core, a thread of ours waits for a time slice at every
    barrier: measured on 2 cores with two busy processes beside it, 2 threads fell to 2-3
    tokens/s (17 s to the first token, and runs that never finished a minute), where 1 thread kept
    7 tokens/s. So the count follows what the others leave free: from ``/proc/stat``'s busy time
    less this process's own CPU time, measured over the last interval, ``threads = usable cores -
    ceil(others - 0.25)``, at least 1 and at most the default. On an idle machine the others use
    next to nothing and the default stands. Checked before each prompt and every ``EVERY`` steps;
    reading ``/proc/stat`` costs about 20 microseconds. Off Linux it changes nothing. A count the
    user chose (``--threads``) is never governed.
    """

    EVERY = 32
    MIN_SECONDS = 0.2  # shorter intervals measure noise

    def __init__(self, apply: Callable[[int], None], full: int) -> None:
        self.apply, self.full, self.current = apply, full, full
        self.usable = usable_cores()
        self.tick = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self.steps = 0
        self._last = self._sample()

    @staticmethod
    def _read_stat() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", "rb") as f:
                fields = f.readline().split()
        except OSError:
            return None
        if not fields or fields[0] != b"cpu":
            return None
        values = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
        busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
        return busy, busy + values[3] + values[4]

    def _sample(self) -> tuple[tuple[int, int] | None, float, float]:
        return self._read_stat(), time.process_time(), time.monotonic()

    def others(self) -> float | None:
        """Cores used by other processes since the last call (None where it cannot be known yet)."""
        now = self._sample()
        (stat0, own0, wall0), (stat1, own1, wall1) = self._last, now
        wall = wall1 - wall0
        if stat0 is None or stat1 is None or wall < self.MIN_SECONDS:
            return None
        self._last = now
        busy = (stat1[0] - stat0[0]) / self.tick
        return max(0.0, (busy - (own1 - own0)) / wall)

    @staticmethod
    def running_now() -> float | None:
        """Other processes' threads that are running at this instant (``/proc/loadavg``'s runnable
        count less this process's running threads): the first check, before any interval to
        measure over has passed (a command's first prompt)."""
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                total = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        ours = 0
        for stat in Path("/proc/self/task").glob("*/stat"):
            try:
                ours += stat.read_text().rsplit(")", 1)[1].split()[0] == "R"
            except (OSError, IndexError):
                pass
        return float(max(0, total - ours))

    def check(self) -> None:
        """Set the thread count from what other processes use now (before a prompt, or every few steps)."""
        if self.full <= 1:
            return
        others = self.others()
        if others is None and self.steps == 0:
            others = self.running_now()
        if others is None:
            return
        n = max(1, min(self.full, self.usable - math.ceil(others - 0.25)))
        if n != self.current:
            self.current = n
            self.apply(n)

    def step(self) -> None:
        """Count one generated token; checks every ``EVERY`` steps."""
        self.steps += 1
        if self.steps % self.EVERY == 0:
            self.check()


