"""Rate limits: token buckets per camera (frames) and per operator (requests).

Why two behaviours:

* **Cameras are slowed, not refused.** A camera above ``limits.camera_frames_per_s`` has its
  next frame read only when the bucket allows it (:meth:`KeyedLimiter.delay`): its stream is not
  read meanwhile, so HTTP/2 flow control pushes back on the edge, credits come back later, and
  nothing is lost (a refused frame would be dropped by the edge for good). A camera that ignores
  its credits gains nothing: the cloud reads it at the rate and no faster.
* **Operators are refused** (RESOURCE_EXHAUSTED, saying the limit and when to retry): a request
  is cheap to repeat, and holding calls open would only pile them up.

Buckets are kept per key (camera id, operator name, or the peer address of an anonymous caller)
in a bounded LRU map, so a stream of new keys cannot grow memory. A rate of 0 turns a limit off.
Every limited frame or request is counted by kind (``layercast_cloud_rate_limited_total{kind}``).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from grpc import aio

from layercast.cloud.rpc.interceptors import _around, _wrap_handler, operator_name

#: The ``kind`` label values (a fixed list).
LIMIT_KINDS = ("camera_frames", "operator_requests")

#: Most keys remembered per limiter; the least recently used bucket is forgotten beyond that (a key
#: that comes back starts with a full bucket: a slightly generous limit, never a wrong refusal).
MAX_KEYS = 10_000


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up. Not thread-safe (one event loop)."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1 (got {rate}, {burst})")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._t = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
        self._t = now

    def try_take(self) -> bool:
        """Take one token if there is one."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def reserve(self) -> float:
        """Take one token now or in the future; returns the seconds to wait before using it.

        The bucket may go into debt; later callers wait behind earlier ones (first come, first
        served), so waiting callers are paced at exactly ``rate``."""
        self._refill()
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0.0 else -self._tokens / self.rate

    def retry_after(self) -> float:
        """Seconds until a token is available (0 when one is)."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self.rate)


class KeyedLimiter:
    """One :class:`TokenBucket` per key, ``rate`` per second with ``burst``; ``rate <= 0`` = no limit."""

    def __init__(
        self,
        kind: str,
        rate: float,
        burst: float,
        *,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if kind not in LIMIT_KINDS:
            raise ValueError(f"unknown rate limit kind {kind!r}")
        self.kind = kind
        self.rate = rate
        self.burst = max(1.0, burst)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        #: Frames delayed or requests refused since start.
        self.limited = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _bucket(self, key: str) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self._clock)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def allow(self, key: str) -> float:
        """0.0 when ``key`` may go ahead now, else the seconds until it may (the request is refused)."""
        if not self.enabled:
            return 0.0
        bucket = self._bucket(key)
        if bucket.try_take():
            return 0.0
        self.limited += 1
        return bucket.retry_after()

    def delay(self, key: str) -> float:
        """Seconds ``key`` must wait before its next item is handled (0.0 = at once); never refuses."""
        if not self.enabled:
            return 0.0
        wait = self._bucket(key).reserve()
        if wait > 0:
            self.limited += 1
        return wait

    async def pace(self, key: str) -> None:
        """Wait until ``key``'s next item may be handled."""
        wait = self.delay(key)
        if wait > 0:
            await asyncio.sleep(wait)

    def __len__(self) -> int:
        return len(self._buckets)


def peer_host(context: Any) -> str:
    """The caller's address without its port (``ipv4:10.0.0.7:53211`` → ``ipv4:10.0.0.7``)."""
    try:
        peer = str(context.peer() or "")
    except Exception:  # not every context implementation has a peer
        return "unknown"
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer or "unknown"


class OperatorRateLimitInterceptor(aio.ServerInterceptor):
    """Refuses (RESOURCE_EXHAUSTED) Operator and Analytics calls above ``limiter``'s rate, per operator.

    The key is the operator the call authenticated as (install after the OperatorAuthInterceptor,
    which names it); for the anonymous caller of the development switch, the caller's address. One Subscribe is one
    request, whatever it streams."""

    def __init__(self, limiter: KeyedLimiter, service_prefixes: Iterable[str]) -> None:
        self._limiter = limiter
        self._prefixes = tuple(service_prefixes)

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or not self._limiter.enabled or not details.method.startswith(self._prefixes):
            return handler
        limiter = self._limiter

        async def check(context: Any) -> None:
            name = operator_name.get()
            key = f"operator:{name}" if name else f"peer:{peer_host(context)}"
            wait = limiter.allow(key)
            if wait > 0:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"rate limit: at most {limiter.rate:g} requests/s per operator (burst {limiter.burst:g}) "
                    f"(limits.operator_requests_per_s); retry in {wait:.2f} s",
                )

        return _wrap_handler(handler, lambda fn, _s: _around(fn, check, lambda _c, _e: None))
