"""One log of every replica's results: a Redis Stream.

Each replica appends its results (written to its own store first) in the order its pipeline
stores them, so per camera the log is in sequence order. Every replica serves
Analytics.Subscribe from this log through its :class:`~layercast.cloud.results.hub.Hub`:

* replay: :meth:`RedisResultLog.results_after` pages through the stream (XRANGE), filtered by
  camera and resume points like the store's results table, with the entry id as the cursor;
* live: :meth:`RedisResultLog.tail` reads the stream from the position it had when the replica
  started (XREAD BLOCK from the last id read) and publishes every entry into the hub in stream
  order, which is the hub's replay-then-live guarantee: no gap, no duplicate.

Appending never waits: :meth:`publish` queues, one writer task appends in order (and retries
while Redis is unreachable, up to a bounded backlog). The stream is trimmed to
``cluster.results_maxlen`` entries (approximately, on every append) and to
``retention.max_age_s`` (entry ids are times) by :meth:`trim`.

Every entry carries an HMAC tag over its camera, sequence and result with ``cluster.secret``
(:mod:`.signing`): an entry without a valid tag (written by anything but a replica) is skipped and
counted, never replayed nor published. So is an entry whose sequence is more than
``cluster.max_sequence_jump`` ahead of the last one read for its camera, which would otherwise hide
every later result of that camera from subscribers (they skip sequences they have passed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from google.protobuf.message import DecodeError
from redis.asyncio import Redis

from layercast.cloud.cluster.keys import REDIS_ERRORS, Backoff, unreachable
from layercast.cloud.cluster.signing import Rejections, Signer
from layercast.cloud.results.records import ReplayQuery, StoredResult
from layercast.shared.rpc import common_pb2

log = logging.getLogger(__name__)

_SEQ_BITS = 64
_SEQ_MASK = (1 << _SEQ_BITS) - 1
#: Entries read per XRANGE / XREAD.
READ_COUNT = 512
#: Milliseconds one XREAD waits for new entries before looping.
BLOCK_MS = 1000


def cursor_of(entry_id: bytes | str) -> int:
    """A stream entry id (``<ms>-<n>``) as an int cursor ordered like the ids."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, n = text.partition("-")
    return (int(ms) << _SEQ_BITS) | int(n or 0)


def entry_id_of(cursor: int) -> str:
    return f"{cursor >> _SEQ_BITS}-{cursor & _SEQ_MASK}"


class RedisResultLog:
    """Appends this replica's results to the shared stream and reads everyone's back."""

    def __init__(
        self,
        redis: Redis,
        key: str,
        *,
        maxlen: int,
        signer: Signer,
        max_sequence_jump: int = 1_000_000,
        rejections: Rejections | None = None,
        backlog: int = 100_000,
    ) -> None:
        self._redis = redis
        self.key = key
        self._signer = signer
        self.max_sequence_jump = max_sequence_jump
        self.rejections = rejections if rejections is not None else Rejections()
        #: Live reading: the last sequence published per camera.
        self._live_last: dict[str, int] = {}
        self.maxlen = maxlen
        self._queue: asyncio.Queue[common_pb2.Result] = asyncio.Queue(maxsize=backlog)
        #: Results appended, and results dropped because the backlog was full (Redis down too long).
        self.appended = 0
        self.dropped = 0

    @property
    def backlog(self) -> int:
        """Results queued for the stream, not yet appended."""
        return self._queue.qsize()

    # -- appending (the pipeline's ResultSink) ----------------------------------------------------
    def publish(self, result: common_pb2.Result) -> None:
        """Queue one stored result for the stream; never waits."""
        try:
            self._queue.put_nowait(result)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error(
                    "%d results not shared with the other replicas: Redis has been unreachable for %d "
                    "results (they stay in this replica's store)",
                    self.dropped,
                    self._queue.maxsize,
                )

    async def run_writer(self) -> None:
        """Append queued results in order until cancelled; a failed batch is retried as a whole
        (an entry written twice is skipped by readers: they keep the last sequence per camera)."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < READ_COUNT and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._append(batch)
            for _ in batch:
                self._queue.task_done()

    async def _append(self, batch: list[common_pb2.Result]) -> None:
        backoff = Backoff("append results to Redis")
        while True:
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for r in batch:
                        data = r.SerializeToString()
                        camera, sequence = r.camera_id.encode(), str(r.sequence).encode()
                        fields = {
                            "camera": camera,
                            "sequence": sequence,
                            "result": data,
                            "mac": self._signer.tag("result", camera, sequence, data),
                        }
                        pipe.xadd(self.key, fields, maxlen=self.maxlen, approximate=True)
                    await pipe.execute()
            except REDIS_ERRORS as exc:
                await backoff.failed(exc)
                continue
            self.appended += len(batch)
            return

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every queued result is appended; False when ``timeout_s`` ran out first."""
        try:
            await asyncio.wait_for(self._queue.join(), max(0.0, timeout_s))
        except TimeoutError:
            log.warning(
                "%d results were not shared with the other replicas before shutdown", self._queue.qsize()
            )
            return False
        return True

    # -- reading (the hub's ResultSource) ---------------------------------------------------------
    async def last_id(self) -> str:
        """Id of the newest entry (``0-0`` when the stream is empty): where live reading starts."""
        try:
            newest = await self._redis.xrevrange(self.key, "+", "-", count=1)
        except REDIS_ERRORS as exc:
            raise unreachable(exc) from exc
        return newest[0][0].decode() if newest else "0-0"

    async def results_after(self, query: ReplayQuery) -> list[StoredResult]:
        """Like :meth:`SqliteStore.results_after`: entries after ``cursor`` whose sequence is above
        their camera's resume point, in stream order.

        Returns ``limit`` results unless the stream ends first. A camera's resume point moves with
        every result taken, so an entry appended twice (a retried append) is returned once."""
        wanted = query.cameras
        if wanted is not None and not wanted:
            return []
        points = {cam: int(seq) for cam, seq in query.resume_after.items()}
        last_read: dict[str, int] = {}
        start = f"({entry_id_of(query.cursor)}" if query.cursor else "-"
        out: list[StoredResult] = []
        while len(out) < query.limit:
            try:
                entries = await self._redis.xrange(self.key, min=start, max="+", count=READ_COUNT)
            except REDIS_ERRORS as exc:
                raise unreachable(exc) from exc
            for entry_id, fields in entries:
                start = "(" + entry_id.decode()
                parsed = self._parse(entry_id, fields)
                if parsed is None or not self._plausible(last_read, parsed):
                    continue
                if wanted is not None and parsed.camera_id not in wanted:
                    continue
                if parsed.sequence <= points.get(parsed.camera_id, query.default_after):
                    continue
                points[parsed.camera_id] = parsed.sequence
                out.append(parsed)
                if len(out) == query.limit:
                    break
            if len(entries) < READ_COUNT:
                break
        return out

    async def tail(self, publish: Callable[[common_pb2.Result], None], *, after: str) -> None:
        """Publish every entry appended after ``after`` (an entry id), in order, until cancelled."""
        last = after
        backoff = Backoff(
            "read results from Redis", note="; subscribers wait", recovered="reading results from Redis again"
        )
        while True:
            try:
                answer = await self._redis.xread({self.key: last}, count=READ_COUNT, block=BLOCK_MS)
            except REDIS_ERRORS as exc:
                await backoff.failed(exc)
                continue
            backoff.succeeded()
            for _stream, entries in answer or []:
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    parsed = self._parse(entry_id, fields)
                    if parsed is None or not self._plausible(self._live_last, parsed):
                        continue
                    try:
                        result = common_pb2.Result.FromString(parsed.data)
                    except DecodeError:
                        self.rejections.add("malformed", "an entry of the results stream")
                        continue
                    if (result.camera_id, result.sequence) != (parsed.camera_id, parsed.sequence):
                        self.rejections.add("malformed", "an entry of the results stream")
                        continue
                    publish(result)

    async def trim(self, max_age_s: float) -> int:
        """Drop entries older than ``max_age_s`` (approximately: whole stream nodes); returns how many."""
        oldest_ms = int((time.time() - max_age_s) * 1000)
        try:
            return int(await self._redis.xtrim(self.key, minid=f"{max(oldest_ms, 0)}-0", approximate=True))
        except REDIS_ERRORS as exc:
            raise unreachable(exc) from exc

    def _parse(self, entry_id: bytes, fields: Mapping[bytes, bytes]) -> StoredResult | None:
        """The entry, when its tag is this cluster's; else None (counted)."""
        camera, sequence, data = (fields.get(k, b"") for k in (b"camera", b"sequence", b"result"))
        refused = self._signer.check(fields.get(b"mac"), "result", camera, sequence, data)
        if refused is not None:
            self.rejections.add(refused, "an entry of the results stream")
            return None
        try:
            return StoredResult(cursor_of(entry_id), camera.decode(), int(sequence), data)
        except (ValueError, UnicodeDecodeError):
            self.rejections.add("malformed", "an entry of the results stream")
            return None

    def _plausible(self, last: dict[str, int], entry: StoredResult) -> bool:
        """False (counted) when ``entry`` jumps more than ``max_sequence_jump`` past the camera's
        last sequence in ``last``; else records it there."""
        previous = last.get(entry.camera_id)
        if previous is not None and entry.sequence > previous + self.max_sequence_jump:
            self.rejections.add("sequence_jump", f"a result of camera {entry.camera_id[:64]!r}")
            return False
        if entry.sequence < 1 or entry.sequence >= 1 << 63:
            self.rejections.add("sequence_jump", f"a result of camera {entry.camera_id[:64]!r}")
            return False
        last[entry.camera_id] = max(entry.sequence, previous or 0)
        return True
