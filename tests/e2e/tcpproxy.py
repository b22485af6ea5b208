"""A TCP proxy on 127.0.0.1 that a test can use to break the network between an edge and the cloud.

The edge connects to the proxy, the proxy to the cloud. The test switches its mode at any time
(thread-safe; the proxy runs its own asyncio loop in a daemon thread)::

    with TcpProxy(cloud.target) as proxy:          # mode "pass"
        edge = EdgeProcess(..., cloud_target=proxy.target, ...)
        proxy.stall()    # black hole: connections stay open, no byte moves either way
        proxy.stall(up=False)  # one way only: the edge's bytes reach the cloud, no answer comes back
        proxy.drop()     # cut: every connection is reset (RST), new ones are reset on accept
        proxy.pass_()    # healed: bytes flow again (stalled connections resume where they were)

``stall`` is what a pulled cable or a dead NAT mapping looks like to both ends: the sockets
look open, nothing arrives, and TCP flow control pushes back on whoever keeps writing (the
proxy stops reading, so its receive buffers fill). Only keepalive pings or an application
watchdog notice it. ``drop`` is a router or firewall that resets connections: both ends learn
at once. Nothing here talks to anything but loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from typing import Literal

Mode = Literal["pass", "stall", "drop"]
CHUNK = 64 * 1024


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), not a FIN: what a cut connection looks like."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def reset(self) -> None:
        for t in self.tasks:
            t.cancel()
        for w in (self.client, self.upstream):
            if w is not None:
                _reset(w)


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target`` ("host:port"); see the module docstring."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self._mode: Mode = "pass"
        self._loop = asyncio.new_event_loop()
        #: Gates of the two directions: up = client → target, down = target → client.
        self._flowing: dict[bool, asyncio.Event] = {}
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcpproxy", daemon=True)
        self.port = 0
        #: Connections accepted since start (a reconnect shows up here).
        self.accepted = 0
        #: Bytes forwarded in each direction.
        self.bytes_up = 0
        self.bytes_down = 0

    # -- control (from the test's thread) -----------------------------------------------------------

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def pass_(self) -> None:
        """Forward again; stalled connections resume."""
        self._call(self._set("pass"))

    def stall(self, *, up: bool = True, down: bool = True) -> None:
        """Stop moving bytes (both ways, or only ``up`` client → target / ``down`` target → client);
        keep every connection open; hold new ones silently while ``up`` is stalled."""
        assert up or down
        self._call(self._set("stall", up=up, down=down))

    def drop(self) -> None:
        """Reset every connection now and every new one on accept, until the next mode change."""
        self._call(self._set("drop"))

    @property
    def open_connections(self) -> int:
        return len(self._links)

    def wait_accepted(self, n: int, timeout: float) -> None:
        """Wait until ``n`` connections have been accepted in all (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        while self.accepted < n:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the proxy accepted {self.accepted} connections, not {n}, in {timeout}s"
                )
            time.sleep(0.02)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro) -> None:  # noqa: ANN001 - a coroutine run on the proxy's loop
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- on the proxy's loop ------------------------------------------------------------------------

    async def _start(self) -> None:
        self._flowing = {True: asyncio.Event(), False: asyncio.Event()}
        for gate in self._flowing.values():
            gate.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for link in list(self._links):
            link.reset()
        self._links.clear()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _set(self, mode: Mode, *, up: bool = True, down: bool = True) -> None:
        self._mode = mode
        for direction, stop in ((True, up), (False, down)):
            if mode == "pass" or not stop:
                self._flowing[direction].set()
            else:
                self._flowing[direction].clear()
        if mode == "drop":
            for link in list(self._links):
                link.reset()
            self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._mode == "drop":
            _reset(writer)
            return
        link = _Link(writer)
        self._links.add(link)
        try:
            await self._flowing[True].wait()  # a stalled network does not carry the handshake either
            if link not in self._links:  # dropped meanwhile
                return
            up_reader, link.upstream = await asyncio.open_connection(*self._target)
            link.tasks = [
                asyncio.create_task(self._pump(reader, link.upstream, up=True)),
                asyncio.create_task(self._pump(up_reader, writer, up=False)),
            ]
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        except OSError:
            pass  # the cloud is down: the client sees its connection close
        except asyncio.CancelledError:
            pass  # the proxy is closing (asyncio's stream callback must not see a cancelled task)
        finally:
            if link in self._links:
                self._links.discard(link)
                link.reset()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, up: bool) -> None:
        gate = self._flowing[up]
        while True:
            await gate.wait()  # stalled: stop reading, so TCP pushes back on the sender
            data = await src.read(CHUNK)
            if not data:
                return
            await gate.wait()
            dst.write(data)
            await dst.drain()
            if up:
                self.bytes_up += len(data)
            else:
                self.bytes_down += len(data)
