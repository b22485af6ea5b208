"""Reconnect delays: capped exponential backoff with jitter.

"Full jitter" (AWS architecture blog, "Exponential Backoff And Jitter"): the
n-th consecutive failure waits ``uniform(0, min(cap, base * multiplier**n))``,
which spreads many cameras reconnecting after one cloud restart instead of
having them all retry in lock-step.
"""

from __future__ import annotations

import random

from layercast.edge.config import BackoffConfig


class Backoff:
    """Produces successive delays; ``reset()`` after a successful connection."""

    def __init__(self, config: BackoffConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.failures = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The un-jittered delay for the current failure count."""
        c = self.config
        # Cap the exponent first so a long outage cannot overflow a float.
        exponent = min(self.failures, 64)
        return min(c.max_s, c.initial_s * c.multiplier**exponent)

    def next_delay(self) -> float:
        """Delay before the next attempt; counts one more failure."""
        d = self.ceiling()
        self.failures += 1
        j = self.config.jitter
        return d * (1.0 - j) + self._rng.uniform(0.0, d * j)

    def reset(self) -> None:
        self.failures = 0
