"""Answering the cloud's EnhancementRequest from the enhancement store.

Outcomes (``EnhancementResponse``): the bytes; or ``unavailable`` with
``EXPIRED`` (past retention), ``NOT_FOUND`` (never kept here, or this edge keeps
no enhancement layers) or ``STORE_ERROR`` (the store failed: unreadable,
corrupt, never written because the disk was full, or too large for the link).
Every outcome is counted in the edge's stats.
"""

from __future__ import annotations

import asyncio

from layercast.edge.enhancement_store import EnhancementStore, LookupStatus, NotKept
from layercast.edge.stats import EdgeStats
from layercast.shared.errors import StorageError
from layercast.shared.rpc import edge_pb2

Unavailable = edge_pb2.EnhancementUnavailable


async def answer_request(
    req: edge_pb2.EnhancementRequest,
    store: EnhancementStore | None,
    stats: EdgeStats,
    max_bytes: int,
    *,
    store_unavailable: str = "",
) -> edge_pb2.EnhancementResponse:
    """The response to ``req``; reads the store in a worker thread; never raises for store failures.

    ``store_unavailable``: why the store this edge is configured to keep cannot be opened (then
    ``store`` is None and the answer is STORE_ERROR rather than "keeps no enhancement layers").
    """

    def unavailable(reason: int, label: str, message: str) -> edge_pb2.EnhancementResponse:
        stats.record_enhancement(label)
        return edge_pb2.EnhancementResponse(
            request_id=req.request_id,
            sequence=req.sequence,
            unavailable=Unavailable(reason=reason, message=message),
        )

    if store is None and store_unavailable:
        return unavailable(Unavailable.STORE_ERROR, "store_error", store_unavailable)
    if store is None:
        return unavailable(Unavailable.NOT_FOUND, "not_found", "this edge keeps no enhancement layers")
    try:
        found = await asyncio.to_thread(store.get, req.sequence)
    except StorageError as exc:
        if not isinstance(exc, NotKept):  # a failed write was counted when it happened
            stats.record_store_error(str(exc))
        return unavailable(Unavailable.STORE_ERROR, "store_error", str(exc))
    if found.status is LookupStatus.EXPIRED:
        return unavailable(Unavailable.EXPIRED, "expired", found.message)
    if found.status is LookupStatus.NOT_FOUND:
        return unavailable(Unavailable.NOT_FOUND, "not_found", found.message)
    data = found.data or b""
    if len(data) > max_bytes:
        return unavailable(
            Unavailable.STORE_ERROR,
            "store_error",
            f"enhancement of frame {req.sequence} is {len(data)} bytes, above the link limit of {max_bytes}",
        )
    stats.record_enhancement("served", len(data))
    return edge_pb2.EnhancementResponse(request_id=req.request_id, sequence=req.sequence, enhancement=data)
