"""Typed errors → gRPC status codes, in one place."""

from __future__ import annotations

import grpc
from grpc import aio

from layercast.shared.errors import LayercastError


def status_of(exc: BaseException) -> grpc.StatusCode:
    """The status an error stands for (INTERNAL for anything unexpected)."""
    if isinstance(exc, LayercastError):
        return getattr(grpc.StatusCode, exc.grpc_status, grpc.StatusCode.INTERNAL)
    return grpc.StatusCode.INTERNAL


def code_number(code: grpc.StatusCode) -> int:
    """The numeric google.rpc.Code of a status (what FrameRejected.code carries)."""
    return int(code.value[0])


async def abort_with(context: aio.ServicerContext, exc: BaseException) -> None:
    """End the RPC with the status of ``exc``; unexpected errors say only 'internal error'."""
    code = status_of(exc)
    message = str(exc) if isinstance(exc, LayercastError) else "internal error (see the server log)"
    await context.abort(code, message)
