"""``EdgeApp``: one camera's pipeline, wired and stopped cleanly.

::

    source --paced--> capture queue --batches--> encoder (worker thread)
       (drop oldest, counted)                        |
                                   base  ->  outbox (SQLite)  ->  link  ->  cloud
                            enhancement  ->  enhancement store  <-  requests

Stopping (``request_stop()``, SIGINT/SIGTERM from the CLI, or the end of a
finite source): capture stops, frames already captured are encoded and
queued, the link gets ``link.drain_timeout_s`` to deliver the outbox, then
the stream closes. What is not acknowledged stays in the outbox for the next
start. When a finite source ends by itself, the app waits (without limit) for
everything to be acknowledged, then stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import numpy as np

from layercast.edge.config import EdgeConfig
from layercast.edge.encoder import EncodedBatch, Encoder, next_batch
from layercast.edge.enhancement_store import EnhancementStore
from layercast.edge.frame_queue import DropOldestQueue
from layercast.edge.link import EdgeIdentity, EdgeLink
from layercast.edge.metrics import EdgeMetrics, edge_registry
from layercast.edge.outbox import Outbox, OutboxStats
from layercast.edge.private_fs import private_dir, private_opener
from layercast.edge.sealing import AesGcmSealer, edge_sealer
from layercast.edge.sources import CapturedFrame, open_source, paced_frames
from layercast.edge.stats import EdgeStats
from layercast.shared.codec.bitstream import is_predicted
from layercast.shared.codec.video import VideoEncoder
from layercast.shared.errors import ConfigError, LayercastError, StorageError
from layercast.shared.prometheus import MetricsServer, metrics_enabled, start_metrics_server

log = logging.getLogger(__name__)

#: Seconds between attempts to open an enhancement store that could not be opened (its disk may come back).
STORE_RETRY_S = 5.0


class EdgeApp:
    """Runs one edge (camera) until stopped. Components are public once ``run`` has started them.

    ``encoder`` (optional) is used as given and not closed, so one Encoder (one worker thread,
    one codec) can serve several cameras in one process; without it the app loads
    ``config.encoder`` itself. ``source`` (optional) replaces ``config.source.spec``.
    """

    def __init__(
        self,
        config: EdgeConfig,
        *,
        encoder: Encoder | None = None,
        source: Iterable[np.ndarray] | None = None,
        stats: EdgeStats | None = None,
    ) -> None:
        self.config = config
        self.stats = stats or EdgeMetrics(config.camera_id)
        self.encoder = encoder
        self._owns_encoder = encoder is None  # an injected encoder may be shared by several cameras
        self._source = source
        #: The source being read while running (its ``health``, when it has one, is in the metrics).
        self.source: Iterable[np.ndarray] | None = source
        self.outbox: Outbox | None = None
        #: The outbox's persistent counters as they were when ``run`` ended.
        self.outbox_stats: OutboxStats | None = None
        self.store: EnhancementStore | None = None
        self._sealer: AesGcmSealer | None = None
        #: Why the configured enhancement store is not open ("" when it is, or when it is disabled).
        self.store_unavailable = ""
        self.link: EdgeLink | None = None
        #: This camera's video state (intra schedule, reference); None when every frame is intra.
        self.video: VideoEncoder | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = False
        self._lock_file: IO[str] | None = None
        self.started = asyncio.Event()
        #: Prometheus metrics of this camera (served on ``config.metrics_port`` while running).
        self.registry = edge_registry(self)
        self.metrics_server: MetricsServer | None = None

    def request_stop(self) -> None:
        """Ask ``run`` to stop gracefully (safe to call before or during ``run``, from the loop thread)."""
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()

    # -- lifecycle ----------------------------------------------------------------------------------

    async def run(self) -> EdgeStats:
        """Run until stopped or a finite source is fully delivered; returns the counters."""
        cfg = self.config
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        self._lock_data_dir()
        try:
            self._open_stores()
            if metrics_enabled(cfg.metrics_port):
                self.metrics_server = await start_metrics_server(
                    self.registry, host=cfg.metrics_listen, port=cfg.metrics_port or 0
                )
            if self.encoder is None:
                log.info("loading codec %r (device %s)", cfg.encoder.model, cfg.encoder.device)
                self.encoder = await asyncio.to_thread(Encoder.load, cfg.encoder)
            source = self._source if self._source is not None else open_source(cfg.source)
            self.video = self.encoder.video(cfg.source.fps, cfg.encoder.intra_seconds)
            self.source = source
            self.link = EdgeLink(cfg.link, self._identity(), self.outbox, self.store, self.stats)  # type: ignore[arg-type]
            self.link.store_unavailable = self.store_unavailable
            self.link.on_intra_request = self._intra_requested
            if cfg.link.insecure:
                log.warning("edge link to %s is NOT encrypted (link.insecure = true)", cfg.link.cloud)
            await self._pipeline(source)
        finally:
            if self.encoder is not None and self._owns_encoder:
                self.encoder.close()
            if self.outbox is not None:
                with contextlib.suppress(StorageError):
                    self.outbox_stats = self.outbox.stats()
                self.outbox.close()
            if self.metrics_server is not None:
                await self.metrics_server.close()
                self.metrics_server = None
            self._unlock_data_dir()
        return self.stats

    async def _pipeline(self, source: Iterable[np.ndarray]) -> None:
        assert self.link is not None and self._stop is not None
        queue: DropOldestQueue[CapturedFrame] = DropOldestQueue(self.config.source.queue_frames)
        link_stop = asyncio.Event()
        capture = asyncio.create_task(self._capture(source, queue), name="edge-capture")
        encode = asyncio.create_task(self._encode(queue), name="edge-encode")
        link = asyncio.create_task(self.link.run(link_stop), name="edge-link")
        sweeper = asyncio.create_task(self._maintain_store(), name="edge-store")
        stop_wait = asyncio.create_task(self._stop.wait())
        self.started.set()
        try:
            # Phase 1: until stopped, or until a finite source has been captured and encoded.
            await asyncio.wait({stop_wait, encode, link}, return_when=asyncio.FIRST_COMPLETED)
            if encode.done() and not self._stop.is_set():
                encode.result()  # surface an encoder crash
                if capture.done() and not capture.cancelled() and capture.exception() is not None:
                    log.error("capture failed: %s; delivering what was captured", capture.exception())
                else:
                    log.info("source finished; waiting until the cloud has acknowledged every frame")
                idle = asyncio.create_task(self.link.wait_idle(math.inf))
                await asyncio.wait({stop_wait, idle, link}, return_when=asyncio.FIRST_COMPLETED)
                idle.cancel()
            # Phase 2: stop capturing, encode what was captured, give the link time to deliver.
            capture.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await capture
            close_source = getattr(source, "close", None)
            if callable(close_source):
                close_source()  # a live camera's reading thread
            queue.close()
            await encode
            if len(self.outbox or ()):
                await self.link.wait_idle(self.config.link.drain_timeout_s)
        finally:
            link_stop.set()
            for task in (capture, encode, sweeper, stop_wait):
                task.cancel()
            await asyncio.gather(capture, encode, sweeper, stop_wait, return_exceptions=True)
            with contextlib.suppress(asyncio.CancelledError):
                await link
            left = len(self.outbox) if self.outbox is not None else 0
            log.info("edge stopped; %d frame(s) left in the outbox for the next start", left)

    # -- stages -------------------------------------------------------------------------------------

    async def _capture(self, source: Iterable[np.ndarray], queue: DropOldestQueue[CapturedFrame]) -> None:
        src = self.config.source
        try:
            async for frame in paced_frames(source, src.fps, src.limit):
                dropped = queue.put(frame)
                self.stats.record_capture(dropped=int(dropped is not None))
                if dropped is not None:
                    await self._count_drop("capture_overflow")
        finally:
            queue.close()

    async def _encode(self, queue: DropOldestQueue[CapturedFrame]) -> None:
        assert self.encoder is not None
        while True:
            batch = await next_batch(queue, self.encoder.batch_max)
            if not batch:
                return
            try:
                result = await self.encoder.encode(batch, self.video)
            except LayercastError as exc:
                log.error("cannot encode %d frame(s): %s", len(batch), exc)
                self.stats.record_encode_error(len(batch), str(exc))
                await self._count_drop("encode_error", len(batch))
                self._intra_requested()  # the reference may not have reached the outbox
                continue
            await self._queue(result)

    def _intra_requested(self) -> None:
        """The next frame is coded intra (the cloud lost the reference, or a frame was lost here)."""
        if self.video is not None:
            self.video.request_intra()

    async def _queue(self, result: EncodedBatch) -> None:
        """Append a batch to the outbox (one transaction), keeping enhancements as it goes."""
        assert self.outbox is not None and self.link is not None
        self.stats.record_encode(len(result.frames), result.seconds, sum(len(e.base) for e in result.encoded))
        for frame, enc in zip(result.frames, result.encoded, strict=True):
            pixels = int(frame.image.shape[0]) * int(frame.image.shape[1])
            self.stats.record_frame_size(pixels, len(enc.base), len(enc.enhancement or b""))
            if is_predicted(enc.base):
                self.stats.frames_predicted += 1
            else:
                self.stats.frames_intra += 1
        items = [
            (frame.capture_time_us, enc.base, self._keeper(enc.enhancement, frame.capture_time_us))
            for frame, enc in zip(result.frames, result.encoded, strict=True)
        ]
        try:
            results = await asyncio.to_thread(self.outbox.append_many, items)
        except StorageError as exc:
            # The outbox cannot persist (disk full?): these frames are lost, but counted, and the
            # camera keeps going so it recovers by itself once there is room again.
            self.stats.record_outbox_error(len(items), str(exc))
            self._intra_requested()  # the next frame's reference never reached the outbox
            if self.stats.outbox_errors == 1 or self.stats.outbox_errors % 100 == 0:
                log.error("outbox failed (%d times so far): %s", self.stats.outbox_errors, exc)
            return
        for res in results:
            self.stats.record_queued(res.stored, len(res.dropped))
            if res.dropped or not res.stored:
                self._intra_requested()  # a frame of the chain is gone: restart it
            if self.store is not None:
                for seq in res.dropped:
                    if seq != res.sequence:
                        await asyncio.to_thread(self.store.delete, seq)
        self.link.notify()

    def _keeper(self, enhancement: bytes | None, capture_time_us: int):  # noqa: ANN202
        """The ``before_commit`` hook that keeps a frame's enhancement; store failures are counted, not raised."""
        store = self.store
        if store is None or enhancement is None:
            return None

        def keep(sequence: int) -> None:
            healthy = self.stats.store_healthy
            try:
                store.put(sequence, enhancement, capture_time_us)
            except StorageError as exc:
                self.stats.record_store_error(str(exc))
                if healthy or self.stats.store_errors % 100 == 0:  # each outage, then every 100th
                    log.error(
                        "enhancement store failed (%d so far; base frames go on, enhancement requests "
                        "for these frames are answered STORE_ERROR): %s",
                        self.stats.store_errors,
                        exc,
                    )
                return
            self.stats.record_stored(len(enhancement))
            if not healthy:
                log.warning("enhancement store works again (frame %d kept)", sequence)

        return keep

    async def _count_drop(self, reason: str, frames: int = 1) -> None:
        assert self.outbox is not None
        try:
            await asyncio.to_thread(self.outbox.record_drops, reason, frames)
        except StorageError as exc:
            log.error("cannot count %d dropped frame(s): %s", frames, exc)

    async def _maintain_store(self) -> None:
        """Evict expired enhancements; until a store that could not be opened opens, retry it."""
        if not self.config.store.enabled:
            return
        period = min(60.0, max(1.0, self.config.store.max_age_s / 10))
        while True:
            if self.store is None:
                await asyncio.sleep(STORE_RETRY_S)
                self._use_store(await asyncio.to_thread(self._try_open_store))
                continue
            await asyncio.sleep(period)
            try:
                await asyncio.to_thread(self.store.sweep)
            except Exception as exc:  # never let housekeeping take the camera down
                log.warning("enhancement store sweep failed: %s", exc)

    # -- setup --------------------------------------------------------------------------------------

    def _open_stores(self) -> None:
        cfg = self.config
        # A bad key is a configuration error: the edge does not start (no silent plaintext).
        self._sealer = edge_sealer(
            cfg.store.encryption,
            cfg.store.encryption_key_file,
            cfg.store.encryption_key,
            cfg.default_key_path,
        )
        if self._sealer is not None:
            log.info("pictures at rest encrypted with AES-256-GCM, key id %s", self._sealer.key_id.hex())
        self.outbox = Outbox(
            cfg.outbox_path,
            max_frames=cfg.outbox.max_frames,
            max_bytes=cfg.outbox.max_bytes,
            synchronous=cfg.outbox.synchronous,
            sealer=self._sealer,
            predicted=is_predicted,
        )
        if cfg.store.enabled:
            self._use_store(self._try_open_store())

    def _try_open_store(self) -> EnhancementStore | StorageError:
        """The enhancement store, or why it cannot be opened (blocking: run in a thread when looping)."""
        cfg = self.config
        try:
            return EnhancementStore(
                cfg.store_dir,
                cfg.camera_id,
                max_bytes=cfg.store.max_bytes,
                max_age_s=cfg.store.max_age_s,
                sealer=self._sealer,
            )
        except StorageError as exc:
            return exc

    def _use_store(self, opened: EnhancementStore | StorageError) -> None:
        """Adopt a freshly opened store. On failure the base stream goes on without one, requests
        are answered STORE_ERROR, and ``_maintain_store`` tries again every ``STORE_RETRY_S``."""
        if isinstance(opened, StorageError):
            first = not self.store_unavailable
            self.store_unavailable = f"the edge cannot open its enhancement store: {opened}"
            self.stats.record_store_error(str(opened))
            if first:
                log.error(
                    "running without an enhancement store, retrying every %gs: %s", STORE_RETRY_S, opened
                )
            return
        self.store, self.store_unavailable = opened, ""
        self.stats.store_healthy = True
        if self.link is not None:  # reopened while running
            self.link.store, self.link.store_unavailable = opened, ""
            log.warning("enhancement store %s opened; enhancement layers are kept again", opened.root)

    def _identity(self) -> EdgeIdentity:
        from layercast import __version__

        assert self.encoder is not None
        caps = []
        if self.config.store.enabled and self.encoder.enhancement_model_id:
            caps.append("enhancement")
        if self.encoder.device == "cuda":
            caps.append("cuda")
        return EdgeIdentity(
            camera_id=self.config.camera_id,
            token=self.config.resolved_token(),
            base_model_id=self.encoder.base_model_id,
            enhancement_model_id=self.encoder.enhancement_model_id,
            temporal_model_id=self.encoder.temporal_model_id if self.video is not None else None,
            capabilities=tuple(caps),
            software_version=__version__,
        )

    def _lock_data_dir(self) -> None:
        """One edge process per data directory (two would send the same outbox twice)."""
        data_dir = private_dir(Path(self.config.data_dir))
        path = data_dir / "edge.lock"
        f = open(path, "a+", opener=private_opener)  # noqa: SIM115 - held open for the life of the process
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no advisory lock
            pass
        except OSError:
            f.close()
            raise ConfigError(f"data_dir {str(data_dir)!r} is in use by another edge process") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock_file = f

    def _unlock_data_dir(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
