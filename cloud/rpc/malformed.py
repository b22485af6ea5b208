"""Requests that do not parse end with INVALID_ARGUMENT naming the message type, not UNKNOWN.

grpc calls a method's request deserializer itself; when protobuf raises ``DecodeError`` (a
corrupt wire format, bad UTF-8 in a string field) grpc reports UNKNOWN with the exception's
repr, which tells a client nothing it can act on and looks like a server bug. This interceptor
swaps each method's deserializer for one that returns an :class:`Undecodable` marker instead of
raising, and wraps the method's behavior: a unary request that did not parse is refused before
the servicer runs; in a request stream the marker becomes a :class:`MalformedMessage` raised from
the iterator the servicer reads (EdgeLink maps it like any LayercastError), and one escaping
the servicer ends the call with its status.

Install it last in the interceptor list so authentication and readiness still answer first.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from layercast.cloud.rpc.interceptors import handler_kind
from layercast.cloud.rpc.status import bounded
from layercast.shared.errors import LayercastError, MalformedMessage


@dataclass(frozen=True)
class Undecodable:
    """What the safe deserializer returns for bytes that are not a valid message."""

    error: str


def _safe(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return Undecodable(str(exc) or "the request is not a valid protobuf message")

    return parse


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for item in requests:
        if isinstance(item, Undecodable):
            raise MalformedMessage(item.error)
        yield item


def _guard(fn: Callable[..., Any], *, stream_request: bool) -> Callable[..., Any]:
    """``fn`` with undecodable requests refused (INVALID_ARGUMENT) instead of reaching it."""

    async def refuse(context: aio.ServicerContext, exc: LayercastError) -> None:
        await context.abort(getattr(grpc.StatusCode, exc.grpc_status), bounded(str(exc)))

    def arguments(request: Any) -> Any:
        if stream_request:
            return _checked(request)
        if isinstance(request, Undecodable):
            raise MalformedMessage(request.error)
        return request

    if inspect.isasyncgenfunction(fn):

        async def gen(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for item in fn(arguments(request), context):
                    yield item
            except MalformedMessage as exc:
                await refuse(context, exc)

        return gen

    async def coro(request: Any, context: aio.ServicerContext) -> Any:
        try:
            return await fn(arguments(request), context)
        except MalformedMessage as exc:
            await refuse(context, exc)

    return coro


class DecodeErrorInterceptor(aio.ServerInterceptor):
    """Maps requests that fail to parse to INVALID_ARGUMENT (see the module docstring)."""

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        kind = handler_kind(handler)
        fn = kind.behavior
        if not (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)):
            return handler  # a sync behavior: not one of ours
        return kind.factory(
            _guard(fn, stream_request=kind.stream_request),
            request_deserializer=_safe(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
