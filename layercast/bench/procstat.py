"""Resident memory, open file descriptors and CPU time of a process, read from ``/proc`` (Linux).

The soak benchmark watches the cloud (a separate ``layercast cloud`` process) and the load
generator itself through the kernel's own accounting, not through anything the processes say
about themselves, so a leak shows up whatever its cause (Python objects, native buffers, sockets).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ProcSample:
    """One look at a process."""

    pid: int
    at: float  # time.monotonic() when read
    rss_bytes: int  # VmRSS
    fds: int  # entries of /proc/PID/fd
    cpu_s: float  # user + system CPU seconds since the process started

    @property
    def rss_mib(self) -> float:
        return self.rss_bytes / (1 << 20)


def sample(pid: int) -> ProcSample:
    """Read RSS, fd count and CPU time of ``pid``; OSError when it is gone or not readable."""
    proc = Path("/proc") / str(pid)
    rss_kib = 0
    for line in (proc / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
            break
    fds = len(os.listdir(proc / "fd"))
    # Fields after the command name (which may contain spaces, hence rpartition on ')'):
    # utime and stime are fields 14 and 15 of the whole line, i.e. 11 and 12 after the name.
    rest = (proc / "stat").read_text().rpartition(")")[2].split()
    cpu_s = (int(rest[11]) + int(rest[12])) / _CLOCK_TICKS
    return ProcSample(pid, time.monotonic(), rss_kib * 1024, fds, cpu_s)


def cpu_percent(before: ProcSample, after: ProcSample) -> float:
    """CPU use between two samples of one process, in % of one core."""
    wall = after.at - before.at
    return 100.0 * (after.cpu_s - before.cpu_s) / wall if wall > 0 else float("nan")


def growth_percent(baseline: ProcSample, now: ProcSample) -> float:
    """RSS growth since ``baseline``, in %."""
    return 100.0 * (now.rss_bytes - baseline.rss_bytes) / baseline.rss_bytes if baseline.rss_bytes else 0.0
