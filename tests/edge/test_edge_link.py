"""The edge link against a real grpc.aio server on 127.0.0.1 (FakeCloud in conftest.py).

The link and outbox deal in bytes, so frames here are pre-made byte strings.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest
from edge_fake_cloud import CloudServer, eventually, link_config

from layercast.edge.enhancement_store import EnhancementStore
from layercast.edge.link import EdgeIdentity, EdgeLink
from layercast.edge.outbox import Outbox
from layercast.edge.stats import EdgeStats
from layercast.shared.rpc import edge_pb2

Unavailable = edge_pb2.EnhancementUnavailable


def base(seq: int) -> bytes:
    return b"BASE%04d" % seq + bytes(range(seq % 50))


class Edge:
    """An outbox, a store and a running EdgeLink."""

    def __init__(self, tmp_path, address: str, **link_overrides) -> None:
        self.outbox = Outbox(tmp_path / "outbox.sqlite3")
        self.store = EnhancementStore(tmp_path / "enh", "cam-1", max_bytes=300, max_age_s=3600)
        self.stats = EdgeStats()
        self.identity = EdgeIdentity(
            camera_id="cam-1",
            token="tok-123",
            base_model_id="ab" * 8,
            enhancement_model_id="cd" * 8,
            capabilities=("enhancement",),
            software_version="test",
        )
        self.link = EdgeLink(
            link_config(address, **link_overrides), self.identity, self.outbox, self.store, self.stats
        )
        self.stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    def add(self, n: int) -> list[int]:
        seqs = [self.outbox.append(1000 * i, base(self.outbox.next_sequence)).sequence for i in range(n)]
        self.link.notify()
        return seqs

    def start(self) -> None:
        self.task = asyncio.create_task(self.link.run(self.stop))

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)
        self.outbox.close()


@pytest.fixture
async def edge_factory(tmp_path):
    edges: list[Edge] = []

    def make(address: str, **kw) -> Edge:
        e = Edge(tmp_path, address, **kw)
        edges.append(e)
        return e

    yield make
    for e in edges:
        with contextlib.suppress(Exception):
            await e.close()


async def test_hello_then_frames_in_order_all_acked(cloud: CloudServer, edge_factory):
    edge = edge_factory(cloud.address)
    edge.add(20)
    edge.start()
    await eventually(lambda: len(edge.outbox) == 0, what="all frames acked")
    fc = cloud.servicer
    hello = fc.streams[0].hello
    assert (hello.camera_id, hello.token, hello.base_model_id) == ("cam-1", "tok-123", "ab" * 8)
    assert hello.enhancement_model_id == "cd" * 8 and list(hello.capabilities) == ["enhancement"]
    assert hello.next_sequence == 21
    assert [f.sequence for f in fc.frames] == list(range(1, 21))
    assert all(f.base == base(f.sequence) and not f.resent for f in fc.frames)
    assert [f.capture_time_us for f in fc.frames[:3]] == [0, 1000, 2000]
    assert edge.stats.frames_acked == 20 and edge.stats.frames_sent == 20
    assert edge.outbox.stats().acked_frames == 20
    # Frames added later flow on the same stream.
    edge.add(3)
    await eventually(lambda: len(edge.outbox) == 0, what="late frames acked")
    assert [f.sequence for f in fc.frames] == list(range(1, 24)) and len(fc.streams) == 1


async def test_unacked_frames_resent_after_a_drop_none_lost(cloud: CloudServer, edge_factory):
    fc = cloud.servicer
    fc.auto_ack = False
    fc.initial_credits = 5
    edge = edge_factory(cloud.address)
    edge.add(10)
    edge.start()
    await eventually(lambda: fc.streams and len(fc.current.frames) == 5, what="the initial credits' worth")
    fc.current.ack(1, 2, credit=True)
    await eventually(lambda: len(edge.outbox) == 8, what="two acks")
    await eventually(lambda: len(fc.streams[0].frames) == 7, what="two more frames for two credits")
    fc.auto_ack = True
    fc.streams[0].drop()
    await eventually(lambda: len(edge.outbox) == 0, what="everything acked after the reconnect")

    first, second = fc.streams[0], fc.streams[1]
    assert [f.sequence for f in first.frames] == [1, 2, 3, 4, 5, 6, 7]
    assert not any(f.resent for f in first.frames)
    assert [f.sequence for f in second.frames] == [3, 4, 5, 6, 7, 8, 9, 10]
    assert [f.resent for f in second.frames] == [True] * 5 + [False] * 3
    assert all(f.base == base(f.sequence) for f in second.frames)
    assert sorted(fc.stored) == list(range(1, 11))  # none lost
    assert second.hello.next_sequence == 11
    assert edge.stats.connects == 2 and edge.stats.reconnects >= 1
    assert edge.stats.frames_resent == 5
    assert edge.stats.frames_acked_duplicate == 5  # the cloud already had 3..7


async def test_credits_bound_frames_in_flight(cloud: CloudServer, edge_factory):
    fc = cloud.servicer
    fc.auto_ack = False
    fc.initial_credits = 2
    edge = edge_factory(cloud.address)
    edge.add(12)
    edge.start()
    await eventually(lambda: fc.streams and len(fc.current.frames) == 2, what="the first two frames")
    await asyncio.sleep(0.3)
    assert len(fc.current.frames) == 2  # credits spent: nothing more until the cloud grants some
    fc.current.ack(1, 2)
    await eventually(lambda: len(edge.outbox) == 10, what="two acks")
    await asyncio.sleep(0.3)
    assert len(fc.current.frames) == 2  # acks alone do not return credits
    fc.current.grant(3)
    await eventually(lambda: len(fc.current.frames) == 5, what="three more after Credits(3)")
    await asyncio.sleep(0.3)
    assert len(fc.current.frames) == 5
    fc.current.grant(1)
    await eventually(lambda: len(fc.current.frames) == 6, what="one more after Credits(1)")
    await asyncio.sleep(0.2)
    assert len(fc.current.frames) == 6
    assert edge.link._credits == 0
    fc.auto_ack = True
    fc.current.ack(*range(3, 7), credit=True)
    await eventually(lambda: len(edge.outbox) == 0, what="the rest")
    assert [f.sequence for f in fc.frames] == list(range(1, 13))
    assert fc.current.max_outstanding <= 4


async def test_local_max_in_flight_caps_generous_credits(cloud: CloudServer, edge_factory):
    fc = cloud.servicer
    fc.auto_ack = False
    fc.initial_credits = 1000
    edge = edge_factory(cloud.address, max_in_flight=4)
    edge.add(10)
    edge.start()
    await eventually(lambda: fc.streams and len(fc.current.frames) == 4, what="four frames")
    await asyncio.sleep(0.3)
    assert len(fc.current.frames) == 4


async def test_enhancement_requests_answered_from_the_store(cloud: CloudServer, edge_factory):
    fc = cloud.servicer
    edge = edge_factory(cloud.address)
    for seq in range(1, 6):
        edge.store.put(seq, b"ENH%d" % seq * 25)  # 100 bytes each, budget 300: 1 and 2 evicted
    edge.start()
    await eventually(lambda: edge.link.connected, what="connection")
    for rid, seq in (("r-found", 5), ("r-expired", 1), ("r-none", 99)):
        fc.current.send(enhancement_request=edge_pb2.EnhancementRequest(request_id=rid, sequence=seq))
    await eventually(lambda: len(fc.responses) == 3, what="three answers")
    by_id = {r.request_id: r for r in fc.responses}
    found = by_id["r-found"]
    assert found.sequence == 5 and found.WhichOneof("outcome") == "enhancement"
    assert found.enhancement == b"ENH5" * 25
    assert by_id["r-expired"].unavailable.reason == Unavailable.EXPIRED
    assert by_id["r-none"].unavailable.reason == Unavailable.NOT_FOUND
    assert by_id["r-none"].sequence == 99
    # A damaged file is a store error, never bytes.
    (path,) = [p for p in (edge.store.root).iterdir() if p.name.startswith("00000000000000000004")]
    path.write_bytes(path.read_bytes()[:40])
    fc.current.send(enhancement_request=edge_pb2.EnhancementRequest(request_id="r-broken", sequence=4))
    await eventually(lambda: len(fc.responses) == 4, what="fourth answer")
    assert fc.responses[-1].unavailable.reason == Unavailable.STORE_ERROR
    assert edge.stats.enhancement_served == 1
    assert edge.stats.enhancement_unavailable == {"expired": 1, "not_found": 1, "store_error": 1}


async def test_rejected_frame_is_removed_and_never_resent(cloud: CloudServer, edge_factory):
    fc = cloud.servicer
    fc.reject = {3}
    fc.auto_ack = False
    edge = edge_factory(cloud.address)
    edge.add(5)
    edge.start()
    await eventually(lambda: fc.streams and len(fc.current.frames) == 5, what="five frames")
    fc.current.ack(1, 2)
    await eventually(lambda: len(edge.outbox) == 2, what="acks and the rejection")
    assert edge.outbox.sequences() == [4, 5]
    fc.auto_ack = True
    fc.current.drop()
    await eventually(lambda: len(edge.outbox) == 0, what="4 and 5 after the reconnect")
    assert [f.sequence for f in fc.streams[1].frames] == [4, 5]
    assert [f.sequence for f in fc.frames].count(3) == 1
    assert edge.stats.frames_rejected == 1 and edge.outbox.stats().rejected_frames == 1


async def test_heartbeats_when_idle_carry_queue_and_drop_counts(cloud: CloudServer, edge_factory):
    fc = cloud.servicer
    fc.heartbeat_ms = 100
    edge = edge_factory(cloud.address)
    edge.outbox.record_drops("capture_overflow", 3)
    edge.start()
    await eventually(lambda: len(fc.heartbeats) >= 3, what="heartbeats")
    hb = fc.heartbeats[-1]
    assert hb.queued_frames == 0 and hb.dropped_frames == 3 and hb.time_us > 1_600_000_000_000_000
    gaps = len(fc.heartbeats)
    await asyncio.sleep(0.5)
    assert 2 <= len(fc.heartbeats) - gaps <= 8  # about one per 100 ms, not a flood


async def test_every_stream_opens_with_the_outbox_state_so_drops_during_a_cut_are_reported_at_once(
    cloud: CloudServer, edge_factory
):
    """An hour between idle heartbeats: the cloud still learns the drop count as soon as the link is up,
    before any frame and again on every reconnect (a camera whose last frames were dropped during a cut
    may have nothing else to send)."""
    fc = cloud.servicer
    fc.heartbeat_ms = 3_600_000
    edge = edge_factory(cloud.address)
    edge.outbox.record_drops("capture_overflow", 2)
    edge.add(2)
    edge.start()
    await eventually(
        lambda: len(edge.outbox) == 0 and len(fc.heartbeats) == 1, what="heartbeat, then frames acked"
    )
    assert fc.heartbeats[0].dropped_frames == 2
    edge.outbox.record_drops("queue_full", 5)
    fc.current.drop()
    await eventually(
        lambda: len(fc.streams) >= 2 and any(h.dropped_frames == 7 for h in fc.heartbeats),
        what="the reconnect's heartbeat",
    )
    assert fc.heartbeats[-1].dropped_frames == 7 and fc.heartbeats[-1].queued_frames == 0
    await asyncio.sleep(0.3)
    assert len(fc.heartbeats) == len(fc.streams)  # one per stream, not a flood


async def test_frame_larger_than_cloud_limit_is_dropped_and_counted(cloud: CloudServer, edge_factory):
    fc = cloud.servicer
    fc.max_frame_bytes = 100
    edge = edge_factory(cloud.address)
    edge.outbox.append(1, b"a" * 50)
    edge.outbox.append(2, b"b" * 500)
    edge.outbox.append(3, b"c" * 60)
    edge.start()
    await eventually(lambda: len(edge.outbox) == 0, what="outbox empty")
    assert [f.sequence for f in fc.frames] == [1, 3]
    st = edge.outbox.stats()
    assert st.dropped_frames == 1 and st.drops_by_reason == {"too_large": 1}
    assert edge.stats.frames_too_large == 1


async def test_sequence_moves_past_what_the_cloud_already_has(cloud: CloudServer, edge_factory):
    fc = cloud.servicer
    fc.last_acked = 100  # e.g. the edge's data directory was wiped
    edge = edge_factory(cloud.address)
    edge.start()
    await eventually(lambda: edge.link.connected, what="connection")
    assert fc.current.hello.next_sequence == 1
    await eventually(lambda: edge.outbox.next_sequence == 101, what="sequence advanced")
    assert edge.add(2) == [101, 102]
    await eventually(lambda: len(edge.outbox) == 0, what="acks")
    assert [f.sequence for f in fc.frames] == [101, 102]


async def test_refused_camera_keeps_retrying_then_connects(cloud: CloudServer, edge_factory):
    fc = cloud.servicer
    fc.refuse = [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE]
    edge = edge_factory(cloud.address)
    edge.add(2)
    edge.start()
    await eventually(lambda: len(edge.outbox) == 0, what="acks after two refusals")
    assert fc.attempts == 3 and edge.stats.connects == 1 and edge.stats.reconnects == 2
    assert "tok-123" not in edge.stats.last_error


async def test_cloud_restart_on_the_same_port(cloud: CloudServer, edge_factory):
    fc = cloud.servicer
    edge = edge_factory(cloud.address)
    edge.add(3)
    edge.start()
    await eventually(lambda: len(edge.outbox) == 0, what="first acks")
    await cloud.stop()
    edge.add(4)  # captured while the cloud is down
    await asyncio.sleep(0.2)
    assert len(edge.outbox) == 4 and not edge.link.connected
    await cloud.start()  # same servicer, same port
    await eventually(lambda: len(edge.outbox) == 0, what="acks after the restart")
    assert [f.sequence for f in fc.frames] == list(range(1, 8))
    assert edge.stats.connects == 2


async def test_stalled_cloud_is_detected_and_frames_resent(cloud: CloudServer, edge_factory):
    fc = cloud.servicer
    fc.auto_ack = False  # the cloud reads frames but never answers: a stall
    edge = edge_factory(cloud.address, stall_timeout_s=0.3)
    edge.add(3)
    edge.start()
    await eventually(lambda: fc.streams and len(fc.current.frames) == 3, what="frames")
    fc.auto_ack = True
    await eventually(lambda: len(edge.outbox) == 0, timeout=5, what="reconnect after the stall")
    assert len(fc.streams) == 2
    assert [f.resent for f in fc.streams[1].frames] == [True, True, True]
    assert "no answer" in edge.stats.last_error or edge.stats.disconnects == 1


async def test_sequence_collision_after_a_wiped_outbox_is_counted(cloud: CloudServer, edge_factory):
    fc = cloud.servicer
    fc.stored = {1: b"an older frame 1 from before the wipe"}
    fc.last_acked = 1
    edge = edge_factory(cloud.address)
    edge.add(2)  # captured before the first Welcome: sequences 1 and 2 again
    edge.start()
    await eventually(lambda: len(edge.outbox) == 0, what="acks")
    assert edge.stats.sequence_collisions == 1  # frame 1 could not be delivered, and the books say so
    assert edge.stats.frames_acked_duplicate == 1
    assert edge.add(1) == [3]
