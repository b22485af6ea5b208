"""Server interceptors: request ids and latency logging, and a readiness gate (operator identity
and roles: :mod:`layercast.cloud.security.operator_auth`).

Each wraps the method handler of the same kind (unary or streaming, coroutine
or async generator), so servicers stay free of cross-cutting code. More (metrics,
rate limits, mutual-TLS identity) plug in the same way.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

log = logging.getLogger("layercast.cloud.rpc")

#: The id of the request being handled (for log lines anywhere below a servicer).
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("layercast_request_id", default="-")
#: The operator the request authenticated as ("" for the anonymous caller of the development switch).
operator_name: contextvars.ContextVar[str] = contextvars.ContextVar("layercast_operator", default="")

Behavior = Callable[..., Any]


@dataclass(frozen=True)
class HandlerKind:
    """A method handler's behavior, the grpc factory that rebuilds one like it, and which sides stream."""

    behavior: Behavior
    factory: Callable[..., grpc.RpcMethodHandler]
    stream_request: bool
    stream_response: bool


def handler_kind(handler: grpc.RpcMethodHandler) -> HandlerKind:
    if handler.unary_unary:
        return HandlerKind(handler.unary_unary, grpc.unary_unary_rpc_method_handler, False, False)
    if handler.unary_stream:
        return HandlerKind(handler.unary_stream, grpc.unary_stream_rpc_method_handler, False, True)
    if handler.stream_unary:
        return HandlerKind(handler.stream_unary, grpc.stream_unary_rpc_method_handler, True, False)
    return HandlerKind(handler.stream_stream, grpc.stream_stream_rpc_method_handler, True, True)


def _wrap_handler(
    handler: grpc.RpcMethodHandler, wrap: Callable[[Behavior, bool], Behavior]
) -> grpc.RpcMethodHandler:
    """Rebuild ``handler`` with its behavior passed through ``wrap(behavior, streaming_response)``."""
    kind = handler_kind(handler)
    return kind.factory(
        wrap(kind.behavior, kind.stream_response),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


#: How long a refusal of a request-streaming call waits for the client's first message.
FIRST_MESSAGE_WAIT_S = 2.0


class _RefusalAfterFirstMessage:
    """The call's context, except that ``abort`` on a request-streaming call first reads the client's
    first message (or its half-close), for at most :data:`FIRST_MESSAGE_WAIT_S`.

    A client such as the edge writes its Hello as the call opens. If the status arrived while that
    write was still in flight, grpc's client would fail the write and report INTERNAL ("Internal error
    from Core") instead of the server's status. Once the server has read the message, the write has
    completed, and the client sees the refusal's own code and message."""

    def __init__(self, context: Any, requests: Any) -> None:
        self._context = context
        self._requests = requests

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def abort(self, code: grpc.StatusCode, details: str = "", *args: Any, **kwargs: Any) -> Any:
        try:
            await asyncio.wait_for(anext(self._requests), FIRST_MESSAGE_WAIT_S)
        except (TimeoutError, StopAsyncIteration, grpc.RpcError, aio.AbortError):
            pass
        return await self._context.abort(code, details, *args, **kwargs)


def _before_context(request: Any, context: Any) -> Any:
    """The context ``before`` sees: refusals of request-streaming calls wait for the first message."""
    if hasattr(request, "__anext__"):
        return _RefusalAfterFirstMessage(context, request)
    return context


def _around(
    fn: Behavior, before: Callable[[Any], Awaitable[None]], after: Callable[[Any, BaseException | None], None]
) -> Behavior:
    """A behavior of the same kind as ``fn`` that runs ``before(context)`` and ``after(context, error)``.

    Both get the same context object; on request-streaming calls it is a
    :class:`_RefusalAfterFirstMessage`, whose ``abort`` first reads the client's first message."""
    if inspect.isasyncgenfunction(fn):

        async def gen(request: Any, context: Any) -> Any:
            seen = _before_context(request, context)
            await before(seen)
            err: BaseException | None = None
            try:
                async for item in fn(request, context):
                    yield item
            except BaseException as exc:
                err = exc
                raise
            finally:
                after(seen, err)

        return gen

    async def coro(request: Any, context: Any) -> Any:
        seen = _before_context(request, context)
        await before(seen)
        err: BaseException | None = None
        try:
            return await fn(request, context)
        except BaseException as exc:
            err = exc
            raise
        finally:
            after(seen, err)

    return coro


def _rejecting(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind that ends the call with ``code`` at once."""

    async def refuse(context: Any) -> None:
        await context.abort(code, message)

    return _wrap_handler(handler, lambda fn, _s: _around(fn, refuse, lambda _c, _e: None))


class RequestLogInterceptor(aio.ServerInterceptor):
    """Gives every call a request id (``x-request-id`` metadata or a new one) and logs its outcome and latency."""

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        rid = (
            next((str(v) for k, v in details.invocation_metadata or () if k == "x-request-id"), "")
            or uuid.uuid4().hex[:16]
        )

        def wrap(fn: Behavior, _streaming: bool) -> Behavior:
            state: dict[str, float] = {}

            async def before(_context: Any) -> None:
                request_id.set(rid)
                state["t0"] = time.perf_counter()

            def after(context: Any, err: BaseException | None) -> None:
                ms = (time.perf_counter() - state.get("t0", time.perf_counter())) * 1000
                code = _code_of(context, err)
                level = logging.DEBUG if code in ("OK", "CANCELLED") else logging.INFO
                log.log(level, "rpc %s status=%s ms=%.1f request_id=%s", method, code, ms, rid)

            return _around(fn, before, after)

        return _wrap_handler(handler, wrap)


def _code_of(context: Any, err: BaseException | None) -> str:
    """The call's status name as far as the server knows it."""
    try:
        code = context.code()
    except Exception:  # not available on every context implementation
        code = None
    if isinstance(code, grpc.StatusCode):
        return code.name
    if err is None:
        return "OK"
    if isinstance(err, asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN"


class ReadinessInterceptor(aio.ServerInterceptor):
    """Answers UNAVAILABLE for every service but health and reflection until ``ready()`` says so."""

    ALWAYS_OPEN = ("/grpc.health.v1.Health/", "/grpc.reflection.")

    def __init__(self, ready: Callable[[], bool], reason: Callable[[], str]) -> None:
        self._ready = ready
        self._reason = reason

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or self._ready() or details.method.startswith(self.ALWAYS_OPEN):
            return handler
        return _rejecting(handler, grpc.StatusCode.UNAVAILABLE, self._reason())
