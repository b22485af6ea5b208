"""The soak benchmark's load: cameras that replay real bitstreams through the edge's own link,
and a live Analytics subscriber, all in one process.

Encoding is what a camera cannot fake cheaply: the learned encoder costs tens to hundreds of
milliseconds per frame on one thread, so sixteen cameras at 10 frames/s cannot all encode live on
a 2-core machine. Each :class:`ReplayCamera` therefore encodes a small pool of synthetic frames
once, with the shipped codec, and then *captures* at its frame rate by appending the next pool
bitstream to a real edge :class:`~layercast.edge.outbox.Outbox` (which gives it a fresh sequence
number) with the current time as its capture time. From there on everything is the edge's code:
:class:`~layercast.edge.link.EdgeLink` sends what the cloud's credits allow, applies acks and
rejections, reconnects with backoff, and resends what was not acknowledged. Frames the cloud
cannot take yet wait in the outbox, exactly as on a camera.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc import aio

from layercast import __version__
from layercast.bench.ledger import Ledger
from layercast.edge.config import BackoffConfig, LinkConfig
from layercast.edge.link import EdgeIdentity, EdgeLink
from layercast.edge.outbox import Outbox
from layercast.edge.stats import EdgeStats
from layercast.shared.clock import now_us
from layercast.shared.results_client import SubscriberLagged, results
from layercast.shared.rpc import analytics_pb2_grpc, edge_pb2

log = logging.getLogger(__name__)

DROPPED = "dropped by the edge's outbox (queue full)"
ABANDONED = "abandoned in the edge's outbox when the ramp step ended"


def _status_name(code: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return str(code)


class ReplayLink(EdgeLink):
    """The edge's link, telling the ledger which frames the cloud refused (and why)."""

    def __init__(self, *args: object, ledger: Ledger, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._ledger = ledger

    async def _on_rejected(self, rej: edge_pb2.FrameRejected) -> None:
        self._ledger.lost(
            self.identity.camera_id, rej.sequence, f"refused by the cloud ({_status_name(rej.code)})"
        )
        await super()._on_rejected(rej)


class ReplayCamera:
    """One camera: a pool of pre-encoded base bitstreams, an outbox and the edge's link."""

    def __init__(
        self,
        camera_id: str,
        token: str,
        model_id: str,
        pool: Sequence[bytes],
        workdir: Path,
        ledger: Ledger,
        *,
        synchronous: str = "NORMAL",
    ) -> None:
        self.camera_id = camera_id
        self.identity = EdgeIdentity(camera_id, token, model_id, software_version=f"{__version__}+soak")
        self.pool = list(pool)
        self.workdir = workdir
        self.ledger = ledger
        self.synchronous = synchronous
        self.stats = EdgeStats()
        self._generation = 0
        self.outbox = self._open_outbox()
        self.link: ReplayLink | None = None
        self.max_late_s = 0.0  # worst delay of a capture behind its schedule (the load process's own lag)

    def _open_outbox(self) -> Outbox:
        return Outbox(
            self.workdir / f"{self.camera_id}.{self._generation}.outbox.db", synchronous=self.synchronous
        )

    def new_link(self, target: str) -> ReplayLink:
        """A link for one connection period (the ramp opens one per step)."""
        config = LinkConfig(cloud=target, insecure=True, backoff=BackoffConfig(initial_s=0.2, max_s=2.0))
        self.link = ReplayLink(config, self.identity, self.outbox, None, self.stats, ledger=self.ledger)
        return self.link

    async def capture(self, stop: asyncio.Event, fps: float, phase_s: float, offset: int = 0) -> None:
        """Append one frame every ``1/fps`` s (on an absolute schedule) until ``stop``."""
        loop = asyncio.get_running_loop()
        start = loop.time() + phase_s
        k = 0
        while not stop.is_set():
            due = start + k / fps
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                if stop.is_set():
                    return
            self.max_late_s = max(self.max_late_s, loop.time() - due)
            t = now_us()
            res = await asyncio.to_thread(self.outbox.append, t, self.pool[(offset + k) % len(self.pool)])
            self.ledger.captured(self.camera_id, res.sequence, t)
            for seq in res.dropped:
                self.ledger.lost(self.camera_id, seq, DROPPED)
            self.stats.record_capture()
            self.stats.record_queued(res.stored, len(res.dropped))
            if self.link is not None:
                self.link.notify()
            k += 1

    async def where_unanswered(self, sequences: Sequence[int]) -> dict[str, int]:
        """Where frames without a result are: queued at the edge, sent but not acked, or at the cloud."""
        queued = set(await asyncio.to_thread(self.outbox.sequences))
        out = {
            "queued at the edge, not sent": 0,
            "sent, not acknowledged": 0,
            "stored by the cloud, no result": 0,
        }
        for seq in sequences:
            if seq not in queued:
                out["stored by the cloud, no result"] += 1
            elif self.outbox.is_in_flight(seq):
                out["sent, not acknowledged"] += 1
            else:
                out["queued at the edge, not sent"] += 1
        return out

    async def abandon_queue(self) -> list[int]:
        """Give up what is still queued (end of a ramp step): a fresh outbox whose sequence numbers
        continue after the old one's, so the cloud never sees a sequence twice. Returns the
        abandoned sequences (also recorded as lost in the ledger)."""
        old = self.outbox
        seqs = await asyncio.to_thread(old.sequences)
        next_seq = await asyncio.to_thread(lambda: old.next_sequence)
        self._generation += 1
        self.outbox = await asyncio.to_thread(self._open_outbox)
        await asyncio.to_thread(self.outbox.advance_sequence, next_seq)
        await asyncio.to_thread(old.close)
        for seq in seqs:
            self.ledger.lost(self.camera_id, seq, ABANDONED)
        return seqs

    def close(self) -> None:
        self.outbox.close()


class ResultSubscriber:
    """A live ``Analytics.Subscribe`` client recording each result in the ledger as it arrives.

    It behaves as a careful consumer: when told it lagged (or when the stream breaks) it subscribes
    again from the last sequence it saw per camera, so it misses nothing the cloud still keeps.
    """

    def __init__(self, target: str, ledger: Ledger, token: str = "") -> None:
        self.target = target
        self.ledger = ledger
        #: Operator token sent as ``authorization: Bearer`` (the cloud refuses calls without credentials).
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.resumes = 0  # after a Lagged event
        self.errors = 0  # broken streams
        self.last_error = ""

    async def run(self) -> None:
        """Until cancelled."""
        while True:
            try:
                await self._once()
            except asyncio.CancelledError:
                raise
            except aio.AioRpcError as exc:
                self.errors += 1
                self.last_error = f"{exc.code().name}: {exc.details()}"
                log.warning("subscriber stream ended: %s; subscribing again", self.last_error)
                await asyncio.sleep(0.5)

    async def _once(self) -> None:
        resume = {cam: book.last_result for cam, book in self.ledger.cameras.items() if book.last_result}
        async with aio.insecure_channel(self.target) as channel:
            stream = results(
                analytics_pb2_grpc.AnalyticsStub(channel),
                resume_after=resume,
                on_lag=self._lagged,
                metadata=self.metadata,
            )
            try:
                async for r in stream:
                    self.ledger.result(r.camera_id, r.sequence, now_us())
            finally:
                await stream.aclose()

    def _lagged(self, lag: SubscriberLagged) -> None:
        self.resumes += 1


async def wait_connected(links: Sequence[EdgeLink], timeout: float) -> None:
    """Every link welcomed by the cloud, or RuntimeError naming those that were not."""
    ok = await asyncio.gather(*(link.wait_connected(timeout) for link in links))
    missing = [link.identity.camera_id for link, good in zip(links, ok, strict=True) if not good]
    if missing:
        raise RuntimeError(
            f"{len(missing)} camera(s) not connected after {timeout:.0f} s: {', '.join(missing[:5])}"
            f" (last error: {links[0].stats.last_error or 'none'})"
        )


async def stop_tasks(tasks: Sequence[asyncio.Task[object]]) -> None:
    """Cancel and wait for ``tasks`` (their errors are not interesting at shutdown)."""
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(BaseException):
            await t
