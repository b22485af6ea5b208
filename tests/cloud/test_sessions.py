"""Enhancement routing: answers, every failure mapped to its status, and the reconstruction cache."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from layercast.cloud.results.cache import LruCache
from layercast.cloud.rpc.status import status_of
from layercast.cloud.sessions import CameraSession, EnhancementRouter, SessionRegistry
from layercast.shared.errors import CameraOffline, FrameExpired, PermissionDenied, RequestTimeout
from layercast.shared.rpc import edge_pb2


async def edge_answers(
    session: CameraSession, router: EnhancementRouter, answer
) -> edge_pb2.EnhancementRequest:
    """Play the edge: take the request off the session's stream and answer it."""
    msg = await asyncio.wait_for(session.outgoing.get(), 5.0)
    req = msg.enhancement_request
    router.resolve(session, answer(req))
    return req


def make(timeout_s: float = 5.0):
    reg = SessionRegistry()
    router = EnhancementRouter(reg, timeout_s=timeout_s)
    return reg, router


async def test_offline_camera_is_unavailable():
    _, router = make()
    with pytest.raises(CameraOffline) as info:
        await router.fetch("cam-x", 3)
    assert status_of(info.value) is grpc.StatusCode.UNAVAILABLE


async def test_answer_is_routed_by_request_id_and_shared_by_concurrent_callers():
    reg, router = make()
    s = CameraSession("cam", edge_pb2.Hello(camera_id="cam"))
    reg.attach(s)
    calls = [asyncio.create_task(router.fetch("cam", 7)) for _ in range(3)]
    req = await edge_answers(
        s,
        router,
        lambda r: edge_pb2.EnhancementResponse(request_id=r.request_id, sequence=7, enhancement=b"ENH"),
    )
    assert req.sequence == 7 and req.request_id
    assert await asyncio.gather(*calls) == [b"ENH"] * 3
    assert s.outgoing.empty()  # one request went down the stream, not three
    assert router.pending == 0


async def test_expired_frame_is_not_found_and_timeout_is_deadline_exceeded():
    reg, router = make(timeout_s=0.2)
    s = CameraSession("cam", edge_pb2.Hello(camera_id="cam"))
    reg.attach(s)
    expired = edge_pb2.EnhancementUnavailable(
        reason=edge_pb2.EnhancementUnavailable.EXPIRED, message="kept 60 s"
    )
    call = asyncio.create_task(router.fetch("cam", 1))
    await edge_answers(
        s,
        router,
        lambda r: edge_pb2.EnhancementResponse(request_id=r.request_id, sequence=1, unavailable=expired),
    )
    with pytest.raises(FrameExpired) as info:
        await call
    assert status_of(info.value) is grpc.StatusCode.NOT_FOUND and "retention" in str(info.value)

    with pytest.raises(RequestTimeout) as info2:
        await router.fetch("cam", 2)  # the edge never answers
    assert status_of(info2.value) is grpc.StatusCode.DEADLINE_EXCEEDED
    assert router.pending == 0


async def test_disconnect_fails_waiting_requests_and_other_cameras_cannot_answer():
    reg, router = make()
    a = CameraSession("a", edge_pb2.Hello(camera_id="a"))
    b = CameraSession("b", edge_pb2.Hello(camera_id="b"))
    reg.attach(a)
    reg.attach(b)
    call = asyncio.create_task(router.fetch("a", 5))
    msg = await asyncio.wait_for(a.outgoing.get(), 5.0)
    forged = edge_pb2.EnhancementResponse(
        request_id=msg.enhancement_request.request_id, sequence=5, enhancement=b"evil"
    )
    with pytest.raises(PermissionDenied):
        router.resolve(b, forged)
    reg.detach(a)
    with pytest.raises(CameraOffline):
        await call
    assert not reg.is_online("a") and reg.is_online("b")


async def test_a_new_stream_supersedes_the_old_one():
    reg, _ = make()
    old = CameraSession("a", edge_pb2.Hello(camera_id="a"))
    new = CameraSession("a", edge_pb2.Hello(camera_id="a"))
    reg.attach(old)
    assert reg.attach(new) is old
    assert old.closed and old.end_reason[0] == "ABORTED"
    reg.detach(old)  # the old stream's cleanup must not drop the new one
    assert reg.get("a") is new


def test_lru_cache_is_bounded_by_bytes():
    cache: LruCache[str, bytes] = LruCache(10, len)
    cache.put("a", b"1234")
    cache.put("b", b"1234")
    assert cache.get("a") == b"1234"  # a is now the most recent
    cache.put("c", b"1234")  # 12 bytes > 10: the least recent (b) goes
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.bytes == 8
    cache.put("huge", b"x" * 11)
    assert "huge" not in cache and len(cache) == 2
