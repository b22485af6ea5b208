"""Sign-in throttling and the bounded pool of password checks.

Three sliding windows of failed sign-ins: per client address, per account name and for the
whole page; when any is full the attempt gets 429 at once. An attempt counts as a failure from
the moment it starts (and is forgiven when it succeeds), so many concurrent attempts cannot all
pass the check before the first one fails. Each Argon2 check takes 64 MiB and tens of
milliseconds, so at most ``verify_slots`` run at once; an attempt that finds every slot busy
gets 503 at once, without running Argon2.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass


class LoginThrottle:
    """Counts failed sign-ins per key (an address, an account, or one key for everyone) in a
    sliding window. Remembers at most ``max_keys`` keys (idle ones are forgotten first)."""

    def __init__(self, max_failures: int, window_s: float, max_keys: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] < now - self.window_s:
            q.popleft()
        return q

    def blocked_for(self, key: str) -> float:
        """Seconds ``key`` must still wait (0 = may try now)."""
        now = time.monotonic()
        q = self._recent(key, now)
        if len(q) < self.max_failures:
            return 0.0
        return max(0.0, q[0] + self.window_s - now)

    def failed(self, key: str) -> float:
        """Count a failure; returns its timestamp (for ``forgive``)."""
        now = time.monotonic()
        self._recent(key, now).append(now)
        if len(self._failures) > self.max_keys:  # forget idle keys, then the oldest
            for k in [k for k, q in self._failures.items() if not q or q[-1] < now - self.window_s]:
                del self._failures[k]
            while len(self._failures) > self.max_keys:
                del self._failures[next(iter(self._failures))]
        return now

    def forgive(self, key: str, stamp: float) -> None:
        """Remove one counted failure (an attempt that turned out to succeed)."""
        q = self._failures.get(key)
        if q is not None and stamp in q:
            q.remove(stamp)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)


@dataclass
class Refusal:
    status: int  # 429 throttled, 503 every verify slot busy
    message: str
    retry_after_s: int


class SignInGuard:
    """What a sign-in attempt goes through before and after its password check."""

    GLOBAL = "*"

    def __init__(
        self,
        *,
        per_address: int,
        per_account: int,
        global_failures: int,
        window_s: float,
        verify_slots: int,
    ) -> None:
        self.by_address = LoginThrottle(per_address, window_s)
        self.by_account = LoginThrottle(per_account, window_s)
        self.everyone = LoginThrottle(global_failures, window_s)
        self.verify_slots = verify_slots
        self._slots = asyncio.Semaphore(verify_slots)
        self.refused = {"address": 0, "account": 0, "global": 0, "busy": 0}

    def _checks(self, address: str, account: str) -> list[tuple[str, LoginThrottle, str]]:
        return [
            ("address", self.by_address, address),
            ("account", self.by_account, account[:64].lower()),
            ("global", self.everyone, self.GLOBAL),
        ]

    async def attempt(self, address: str, account: str, verify) -> bool | Refusal:
        """Run ``verify()`` (blocking; in a worker thread) unless a throttle or the pool says no.

        Returns the verify's result, or the Refusal to answer with."""
        checks = self._checks(address, account)
        for kind, throttle, key in checks:
            wait = throttle.blocked_for(key)
            if wait > 0:
                self.refused[kind] += 1
                who = {"address": " from this address", "account": " for this account", "global": ""}[kind]
                seconds = int(wait) + 1
                return Refusal(429, f"Too many failed sign-ins{who}. Try again in {seconds} s.", seconds)
        if self._slots.locked():
            self.refused["busy"] += 1
            return Refusal(503, "Too many sign-ins at once. Try again in a moment.", 1)
        # Counted as failed until it succeeds: concurrent attempts see each other.
        stamps = [(throttle, key, throttle.failed(key)) for _, throttle, key in checks]
        async with self._slots:
            ok = bool(await asyncio.to_thread(verify))
        if ok:
            for throttle, key, stamp in stamps:
                throttle.forgive(key, stamp)
            self.by_address.succeeded(address)
            self.by_account.succeeded(account[:64].lower())
        return ok
