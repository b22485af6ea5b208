"""Server interceptors: request ids and latency logging, a readiness gate, operator tokens,
and the gate that keeps camera certificates off the operator APIs.

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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from layercast.cloud.security.auth import AuthRefusals, bearer_token
from layercast.cloud.security.credentials import TokenTable
from layercast.cloud.security.roles import OperatorRoles
from layercast.cloud.security.tls import peer_identity

log = logging.getLogger("layercast.cloud.rpc")

#: The id of the request being handled (for log lines anywhere below a servicer).
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("layercast_request_id", default="-")
#: The operator the request authenticated as ("" when operator APIs are open).
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


def _around(
    fn: Behavior, before: Callable[[Any], Awaitable[None]], after: Callable[[Any, BaseException | None], None]
) -> Behavior:
    """A behavior of the same kind as ``fn`` that runs ``before(context)`` and ``after(context, error)``."""
    if inspect.isasyncgenfunction(fn):

        async def gen(request: Any, context: Any) -> Any:
            await before(context)
            err: BaseException | None = None
            try:
                async for item in fn(request, context):
                    yield item
            except BaseException as exc:
                err = exc
                raise
            finally:
                after(context, err)

        return gen

    async def coro(request: Any, context: Any) -> Any:
        await before(context)
        err: BaseException | None = None
        try:
            return await fn(request, context)
        except BaseException as exc:
            err = exc
            raise
        finally:
            after(context, err)

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


class TokenInterceptor(aio.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` on the given services when a token table is configured,
    and the enhancer role for the methods that need it (PERMISSION_DENIED otherwise, see
    :mod:`layercast.cloud.security.roles`). Names the caller in ``operator_name`` either way."""

    def __init__(
        self,
        tokens: TokenTable,
        service_prefixes: Iterable[str],
        refusals: AuthRefusals | None = None,
        roles: OperatorRoles | None = None,
    ) -> None:
        self._tokens = tokens
        self._prefixes = tuple(service_prefixes)
        self._refusals = refusals
        self.roles = roles if roles is not None else OperatorRoles(None, tokens.names())
        #: Calls refused since start.
        self.refused = 0

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or not len(self._tokens) or not details.method.startswith(self._prefixes):
            return handler
        token = bearer_token(details.invocation_metadata)
        name = self._tokens.find(token) if token else None
        if name is None:
            self.refused += 1
            if self._refusals is not None:
                self._refusals.count("operator_token")
            return _rejecting(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong operator token (authorization: Bearer …)",
            )

        allowed = self.roles.allows(name, details.method)
        if not allowed:
            self.refused += 1
            if self._refusals is not None:
                self._refusals.count("operator_role")
        method = details.method.rsplit("/", 1)[-1]

        async def set_name(context: Any) -> None:
            operator_name.set(name)
            if not allowed:
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"operator {name!r} has the viewer role, which may not call {method} "
                    "(auth.enhancers lists the operators who may)",
                )

        return _wrap_handler(handler, lambda fn, _s: _around(fn, set_name, lambda _c, _e: None))


class CameraCertGate(aio.ServerInterceptor):
    """Refuses (PERMISSION_DENIED) calls to the given services from a peer whose client certificate
    names a camera: a camera's credentials let it stream as itself, not read other cameras' results
    or ask for their pictures. Installed when the server requires client certificates."""

    def __init__(self, service_prefixes: Iterable[str], refusals: AuthRefusals) -> None:
        self._prefixes = tuple(service_prefixes)
        self._refusals = refusals

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(self._prefixes):
            return handler

        async def check(context: Any) -> None:
            camera = peer_identity(context).camera_id
            if camera is not None:
                self._refusals.count("camera_cert_operator_api")
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"camera {camera!r}'s certificate may only stream as that camera (EdgeLink), "
                    "not call the operator and analytics APIs",
                )

        return _wrap_handler(handler, lambda fn, _s: _around(fn, check, lambda _c, _e: None))
