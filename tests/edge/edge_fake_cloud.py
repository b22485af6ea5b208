"""A real grpc.aio EdgeLink server on 127.0.0.1 that the edge tests talk to.

``FakeCloud`` speaks the cloud side of proto/layercast/v1/edge.proto the way the
edge expects (see layercast.edge.link): Welcome after Hello, one Ack per
stored frame (``duplicate`` for a sequence it already had), FrameRejected for
sequences listed in ``reject``, and like the layercast cloud a Credits(1) back
for every frame it has finished with (when ``auto_ack``). The test drives the
rest: hold acks, grant credits, ask for enhancements, drop the stream, refuse
cameras.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import grpc.aio

from layercast.edge.config import BackoffConfig, LinkConfig
from layercast.shared.rpc import edge_pb2, edge_pb2_grpc

DROP = object()  # abort the stream with UNAVAILABLE
END = object()  # finish the stream with OK


@dataclass(eq=False)
class Stream:
    """One EdgeLink.Connect call as the server saw it."""

    hello: edge_pb2.Hello
    outgoing: asyncio.Queue = field(default_factory=asyncio.Queue)
    frames: list[edge_pb2.BaseFrame] = field(default_factory=list)
    acked: set[int] = field(default_factory=set)
    max_outstanding: int = 0

    @property
    def outstanding(self) -> int:
        return len([f for f in self.frames if f.sequence not in self.acked])

    def send(self, **kind: object) -> None:
        self.outgoing.put_nowait(edge_pb2.CloudMessage(**kind))

    def ack(self, *sequences: int, credit: bool = False) -> None:
        """Ack frames (and give their credits back when ``credit``)."""
        for s in sequences:
            self.acked.add(s)
            self.send(ack=edge_pb2.Ack(sequence=s))
        if credit:
            self.grant(len(sequences))

    def grant(self, n: int) -> None:
        self.send(credits=edge_pb2.Credits(credits=n))

    def drop(self) -> None:
        self.outgoing.put_nowait(DROP)


class FakeCloud(edge_pb2_grpc.EdgeLinkServicer):
    def __init__(self) -> None:
        self.initial_credits = 8
        self.heartbeat_ms = 0
        self.max_frame_bytes = 0
        self.last_acked = 0
        self.auto_ack = True
        self.reject: set[int] = set()
        self.refuse: list[grpc.StatusCode] = []  # statuses for the next Connect calls, in order
        self.streams: list[Stream] = []
        self.frames: list[edge_pb2.BaseFrame] = []  # every frame received, every stream
        self.stored: dict[int, bytes] = {}
        self.responses: list[edge_pb2.EnhancementResponse] = []
        self.heartbeats: list[edge_pb2.Heartbeat] = []
        self.attempts = 0

    async def Connect(self, request_iterator, context):  # noqa: N802 (gRPC method name)
        self.attempts += 1
        first = await context.read()
        if self.refuse:
            await context.abort(self.refuse.pop(0), "refused by the test")
        assert first.WhichOneof("kind") == "hello"
        stream = Stream(hello=first.hello)
        self.streams.append(stream)
        await context.write(
            edge_pb2.CloudMessage(
                welcome=edge_pb2.Welcome(
                    session_id=f"s{len(self.streams)}",
                    initial_credits=self.initial_credits,
                    last_acked_sequence=self.last_acked,
                    heartbeat_interval_ms=self.heartbeat_ms,
                    max_frame_bytes=self.max_frame_bytes,
                )
            )
        )
        reader = asyncio.create_task(self._read(stream, context))
        try:
            while True:
                item = await stream.outgoing.get()
                if item is DROP:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "connection dropped by the test")
                if item is END:
                    return
                await context.write(item)
        finally:
            reader.cancel()

    async def _read(self, stream: Stream, context) -> None:
        while True:
            msg = await context.read()
            if msg is grpc.aio.EOF:
                return
            kind = msg.WhichOneof("kind")
            if kind == "frame":
                f = msg.frame
                stream.frames.append(f)
                self.frames.append(f)
                stream.max_outstanding = max(stream.max_outstanding, stream.outstanding)
                if f.sequence in self.reject:
                    stream.acked.add(f.sequence)
                    stream.send(
                        rejected=edge_pb2.FrameRejected(sequence=f.sequence, code=3, message="bad frame")
                    )
                    stream.grant(1)
                elif self.auto_ack:
                    duplicate = f.sequence in self.stored
                    self.stored.setdefault(f.sequence, f.base)
                    stream.acked.add(f.sequence)
                    stream.send(ack=edge_pb2.Ack(sequence=f.sequence, duplicate=duplicate))
                    stream.grant(1)
                else:
                    self.stored.setdefault(f.sequence, f.base)
            elif kind == "enhancement":
                self.responses.append(msg.enhancement)
            elif kind == "heartbeat":
                self.heartbeats.append(msg.heartbeat)

    @property
    def current(self) -> Stream:
        return self.streams[-1]


class CloudServer:
    """FakeCloud served on 127.0.0.1 (port chosen by the OS; restartable on the same port)."""

    def __init__(self, servicer: FakeCloud) -> None:
        self.servicer = servicer
        self.port = 0
        self.server: grpc.aio.Server | None = None

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                # Accept the edge's keepalive pings (the cloud must, or it sends GOAWAY).
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
                ("grpc.keepalive_permit_without_calls", 1),
            ]
        )
        edge_pb2_grpc.add_EdgeLinkServicer_to_server(self.servicer, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)
            self.server = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def link_config(address: str, **overrides: object) -> LinkConfig:
    """A LinkConfig for loopback tests: plain text, short delays."""
    cfg = LinkConfig(
        cloud=address,
        insecure=True,
        heartbeat_interval_s=5.0,
        stall_timeout_s=0.0,
        welcome_timeout_s=5.0,
        backoff=BackoffConfig(initial_s=0.01, max_s=0.05),
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


async def eventually(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``cond`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
