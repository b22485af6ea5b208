"""Scale-out through Redis with real components: a real ``redis-server`` on a free loopback port,
two CloudServer replicas in this process with the shipped test codec, a camera streaming to one.

* An operator Enhance / GetPreview / ListFrames / ListCameras on the replica without the camera
  is answered through the one with it (same bytes as asking it), statuses kept across the hop.
* Subscribers on either replica see every result exactly once, in order (from the start, joining
  mid-stream, and resuming).
* A camera that moves to the other replica is taken from the first at once; the first still
  enhances the frames it stored, through the camera's new replica.
* Embedded mode (the default) needs no Redis at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc import aio
from PIL import Image
from prometheus_client import generate_latest

from layercast.cloud.cluster.keys import Keys
from layercast.cloud.cluster.ownership import Ownership
from layercast.cloud.cluster.results import RedisResultLog
from layercast.cloud.cluster.signing import Signer
from layercast.cloud.config import load_cloud_config
from layercast.cloud.results.records import ReplayQuery
from layercast.cloud.server import CloudServer
from layercast.shared.codec.api import EncodedFrame, ScalableCodec
from layercast.shared.errors import ClusterUnavailable, ConfigError
from layercast.shared.rpc import (
    analytics_pb2,
    analytics_pb2_grpc,
    common_pb2,
    edge_pb2,
    operator_pb2,
    operator_pb2_grpc,
)
from tests.cloud.conftest import TOKENS, EdgeStream, cloud_config, operator_channel
from tests.system import require

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
#: Frames the camera sends to replica A (the 12 test frames, cycled).
N = 40
#: The cluster secret of the test replicas.
SECRET = "test-cluster-secret-" + "s" * 20


# ------------------------------------------------------------------------------------ redis-server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 (no persistence), for this module."""
    require(REDIS_SERVER, "redis-server", "the scale-out tests")
    workdir = tmp_path_factory.mktemp("redis")
    for _attempt in range(3):
        port = _free_port()
        proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", str(workdir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        ready, lines = threading.Event(), []

        def drain(out: Any = proc.stdout, ready: threading.Event = ready, lines: list[str] = lines) -> None:
            for raw in out:  # also keeps the pipe from filling up
                lines.append(raw.decode(errors="replace"))
                if "Ready to accept connections" in lines[-1]:
                    ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if ready.wait(15):
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail("redis-server did not start:\n" + "".join(lines[-20:]))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


# ------------------------------------------------------------------------------------ replicas


def replica_config(tmp_path: Path, name: str, redis_url: str, prefix: str, **overrides: Any) -> Any:
    return cloud_config(
        tmp_path / name,
        **{
            "cluster.backend": "redis",
            "cluster.redis_url": redis_url,
            "cluster.replica_id": name,
            "cluster.key_prefix": prefix,
            "cluster.ownership_ttl_s": 3.0,
            "cluster.forward_timeout_s": 10.0,
            "cluster.secret": SECRET,
            **overrides,
        },
    )


@pytest.fixture
async def replicas(
    tmp_path: Path, redis_url: str, task_codec: ScalableCodec, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[CloudServer, CloudServer]]:
    prefix = f"t-{request.node.name}"[:100]
    a = CloudServer(replica_config(tmp_path, "replica-a", redis_url, prefix), codec=task_codec)
    b = CloudServer(replica_config(tmp_path, "replica-b", redis_url, prefix), codec=task_codec)
    await a.start()
    try:
        await b.start()
        try:
            yield a, b
        finally:
            await b.stop(5.0)
    finally:
        await a.stop(5.0)


def cluster_metrics(server: CloudServer) -> dict[str, float]:
    """The replica's ``layercast_cloud_cluster_*`` samples as its /metrics serves them."""
    text = generate_latest(server.metrics.registry).decode()
    return {
        name: float(value)
        for name, value in (line.rsplit(" ", 1) for line in text.splitlines())
        if name.startswith("layercast_cloud_cluster_")
    }


class Camera:
    """A camera on a hand-driven EdgeLink stream: counts acks, answers enhancement requests with the
    real enhancement layer of the frame it sent."""

    def __init__(self, channel: aio.Channel, frames: list[EncodedFrame], model_id: str) -> None:
        self.frames = frames
        self.stream = EdgeStream(channel)
        self.stream.hello("cam-a", TOKENS["cam-a"], model_id, next_sequence=1, capabilities=["enhancement"])
        self.acks: list[int] = []
        self.asked: list[int] = []
        self.ended: BaseException | None = None
        self.changed = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    def frame_of(self, sequence: int) -> EncodedFrame:
        return self.frames[(sequence - 1) % len(self.frames)]

    async def welcome(self) -> edge_pb2.Welcome:
        welcome = await self.stream.recv_kind("welcome")
        self._pump = asyncio.create_task(self._run())
        return welcome

    def send(self, sequence: int) -> None:
        self.stream.frame(sequence, self.frame_of(sequence).base)

    async def _run(self) -> None:
        try:
            while True:
                msg = await self.stream.recv(timeout=120)
                kind = msg.WhichOneof("kind")
                if kind == "ack":
                    self.acks.append(msg.ack.sequence)
                elif kind == "enhancement_request":
                    req = msg.enhancement_request
                    self.asked.append(req.sequence)
                    self.stream.send(
                        enhancement=edge_pb2.EnhancementResponse(
                            request_id=req.request_id,
                            sequence=req.sequence,
                            enhancement=self.frame_of(req.sequence).enhancement,
                        )
                    )
                elif kind == "rejected":
                    raise AssertionError(f"frame rejected: {msg.rejected}")
                self.changed.set()
        except BaseException as exc:  # the stream's end (EOF or its status)
            self.ended = exc
            self.changed.set()

    async def until(self, predicate: Callable[[], bool], timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        self.stream.close()
        await self.until(lambda: self.ended is not None)


class Subscriber:
    """One Analytics.Subscribe call, read into a list by a task."""

    def __init__(self, channel: aio.Channel, **request: Any) -> None:
        self.call = analytics_pb2_grpc.AnalyticsStub(channel).Subscribe(
            analytics_pb2.SubscribeRequest(**request)
        )
        self.results: list[common_pb2.Result] = []
        self.changed = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for ev in self.call:
            assert ev.WhichOneof("kind") == "result", ev
            self.results.append(ev.result)
            self.changed.set()

    @property
    def sequences(self) -> list[int]:
        return [r.sequence for r in self.results]

    async def until(self, count: int, timeout: float = 60) -> list[int]:
        async with asyncio.timeout(timeout):
            while len(self.results) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.sequences

    def cancel(self) -> None:
        self.call.cancel()
        self._task.cancel()


async def eventually(check: Callable[[], Any], timeout: float = 15.0) -> None:
    """Wait for a condition kept in another process's state (here: a lease in Redis) to hold."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


def enhance_request(sequence: int) -> operator_pb2.EnhanceRequest:
    return operator_pb2.EnhanceRequest(frame=operator_pb2.FrameRef(camera_id="cam-a", sequence=sequence))


def png_array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


async def status_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(aio.AioRpcError) as info:
        await call
    return info.value.code()


# ------------------------------------------------------------------------------------ tests


async def test_enhance_results_and_offline_across_two_replicas(replicas, task_codec, frames) -> None:
    a, b = replicas
    async with operator_channel(a.target) as ch_a, operator_channel(b.target) as ch_b:
        op_a, op_b = operator_pb2_grpc.OperatorStub(ch_a), operator_pb2_grpc.OperatorStub(ch_b)
        early_b = Subscriber(ch_b)  # on B before the camera exists
        early_a = Subscriber(ch_a)
        cam = Camera(ch_a, frames, task_codec.base_model_id)
        await cam.welcome()
        # Welcomed = held in Redis: B reports the camera online (its own store never saw it).
        (listed,) = (await op_b.ListCameras(operator_pb2.ListCamerasRequest())).cameras
        assert listed.camera_id == "cam-a" and listed.online

        for seq in range(1, N // 2 + 1):
            cam.send(seq)
        await early_b.until(N // 2)
        mid_b = Subscriber(ch_b)  # joins mid-stream: replay from Redis, then live
        for seq in range(N // 2 + 1, N + 1):
            cam.send(seq)
        await cam.until(lambda: len(cam.acks) == N)
        resumed_b = Subscriber(ch_b, resume_after={"cam-a": 10})
        for sub in (early_b, early_a, mid_b):
            await sub.until(N)
        await resumed_b.until(N - 10)
        # Exactly once: one more frame, and each subscriber's next result is that one.
        cam.send(N + 1)
        await cam.until(lambda: len(cam.acks) == N + 1)
        counts = {}
        for name, sub, first in (("early-B", early_b, 1), ("early-A", early_a, 1), ("mid-B", mid_b, 1)):
            assert await sub.until(N + 1) == list(range(first, N + 2)), name
            counts[name] = len(sub.results)
        assert await resumed_b.until(N + 1 - 10) == list(range(11, N + 2))
        counts["resumed-B(after 10)"] = len(resumed_b.results)
        assert all(r.camera_id == "cam-a" for r in early_b.results)
        assert a.pipeline.stats.results == N + 1 and b.pipeline.stats.results == 0
        print(
            f"\nscale-out: replica A produced {a.pipeline.stats.results} results; received exactly once, in order: {counts}"
        )

        # (1) Enhance on B for A's camera: forwarded to A, same reconstruction as asking A.
        k = 7
        via_b = await op_b.Enhance(enhance_request(k), timeout=30)
        via_a = await op_a.Enhance(enhance_request(k), timeout=30)
        assert not via_b.cached and via_a.cached  # A did the work once, for B
        assert via_b.reconstruction.png == via_a.reconstruction.png
        assert (via_b.base_bytes, via_b.enhancement_bytes) == (via_a.base_bytes, via_a.enhancement_bytes)
        assert via_b.enhancement_bytes == len(cam.frame_of(k).enhancement)
        assert via_b.result == via_a.result and via_b.result.sequence == k
        decoded = task_codec.decode_base_batch([cam.frame_of(k).base])[0]
        expected = task_codec.reconstruct(decoded, cam.frame_of(k).enhancement)
        assert np.array_equal(png_array(via_b.reconstruction.png), expected)
        assert cam.asked == [k]  # one round trip to the camera
        prev_a = await op_a.GetPreview(operator_pb2.FrameRef(camera_id="cam-a", sequence=3))
        prev_b = await op_b.GetPreview(operator_pb2.FrameRef(camera_id="cam-a", sequence=3))
        assert prev_b == prev_a
        frames_a = await op_a.ListFrames(operator_pb2.ListFramesRequest(camera_id="cam-a", limit=5))
        frames_b = await op_b.ListFrames(operator_pb2.ListFramesRequest(camera_id="cam-a", limit=5))
        assert frames_b == frames_a and [f.sequence for f in frames_b.frames] == list(range(N + 1, N - 4, -1))
        assert [
            f.sequence
            for f in (
                await op_b.ListFrames(
                    operator_pb2.ListFramesRequest(camera_id="cam-a", before_sequence=k + 1, limit=1)
                )
            ).frames
        ] == [k]
        (listed,) = (await op_b.ListCameras(operator_pb2.ListCamerasRequest())).cameras
        assert (listed.online, listed.frames_stored, listed.last_sequence) == (True, N + 1, N + 1)
        # A typed error keeps its status across the hop.
        assert await status_of(op_b.Enhance(enhance_request(10_000), timeout=30)) == grpc.StatusCode.NOT_FOUND

        # Each replica's /metrics shows its share: A holds the camera and wrote every result to the
        # shared stream; B forwarded the Operator calls above to A, and A served them.
        ma, mb = cluster_metrics(a), cluster_metrics(b)
        assert (
            ma["layercast_cloud_cluster_cameras_held"] == 1
            and mb["layercast_cloud_cluster_cameras_held"] == 0
        )
        assert ma["layercast_cloud_cluster_results_appended_total"] == N + 1
        assert mb["layercast_cloud_cluster_results_appended_total"] == 0
        assert ma["layercast_cloud_cluster_redis_up"] == mb["layercast_cloud_cluster_redis_up"] == 1
        sent = mb['layercast_cloud_cluster_calls_total{direction="forwarded"}']
        assert sent >= 6 and ma['layercast_cloud_cluster_calls_total{direction="served"}'] >= sent
        assert ma["layercast_cloud_cluster_results_dropped_total"] == 0

        # (3) The camera goes offline: B says so, and Enhance through B is UNAVAILABLE.
        await cam.close()

        async def offline() -> bool:
            (c,) = (await op_b.ListCameras(operator_pb2.ListCamerasRequest())).cameras
            return not c.online

        await eventually(offline)
        assert (
            await status_of(op_b.Enhance(enhance_request(k + 1), timeout=30)) == grpc.StatusCode.UNAVAILABLE
        )
        assert (
            await status_of(op_a.Enhance(enhance_request(k + 1), timeout=30)) == grpc.StatusCode.UNAVAILABLE
        )
        again = await op_b.Enhance(enhance_request(k), timeout=30)  # A still has it cached
        assert again.cached and again.reconstruction.png == via_a.reconstruction.png
        assert await op_b.GetPreview(operator_pb2.FrameRef(camera_id="cam-a", sequence=3)) == prev_a
        for sub in (early_b, early_a, mid_b, resumed_b):
            sub.cancel()


async def test_a_camera_moving_to_another_replica(replicas, task_codec, frames) -> None:
    a, b = replicas
    async with operator_channel(a.target) as ch_a, operator_channel(b.target) as ch_b:
        op_a, op_b = operator_pb2_grpc.OperatorStub(ch_a), operator_pb2_grpc.OperatorStub(ch_b)
        sub_b = Subscriber(ch_b)
        first = Camera(ch_a, frames, task_codec.base_model_id)
        await first.welcome()
        for seq in (1, 2, 3):
            first.send(seq)
        await first.until(lambda: len(first.acks) == 3)
        # The same camera reconnects to B (say its link to A broke without A noticing).
        second = Camera(ch_b, frames, task_codec.base_model_id)
        welcome = await second.welcome()
        assert welcome.last_acked_sequence == 0  # B's store never saw it (frames stay where they arrived)
        await first.until(
            lambda: first.ended is not None, timeout=10
        )  # told by B at once, not at lease expiry
        assert isinstance(first.ended, aio.AioRpcError) and first.ended.code() == grpc.StatusCode.ABORTED
        assert "replica-b" in first.ended.details()
        for seq in (4, 5):
            second.send(seq)
        await second.until(lambda: len(second.acks) == 2)
        assert await sub_b.until(5) == [1, 2, 3, 4, 5]
        # Frame 2 is in A's store; its enhancement layer comes through B's stream.
        for op in (op_a, op_b):
            resp = await op.Enhance(enhance_request(2), timeout=30)
            assert resp.enhancement_bytes == len(second.frame_of(2).enhancement)
        assert second.asked == [2] and first.asked == []
        ma, mb = cluster_metrics(a), cluster_metrics(b)
        assert (
            ma["layercast_cloud_cluster_cameras_held"] == 0
            and mb["layercast_cloud_cluster_cameras_held"] == 1
        )
        assert ma["layercast_cloud_cluster_results_appended_total"] == 3
        assert mb["layercast_cloud_cluster_results_appended_total"] == 2
        assert ma["layercast_cloud_cluster_cameras_superseded_total"] == 1
        frames_listed = await op_a.ListFrames(operator_pb2.ListFramesRequest(camera_id="cam-a"))
        assert [f.sequence for f in frames_listed.frames] == [5, 4, 3, 2, 1]
        (listed,) = (await op_a.ListCameras(operator_pb2.ListCamerasRequest())).cameras
        assert listed.online and listed.frames_stored == 5 and listed.last_sequence == 5
        sub_b.cancel()
        await second.close()


async def test_results_log_replays_in_pages_and_skips_repeated_entries(redis_url) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)
    log = RedisResultLog(client, "t-log:results", maxlen=1000, signer=Signer(SECRET.encode()))
    writer = asyncio.create_task(log.run_writer())
    try:
        for seq in range(1, 6):
            for cam in ("x", "y"):
                log.publish(common_pb2.Result(camera_id=cam, sequence=seq))
        log.publish(common_pb2.Result(camera_id="x", sequence=3))  # a retried append: seen once
        log.publish(common_pb2.Result(camera_id="x", sequence=6))
        assert await log.flush(10)
        page = await log.results_after(ReplayQuery(cameras=frozenset({"x"}), limit=4))
        assert [r.sequence for r in page] == [1, 2, 3, 4]
        rest = await log.results_after(
            ReplayQuery(cameras=frozenset({"x"}), resume_after={"x": 4}, cursor=page[-1].cursor, limit=10)
        )
        assert [r.sequence for r in rest] == [5, 6]
        everything = await log.results_after(ReplayQuery(resume_after={"y": 2}, default_after=1, limit=100))
        assert [(r.camera_id, r.sequence) for r in everything] == [
            ("x", 2), ("x", 3), ("y", 3), ("x", 4), ("y", 4), ("x", 5), ("y", 5), ("x", 6),
        ]  # fmt: skip
        assert await log.results_after(ReplayQuery(cameras=frozenset(), limit=10)) == []
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await client.delete("t-log:results")
        await client.aclose()


async def test_camera_leases_are_taken_kept_and_given_back_only_by_their_holder(redis_url) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)
    keys = Keys("t-lease")
    a, b = (Ownership(client, keys, name, ttl_s=60) for name in ("a", "b"))
    try:
        assert await a.claim("cam") is None
        assert await b.claim("cam") == "a"  # the newest stream wins
        assert await a.keep(["cam"]) == {"cam": "b"}  # a learns it lost the camera
        assert not await a.release("cam") and await a.owner("cam") == "b"
        assert await b.keep(["cam"]) == {"cam": None}
        assert await b.release("cam") and await a.owner("cam") is None
        assert await a.keep(["cam"]) == {"cam": None} and await b.owner("cam") == "a"  # taken again
        assert await a.owners(["cam", "other"]) == {"cam": "a", "other": None}
        assert await b.stored_at("cam") == {"a", "b"}
        await b.forget_stored("cam", ["b"])
        assert await a.stored_at("cam") == {"a"}
    finally:
        await client.delete(keys.owner("cam"), keys.stored_at("cam"))
        await client.aclose()


async def test_start_fails_clearly_without_redis_or_with_a_taken_replica_id(
    tmp_path, redis_url, task_codec
) -> None:
    closed = f"redis://127.0.0.1:{_free_port()}/0"
    server = CloudServer(replica_config(tmp_path, "lonely", closed, "t-none"), codec=task_codec)
    with pytest.raises(ClusterUnavailable, match="cluster.redis_url"):
        await server.start()
    one = CloudServer(replica_config(tmp_path, "same", redis_url, "t-dup"), codec=task_codec)
    await one.start()
    try:
        two = CloudServer(
            replica_config(tmp_path / "2", "same", redis_url, "t-dup", **{"cluster.ownership_ttl_s": 1.0}),
            codec=task_codec,
        )
        with pytest.raises(ConfigError, match="in use by another running cloud replica"):
            await two.start()
    finally:
        await one.stop(5.0)


def test_cluster_configuration_is_validated_and_read_from_the_environment(tmp_path) -> None:
    base = {"insecure": True, "auth.allow_any_camera": True, "cluster.secret": SECRET}
    cfg = load_cloud_config(
        overrides=base,
        environ={
            "LAYERCAST_CLOUD_CLUSTER__BACKEND": "redis",
            "LAYERCAST_CLOUD_CLUSTER__REDIS_URL": "redis://:s3cret@redis:6379/2",
        },
    )
    assert cfg.cluster.backend == "redis" and cfg.cluster.redis_url == "redis://:s3cret@redis:6379/2"
    assert "s3cret" not in repr(cfg) and "redis://:***@redis:6379/2" in repr(cfg)  # --print-config
    assert load_cloud_config(overrides=base, environ={}).cluster.backend == "none"
    with pytest.raises(ConfigError, match="cluster.redis_url") as info:
        load_cloud_config(overrides={**base, "cluster.backend": "redis", "cluster.redis_url": "http://:pw@x"})
    assert "pw" not in str(info.value)
    with pytest.raises(ConfigError, match="cluster.replica_id"):
        load_cloud_config(overrides={**base, "cluster.backend": "redis", "cluster.replica_id": "a b"})
    with pytest.raises(ConfigError, match="cluster.backend"):
        load_cloud_config(overrides={**base, "cluster.backend": "etcd"})
    with pytest.raises(ConfigError, match="ownership_ttl_s"):
        load_cloud_config(overrides={**base, "cluster.ownership_ttl_s": 0.1})


async def test_embedded_mode_needs_no_redis(tmp_path, task_codec, frames, monkeypatch) -> None:
    # Neither redis-py nor the Redis implementation can be imported, and no Redis runs at that URL.
    for name in [
        m for m in sys.modules if m == "redis" or m.startswith(("redis.", "layercast.cloud.cluster."))
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "redis", None)
    cfg = cloud_config(tmp_path, **{"cluster.redis_url": f"redis://127.0.0.1:{_free_port()}/0"})
    server = CloudServer(cfg, codec=task_codec)
    await server.start()
    try:
        assert server.cluster is None
        async with operator_channel(server.target) as ch:
            sub = Subscriber(ch)
            cam = Camera(ch, frames, task_codec.base_model_id)
            await cam.welcome()
            for seq in (1, 2):
                cam.send(seq)
            assert await sub.until(2) == [1, 2]
            op = operator_pb2_grpc.OperatorStub(ch)
            (listed,) = (await op.ListCameras(operator_pb2.ListCamerasRequest())).cameras
            assert listed.online and listed.frames_stored == 2
            resp = await op.Enhance(enhance_request(2), timeout=30)
            assert resp.enhancement_bytes == len(cam.frame_of(2).enhancement)
            sub.cancel()
            await cam.close()
    finally:
        await server.stop(5.0)
