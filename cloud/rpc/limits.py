"""Bounds on what one caller, or all callers together, may hold open on the cloud at a time.

* Operator and Analytics calls in flight per caller (its operator name, or its address when the
  call carries none): ``limits.max_calls_per_caller``.
* Live Analytics.Subscribe streams in all: ``limits.max_subscribers``.
* EdgeLink streams that have not sent their Hello yet (held at most ``limits.hello_timeout_s``
  each): ``limits.max_pending_hellos``.

Above a bound a call is refused at once with RESOURCE_EXHAUSTED naming the setting, counted in
``layercast_cloud_limit_refusals_total{limit}``. The gRPC server itself bounds the calls in flight
(``limits.max_concurrent_rpcs``) and the streams per connection (``limits.max_concurrent_streams``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import grpc
from grpc import aio

from layercast.cloud.rpc.interceptors import _around, _wrap_handler, operator_name
from layercast.cloud.security.ratelimit import peer_host

SUBSCRIBE_METHOD = "/layercast.v1.Analytics/Subscribe"


class Slots:
    """A count of things held, up to ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self) -> bool:
        if self.held >= self.limit:
            return False
        self.held += 1
        return True

    def give(self) -> None:
        self.held = max(0, self.held - 1)


class CallLimits:
    """The bounds above, shared by the interceptor and the EdgeLink servicer."""

    def __init__(self, *, per_caller: int, subscribers: int, pending_hellos: int) -> None:
        self.per_caller = per_caller
        self.subscribers = Slots(subscribers)
        self.pending_hellos = Slots(pending_hellos)
        self._calls: Counter[str] = Counter()
        #: Calls refused, by the limit hit (``per_caller``, ``subscribers``, ``pending_hellos``).
        self.refused: Counter[str] = Counter()

    def take_call(self, key: str) -> bool:
        if self._calls[key] >= self.per_caller:
            return False
        self._calls[key] += 1
        return True

    def give_call(self, key: str) -> None:
        self._calls[key] -= 1
        if self._calls[key] <= 0:
            del self._calls[key]

    def calls_of(self, key: str) -> int:
        return self._calls.get(key, 0)


class CallLimitInterceptor(aio.ServerInterceptor):
    """Refuses Operator and Analytics calls above the per-caller and subscriber bounds.

    Install after the TokenInterceptor (which names the operator the bound is counted for)."""

    def __init__(self, limits: CallLimits, service_prefixes: Iterable[str]) -> None:
        self._limits = limits
        self._prefixes = tuple(service_prefixes)

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(self._prefixes):
            return handler
        limits, subscribe = self._limits, details.method == SUBSCRIBE_METHOD
        keys: dict[int, str] = {}

        async def before(context: Any) -> None:
            name = operator_name.get()
            key = f"operator:{name}" if name else f"peer:{peer_host(context)}"
            if not limits.take_call(key):
                limits.refused["per_caller"] += 1
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"too many calls in flight: at most {limits.per_caller} per caller "
                    "(limits.max_calls_per_caller); end some before starting more",
                )
            if subscribe and not limits.subscribers.take():
                limits.give_call(key)
                limits.refused["subscribers"] += 1
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"too many subscribers: this server serves at most {limits.subscribers.limit} "
                    "subscriptions at a time (limits.max_subscribers); retry later",
                )
            keys[id(context)] = key

        def after(context: Any, _error: BaseException | None) -> None:
            key = keys.pop(id(context), None)
            if key is None:
                return
            limits.give_call(key)
            if subscribe:
                limits.subscribers.give()

        return _wrap_handler(handler, lambda fn, _s: _around(fn, before, after))
