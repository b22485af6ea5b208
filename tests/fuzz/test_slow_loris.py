"""Slow-loris connections: many raw TCP connections that send nothing, half the HTTP/2 preface, or
the preface and SETTINGS and then nothing, plus EdgeLink streams that never say Hello.

The server keeps answering a normal client with its usual latency while they are held, and
closes each of them after a bound: the handshake timeout (``limits.handshake_timeout_s``) for
connections that never finish the HTTP/2 handshake, the idle timeout
(``limits.connection_idle_s``) for connections that finish it but open no call, the Hello
timeout for streams without a Hello. File descriptors and memory come back to where they were.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import socket
import statistics
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from layercast.shared.codec import ScalableCodec
from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc
from tests.fuzz.clients import CONNECT, assert_still_serving
from tests.fuzz.harness import FuzzServer, rss_mb
from tests.fuzz.strategies import Samples

HANDSHAKE_S, IDLE_S, HELLO_S = 1.5, 3.5, 1.0
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
#: What each kind of slow connection sends before it goes quiet, and how many of each.
KINDS = {"silent": b"", "half_preface": PREFACE[:11], "preface_and_settings": PREFACE + EMPTY_SETTINGS}
PER_KIND = 70


@pytest.fixture(scope="module")
def loris_server(codec: ScalableCodec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    server = FuzzServer(
        codec,
        tmp_path_factory.mktemp("loris-cloud"),
        **{
            "limits.handshake_timeout_s": HANDSHAKE_S,
            "limits.connection_idle_s": IDLE_S,
            "limits.hello_timeout_s": HELLO_S,
        },
    )
    try:
        yield server
    finally:
        server.stop()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def latencies(fz: FuzzServer, samples: Samples, n: int = 10) -> list[float]:
    """Seconds per call of a normal client: health checks and unary inference, alternately."""

    async def measure() -> list[float]:
        health = health_pb2_grpc.HealthStub(fz.channel)
        infer = analytics_pb2_grpc.AnalyticsStub(fz.channel).Infer
        out = []
        for i in range(n):
            t = time.perf_counter()
            if i % 2:
                await infer(analytics_pb2.InferRequest(base=samples.bases[0]), timeout=30)
            else:
                assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=30)).status == 1
            out.append(time.perf_counter() - t)
        return out

    return fz.run(measure(), timeout=120)


def hold(port: int) -> list[tuple[str, socket.socket, float]]:
    conns = []
    for kind, data in KINDS.items():
        for _ in range(PER_KIND):
            s = socket.create_connection(("127.0.0.1", port))
            if data:
                s.sendall(data)
            s.setblocking(False)
            conns.append((kind, s, time.monotonic()))
    return conns


def still_open(s: socket.socket) -> bool:
    try:
        while s.recv(65536):  # the server's SETTINGS may arrive; only EOF or a reset means closed
            pass
        return False
    except BlockingIOError:
        return True
    except ConnectionError:
        return False


def wait_closed(conns: list[tuple[str, socket.socket, float]], limit_s: float) -> dict[str, list[float]]:
    """Seconds each connection lived until the server closed it (by kind); fails after ``limit_s``."""
    sel = selectors.DefaultSelector()
    for kind, s, t in conns:
        sel.register(s, selectors.EVENT_READ, (kind, t))
    lived: dict[str, list[float]] = {k: [] for k in KINDS}
    deadline = time.monotonic() + limit_s
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            kind, t = key.data
            if not still_open(key.fileobj):  # type: ignore[arg-type]
                lived[kind].append(time.monotonic() - t)
                sel.unregister(key.fileobj)
    assert not sel.get_map(), f"{len(sel.get_map())} slow connections still open after {limit_s} s"
    return lived


async def streams_without_hello(channel: aio.Channel, n: int) -> list[tuple[grpc.StatusCode, float]]:
    """``n`` EdgeLink streams that never send a message: each ends UNAUTHENTICATED after the Hello timeout."""

    async def silent() -> None:
        await asyncio.Event().wait()
        yield b""  # pragma: no cover

    async def one() -> tuple[grpc.StatusCode, float]:
        t = time.perf_counter()
        call = channel.stream_stream(CONNECT)(silent(), timeout=30)
        try:
            async for _ in call:
                pass
        except aio.AioRpcError as exc:
            return exc.code(), time.perf_counter() - t
        return grpc.StatusCode.OK, time.perf_counter() - t

    return list(await asyncio.gather(*(one() for _ in range(n))))


def test_slow_connections_are_closed_after_a_bound_and_do_not_slow_others(
    loris_server: FuzzServer, samples: Samples
) -> None:
    fz = loris_server
    latencies(fz, samples, 4)  # warm up
    baseline = statistics.median(latencies(fz, samples))
    fds0, rss0 = open_fds(), rss_mb(trimmed=True)
    port = int(fz.target.rsplit(":", 1)[1])

    conns = hold(port)
    hello_streams = asyncio.run_coroutine_threadsafe(streams_without_hello(fz.channel, 20), fz.threads.loop)
    during = statistics.median(latencies(fz, samples))
    held = sum(still_open(s) for _, s, _ in conns)
    assert held == len(conns), f"only {held} of {len(conns)} slow connections were still held while measuring"

    lived = wait_closed(conns, limit_s=IDLE_S + 10)
    for _, s, _ in conns:
        s.close()
    ended = hello_streams.result(30)
    print(
        f"\nSLOW LORIS {len(conns)} connections + {len(ended)} streams without Hello: "
        f"latency median {1000 * baseline:.1f} ms before, {1000 * during:.1f} ms while held; closed after "
        + ", ".join(f"{k} {min(v):.2f}-{max(v):.2f} s" for k, v in lived.items())
        + f"; Hello streams ended after {max(t for _, t in ended):.2f} s; fds {fds0} -> {open_fds()}, "
        f"RSS {rss0:.1f} -> {rss_mb(trimmed=True):.1f} MiB (trimmed)"
    )
    assert during <= max(3 * baseline, baseline + 0.05), (baseline, during)
    for kind in ("silent", "half_preface"):
        assert HANDSHAKE_S - 0.5 <= min(lived[kind]) and max(lived[kind]) <= HANDSHAKE_S + 5, (
            kind,
            lived[kind],
        )
    # closed by the idle timeout, not the handshake's (grpc checks idleness on a coarse timer, so allow slack)
    assert 0.75 * IDLE_S <= min(lived["preface_and_settings"]), lived["preface_and_settings"]
    assert max(lived["preface_and_settings"]) <= IDLE_S + 5, lived["preface_and_settings"]
    assert all(code == grpc.StatusCode.UNAUTHENTICATED and t < HELLO_S + 5 for code, t in ended), ended
    assert open_fds() <= fds0 + 5 and rss_mb(trimmed=True) - rss0 < 30
    assert_still_serving(fz, samples)
