"""Wall-clock time in microseconds since the epoch: what capture, receive and processing times
in the protocol, the stores and the logs are counted in."""

from __future__ import annotations

import time


def now_us() -> int:
    return time.time_ns() // 1000
