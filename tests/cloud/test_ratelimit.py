"""Rate limits: the token bucket on its own (a fake clock), operators refused above their rate and
cameras slowed (never refused) above theirs, on a real server; both counted in /metrics."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc import aio
from prometheus_client import generate_latest

from layercast.cloud.security.credentials import hash_token
from layercast.cloud.security.ratelimit import KeyedLimiter, TokenBucket
from layercast.cloud.server import CloudServer
from layercast.shared.rpc import operator_pb2, operator_pb2_grpc
from tests.cloud.conftest import TOKENS, EdgeStream, cloud_config, operator_channel


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def metric(server: CloudServer, kind: str) -> float:
    text = generate_latest(server.metrics.registry).decode()
    line = next(
        s for s in text.splitlines() if s.startswith(f'layercast_cloud_rate_limited_total{{kind="{kind}"}}')
    )
    return float(line.split()[-1])


def test_bucket_allows_a_burst_then_the_rate():
    clock = FakeClock()
    b = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [b.try_take() for _ in range(4)] == [True, True, True, False]
    assert b.retry_after() == pytest.approx(0.5)
    clock.t += 0.5
    assert b.try_take() and not b.try_take()
    clock.t += 100  # saving up stops at the burst
    assert sum(b.try_take() for _ in range(10)) == 3


def test_reserve_paces_waiting_callers_first_come_first_served():
    clock = FakeClock()
    b = TokenBucket(rate=10.0, burst=2, clock=clock)
    assert [round(b.reserve(), 3) for _ in range(5)] == [0.0, 0.0, 0.1, 0.2, 0.3]


def test_keyed_limiter_is_per_key_bounded_and_off_at_rate_zero():
    clock = FakeClock()
    lim = KeyedLimiter("operator_requests", rate=1.0, burst=1, max_keys=3, clock=clock)
    assert lim.allow("a") == 0.0 and lim.allow("a") > 0 and lim.allow("b") == 0.0
    assert lim.limited == 1
    for i in range(10):
        lim.allow(f"k{i}")
    assert len(lim) == 3  # the least recently used keys are forgotten
    off = KeyedLimiter("camera_frames", rate=0, burst=1)
    assert not off.enabled and all(off.delay("c") == 0.0 for _ in range(1000)) and off.limited == 0
    with pytest.raises(ValueError):
        KeyedLimiter("bytes", 1, 1)


async def test_operators_above_their_rate_get_resource_exhausted(tmp_path, task_codec):
    ops = {"alice": "alice-" + "a" * 30, "bob": "bob-" + "b" * 30}
    cfg = cloud_config(
        tmp_path,
        **{
            "auth.operator_tokens": [f"{n}={hash_token(t)}" for n, t in ops.items()],
            "limits.operator_requests_per_s": 0.5,
            "limits.operator_requests_burst": 3,
        },
    )
    server = CloudServer(cfg, codec=task_codec)
    await server.start()
    try:
        async with aio.insecure_channel(server.target) as ch:
            op = operator_pb2_grpc.OperatorStub(ch)

            async def list_as(name: str) -> grpc.StatusCode:
                try:
                    await op.ListCameras(
                        operator_pb2.ListCamerasRequest(),
                        metadata=[("authorization", f"Bearer {ops[name]}")],
                        timeout=5,
                    )
                except aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        assert (
                            "limits.operator_requests_per_s" in exc.details() and "retry in" in exc.details()
                        )
                    return exc.code()
                return grpc.StatusCode.OK

            codes = [await list_as("alice") for _ in range(5)]
            assert codes == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
            assert await list_as("bob") == grpc.StatusCode.OK  # per operator: bob has his own bucket
            # Refused calls never reach the servicer and the server goes on serving.
            assert metric(server, "operator_requests") == 2
            assert metric(server, "camera_frames") == 0
    finally:
        await server.stop(5)


async def test_a_camera_above_its_rate_is_slowed_not_refused(tmp_path, task_codec, frames):
    rate, burst, n = 10.0, 2, 8
    cfg = cloud_config(tmp_path, **{"limits.camera_frames_per_s": rate, "limits.camera_frames_burst": burst})
    server = CloudServer(cfg, codec=task_codec)
    await server.start()
    try:
        async with operator_channel(server.target) as ch:
            fast, other = EdgeStream(ch), EdgeStream(ch)
            for e, cam in ((fast, "cam-a"), (other, "cam-b")):
                e.hello(cam, TOKENS[cam], task_codec.base_model_id, next_sequence=1)
                await e.recv_kind("welcome")
            t0 = time.perf_counter()
            for seq in range(1, n + 1):  # all at once, well within the credits
                fast.frame(seq, frames[seq % len(frames)].base)
            other.frame(1, frames[0].base)  # another camera is not held up by cam-a's limit
            assert (await other.recv_kind("ack")).sequence == 1
            t_other = time.perf_counter() - t0
            acks = [(await fast.recv_kind("ack", skip=("credits", "rejected"))).sequence for _ in range(n)]
            elapsed = time.perf_counter() - t0
            assert acks == list(range(1, n + 1))  # every frame stored, none refused
            assert elapsed >= (n - burst) / rate - 0.05, elapsed  # 6 frames beyond the burst at 10/s
            assert t_other < 0.5, t_other
            assert metric(server, "camera_frames") == n - burst
            assert server.pipeline.stats.frames_rejected == 0
            for e in (fast, other):
                e.close()
    finally:
        await server.stop(5)
    print(f"\nRATE LIMIT: {n} frames, burst {burst}, {rate:g}/s → all acked after {elapsed:.2f} s")
