"""CPU time and memory of another process, from ``/proc/<pid>``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (resolution 1 / SC_CLK_TCK, usually 10 ms)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces; fields after it are space-separated.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS


def memory_mb(pid: int) -> tuple[float, float]:
    """``(VmRSS, VmHWM)`` of ``pid`` in MB (10⁶ bytes): the resident set now and its peak."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024 / 1e6  # the kernel's kB are KiB
    return values["VmRSS"], values["VmHWM"]


@dataclass(slots=True)
class CpuMeter:
    """Adds up the CPU time a process spends inside ``with meter.measure():`` blocks."""

    pid: int
    seconds: float = 0.0

    @contextmanager
    def measure(self) -> Iterator[None]:
        before = cpu_seconds(self.pid)
        try:
            yield
        finally:
            self.seconds += cpu_seconds(self.pid) - before
