"""One record per frame: its header is parsed once on its way through a real server, the pipeline
answers in events, and only the EdgeLink servicer turns them into protobuf."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import grpc

from layercast.cloud.ingest.frame import Acked, CreditsBack, Rejected
from layercast.cloud.rpc.servicers.edge_link import to_message
from layercast.shared.codec import bitstream
from layercast.shared.rpc import edge_pb2
from tests.cloud.conftest import operator_channel
from tests.cloud.test_server import connect, results

CLOUD = Path(__file__).resolve().parents[2] / "cloud"


async def test_each_frame_header_is_parsed_once_from_ack_to_result(cloud, task_codec, frames, monkeypatch):
    parsed: list[int] = []
    real = bitstream.parse_header

    def counting(data, **kw):
        header = real(data, **kw)
        parsed.append(header.width)
        return header

    monkeypatch.setattr(bitstream, "parse_header", counting)
    async with operator_channel(cloud.target) as ch:
        e, _ = await connect(ch, task_codec)
        for seq in (1, 2, 3):
            e.frame(seq, frames[seq].base)
        got = await asyncio.wait_for(results(ch, 3), 60)
        assert [r.sequence for r in got] == [1, 2, 3]
        e.close()
    assert len(parsed) == 3, parsed  # at ingest only: not again in the batcher, nor in decoding


def test_events_become_the_messages_the_edge_reads():
    assert to_message(Acked(7)) == edge_pb2.CloudMessage(ack=edge_pb2.Ack(sequence=7))
    assert to_message(Acked(7, duplicate=True)).ack.duplicate
    rejected = to_message(Rejected(8, grpc.StatusCode.OUT_OF_RANGE, "stale")).rejected
    assert (rejected.sequence, rejected.code, rejected.message) == (8, 11, "stale")
    assert to_message(CreditsBack(3)) == edge_pb2.CloudMessage(credits=edge_pb2.Credits(credits=3))


def test_only_the_edge_link_servicer_speaks_edge_protobuf_on_the_frame_path():
    speakers = []
    for path in sorted(CLOUD.rglob("*.py")):
        if "web" in path.parts or "cluster" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "layercast.shared.rpc":
                if any(alias.name in ("edge_pb2", "edge_pb2_grpc") for alias in node.names):
                    speakers.append(path.relative_to(CLOUD).as_posix())
    frame_path = {"pipeline.py", "batcher.py", "engine.py", "store.py", "frame.py", "hub.py"}
    assert not {Path(s).name for s in speakers} & frame_path, speakers


async def test_a_stream_cut_right_after_an_ack_leaves_no_stored_frame_without_its_result(
    cloud, task_codec, frames
):
    """The servicer stops reading ``ingest`` when its stream ends; the frame it acked is stored, so
    it must still reach inference (the edge never sends an acked frame again)."""
    from layercast.cloud.sessions import CameraSession

    session = CameraSession("cam-a", edge_pb2.Hello(camera_id="cam-a"))
    events = cloud.pipeline.ingest(session, 1, 1_000, frames[1].base)
    assert await anext(events) == Acked(1)
    await events.aclose()  # what a cut stream does to the generator
    assert (await cloud.store.get_frame("cam-a", 1)) is not None
    async with operator_channel(cloud.target) as ch:
        got = await asyncio.wait_for(results(ch, 1, camera_ids=["cam-a"]), 60)
    assert [(r.camera_id, r.sequence) for r in got] == [("cam-a", 1)]
