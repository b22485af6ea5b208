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


#: Longest status message sent, in UTF-8 bytes. Messages quote request fields (a camera id, a model
#: id) of any length; the message travels percent-encoded in a trailer, and a client drops trailers
#: above 8 KiB by default, so it would see RESOURCE_EXHAUSTED "Stream removed" instead of the status.
MAX_STATUS_MESSAGE_BYTES = 1024


def bounded(message: str) -> str:
    """``message`` cut to MAX_STATUS_MESSAGE_BYTES (UTF-8), marked with '…' where it was cut."""
    data = message.encode("utf-8", "replace")
    if len(data) <= MAX_STATUS_MESSAGE_BYTES:
        return message
    return data[: MAX_STATUS_MESSAGE_BYTES - 3].decode("utf-8", "ignore") + "…"


async def abort_with(context: aio.ServicerContext, exc: BaseException) -> None:
    """End the RPC with the status of ``exc``; unexpected errors say only 'internal error'."""
    code = status_of(exc)
    message = str(exc) if isinstance(exc, LayercastError) else "internal error (see the server log)"
    await context.abort(code, bounded(message))
