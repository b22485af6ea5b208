"""This replica's membership of the cluster: one Redis client, its leases, its calls, the shared results.

Life cycle (driven by :class:`~layercast.cloud.server.CloudServer`)::

    cluster = RedisCluster(config)             # nothing contacted yet
    ... build the hub on cluster.results, the viewer on cluster.enhancements(...), the Operator
        servicer on cluster.operator_api(...), the EdgeLink servicer with presence=cluster
    await cluster.start(registry=..., hub=..., store=..., pipeline=...)  # before SERVING; needs Redis
    ...
    await cluster.flush(timeout)               # after the batcher drained: results reach the stream
    await cluster.close()                      # leases given up, replica removed

A camera that moves (its stream attaches here while another replica holds it) is *handed over*
before it is welcomed: the other replica ends its stream there and answers once every frame the
camera sent it has its result in the shared stream, so results stay in order per camera.

A replica is *live* while its lease (``<prefix>:replica:<id>``, refreshed every third of
``ownership_ttl_s``) stands; a second process started with the same ``replica_id`` waits for that
lease to run out (a crash-restart) and then refuses to start if it is still held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from layercast.cloud.cluster.keys import REDIS_ERRORS, Keys, unreachable
from layercast.cloud.cluster.operator import (
    ClusterEnhancements,
    ClusterOperator,
    current_caller,
    serve_operator,
)
from layercast.cloud.cluster.ownership import KEEP, RELEASE, Ownership
from layercast.cloud.cluster.results import RedisResultLog
from layercast.cloud.cluster.rpc import ReplicaRpc
from layercast.cloud.cluster.signing import Caller, Rejections, Signer
from layercast.cloud.config import CloudConfig
from layercast.cloud.ingest.pipeline import FramePipeline
from layercast.cloud.results.hub import Hub
from layercast.cloud.results.store import Store
from layercast.cloud.rpc.servicers.operator import LocalOperator
from layercast.cloud.security.audit import AuditLog
from layercast.cloud.sessions import CameraSession, EnhancementRouter, SessionRegistry
from layercast.shared.errors import ClusterUnavailable, ConfigError, LayercastError

log = logging.getLogger(__name__)

#: The call a replica makes to the one whose camera it just took.
HANDOVER = "handover"
#: Longest wait for Redis while a camera's stream attaches (the lease loop retries later).
CLAIM_TIMEOUT_S = 5.0
#: Longest wait for a handover: the camera waits for its Welcome meanwhile (edges give up after 10 s).
HANDOVER_TIMEOUT_S = 5.0


def resolve_replica_id(configured: str | None, data_dir: Path) -> str:
    """``configured``, else the id kept in ``<data_dir>/replica-id``, else a new ``<host>-<random>`` kept there.

    Kept with the store because what another replica needs from this one is the store's frames."""
    if configured:
        return configured
    path = data_dir / "replica-id"
    with contextlib.suppress(OSError):
        kept = path.read_text().strip()
        if re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", kept):
            return kept
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:100] or "cloud"
    replica_id = f"{host}-{secrets.token_hex(3)}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(replica_id + "\n")
    except OSError as exc:
        log.warning("cannot keep replica id %s in %s (a restart gets a new one): %s", replica_id, path, exc)
    return replica_id


@dataclass(frozen=True)
class ClusterStats:
    """What this replica's membership looks like, for /metrics (read without contacting Redis)."""

    redis_up: bool  # the last lease renewal reached Redis
    cameras_held: int  # camera leases this replica holds
    cameras_superseded: int  # streams ended here because the camera's lease went to another replica
    forwarded_calls: int  # Operator calls (and handovers) sent to other replicas
    served_calls: int  # calls of other replicas served here
    results_appended: int  # results written to the shared stream
    results_backlog: int  # results waiting to be written (Redis slow or down)
    results_dropped: int  # results not shared: the backlog was full (they stay in the local store)
    rejected: dict[str, int]  # messages from Redis refused, by reason (see .signing.REASONS)


class RedisCluster:
    """Scale-out through Redis; implements :class:`~layercast.cloud.sessions.Presence`."""

    def __init__(self, config: CloudConfig) -> None:
        c = config.cluster
        self.replica_id = resolve_replica_id(c.replica_id, config.data_dir)
        self.ttl_s = c.ownership_ttl_s
        self.forward_timeout_s = c.forward_timeout_s
        self.keys = Keys(c.key_prefix)
        self.redis = Redis.from_url(
            c.redis_url,
            socket_timeout=5.0,
            socket_connect_timeout=5.0,
            health_check_interval=30,
            client_name=f"layercast-cloud-{self.replica_id}",
            **c.redis_connection_options(),
        )
        self.roles = config.operator_roles()
        signer, self.rejections = Signer(c.secret_bytes()), Rejections()
        self.ownership = Ownership(self.redis, self.keys, self.replica_id, ttl_s=c.ownership_ttl_s)
        self.rpc = ReplicaRpc(
            self.redis,
            self.keys,
            self.replica_id,
            inbox_ttl_s=max(60.0, 4 * c.forward_timeout_s),
            signer=signer,
            rejections=self.rejections,
        )
        self.results = RedisResultLog(
            self.redis,
            self.keys.results,
            maxlen=c.results_maxlen,
            signer=signer,
            max_sequence_jump=c.max_sequence_jump,
            rejections=self.rejections,
        )
        self._token = secrets.token_hex(8)  # which process holds the replica lease
        self._keep = self.redis.register_script(KEEP)
        self._release = self.redis.register_script(RELEASE)
        self._registry = SessionRegistry()  # replaced by start()
        self._pipeline: FramePipeline | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._held: set[str] = set()
        self._releases: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._redis_down = False
        self._superseded = 0

    # -- wiring -----------------------------------------------------------------------------------
    def enhancements(self, router: EnhancementRouter, registry: SessionRegistry) -> ClusterEnhancements:
        """Where the viewer gets enhancement layers: this replica's streams, else the camera's replica."""
        return ClusterEnhancements(
            router,
            registry,
            self.ownership,
            self.rpc,
            forward_timeout_s=self.forward_timeout_s,
            caller=self.caller,
        )

    def operator_api(
        self, local: LocalOperator, router: EnhancementRouter, *, audit: AuditLog | None = None
    ) -> ClusterOperator:
        """The Operator API over every replica; also serves ``local`` to the other replicas
        (authorised by this replica's roles, Enhance recorded in ``audit``)."""
        serve_operator(self.rpc, local, router, roles=self.roles, audit=audit)
        return ClusterOperator(
            local,
            self.ownership,
            self.rpc,
            self.live_replicas,
            forward_timeout_s=self.forward_timeout_s,
            caller=self.caller,
        )

    def caller(self) -> Caller:
        """Who the call being handled is for (signed into every call forwarded for it)."""
        return current_caller(self.roles)

    # -- life cycle -------------------------------------------------------------------------------
    async def start(
        self, *, registry: SessionRegistry, hub: Hub, store: Store, pipeline: FramePipeline
    ) -> None:
        """Join: take the replica lease, record the cameras this store has frames of, start serving
        the other replicas, appending results and reading everyone's into ``hub``."""
        self._registry, self._pipeline = registry, pipeline
        try:
            await self.redis.ping()
        except REDIS_ERRORS as exc:
            raise ClusterUnavailable(
                f"cluster.backend = redis, but Redis (cluster.redis_url) cannot be reached: {exc}"
            ) from exc
        await self._join()
        await self.ownership.record_stored([c.camera_id for c in await store.list_cameras()])
        tail_from = await self.results.last_id()  # live reading starts here, before any subscriber
        self.rpc.handle(HANDOVER, self._hand_over)
        self._tasks += [
            asyncio.create_task(self.rpc.run(), name="cluster-inbox"),
            asyncio.create_task(self.results.run_writer(), name="cluster-results-writer"),
            asyncio.create_task(self.results.tail(hub.publish, after=tail_from), name="cluster-results-tail"),
            asyncio.create_task(self._lease_loop(), name="cluster-leases"),
        ]
        log.info("joined the cluster as replica %s (results stream from %s)", self.replica_id, tail_from)

    async def flush(self, timeout_s: float) -> bool:
        """Wait until this replica's results are in the shared stream."""
        return await self.results.flush(timeout_s)

    async def close(self) -> None:
        """Leave: stop the loops, give up every camera lease and the replica lease, close Redis."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.rpc.close()
        await asyncio.gather(*self._releases, return_exceptions=True)
        try:
            for cam in sorted(self._held):
                await self.ownership.release(cam)
            await self._release(keys=[self.keys.replica(self.replica_id)], args=[self._token])
            await self.redis.zrem(self.keys.replicas, self.replica_id)
        except (ClusterUnavailable, *REDIS_ERRORS) as exc:
            log.warning(
                "left the cluster without giving up its leases (they run out in %g s): %s", self.ttl_s, exc
            )
        self._held.clear()
        await self.redis.aclose()

    def stats(self) -> ClusterStats:
        return ClusterStats(
            redis_up=not self._redis_down,
            cameras_held=len(self._held),
            cameras_superseded=self._superseded,
            forwarded_calls=self.rpc.calls,
            served_calls=self.rpc.served,
            results_appended=self.results.appended,
            results_backlog=self.results.backlog,
            results_dropped=self.results.dropped,
            rejected=dict(self.rejections.counts),
        )

    async def live_replicas(self) -> set[str]:
        """Replicas whose lease stands (this one included)."""
        try:
            members = await self.redis.zrangebyscore(self.keys.replicas, time.time(), "+inf")
        except REDIS_ERRORS as exc:
            raise unreachable(exc) from exc
        return {m.decode() for m in members} | {self.replica_id}

    # -- presence (called by the EdgeLink servicer) -------------------------------------------------
    async def attached(self, session: CameraSession) -> None:
        cam = session.camera_id
        async with self._lock(cam):
            if self._registry.get(cam) is not session or session.closed:
                return
            try:
                previous = await asyncio.wait_for(self.ownership.claim(cam), CLAIM_TIMEOUT_S)
            except (ClusterUnavailable, TimeoutError) as exc:
                log.warning(
                    "camera %s streams here, but the other replicas cannot be told yet (retried every %g s): %s",
                    cam,
                    self.ttl_s / 3,
                    exc or "Redis did not answer",
                )
                return
            self._held.add(cam)
        if previous is not None and previous != self.replica_id:
            await self._take_over(cam, previous)

    async def _take_over(self, cam: str, previous: str) -> None:
        """Ask ``previous`` to hand ``cam`` over (bounded: a replica that died cannot)."""
        try:
            if previous in await self.live_replicas():
                wait = min(HANDOVER_TIMEOUT_S, self.forward_timeout_s)
                await self.rpc.call(previous, HANDOVER, cam.encode(), timeout_s=wait)
            log.info("camera %s moved here from replica %s", cam, previous)
        except LayercastError as exc:
            log.warning(
                "camera %s moved here from replica %s, which did not hand it over (%s): results it still "
                "makes for the camera may reach live subscribers after this replica's and be skipped by them "
                "(they stay in its store)",
                cam,
                previous,
                exc,
            )

    def detached(self, session: CameraSession) -> None:
        task = asyncio.create_task(
            self._released(session.camera_id), name=f"cluster-release-{session.camera_id}"
        )
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _released(self, cam: str) -> None:
        async with self._lock(cam):
            if self._registry.get(cam) is not None:  # a newer stream of the camera is here
                return
            self._held.discard(cam)
            try:
                await self.ownership.release(cam)
            except ClusterUnavailable as exc:
                log.warning(
                    "camera %s left, but its lease stays until it runs out (%g s): %s", cam, self.ttl_s, exc
                )

    async def _hand_over(self, payload: bytes, timeout_s: float, _caller: Caller | None) -> bytes:
        """Another replica took a camera: end its stream here, and answer once every frame the
        camera sent here has its result in the shared stream."""
        cam = payload.decode(errors="replace")
        holder = await self.ownership.owner(cam)
        if holder == self.replica_id:  # it came back here meanwhile: nothing to hand over
            return b""
        session = self._registry.get(cam)
        if session is not None:
            self._superseded += 1
            session.end(
                "ABORTED", f"superseded by a newer stream from the same camera on cloud replica {holder!r}"
            )
        if self._pipeline is not None:
            await self._pipeline.settled(cam)
        await self.results.flush(timeout_s)
        return b""

    def _lock(self, cam: str) -> asyncio.Lock:
        return self._locks.setdefault(cam, asyncio.Lock())

    # -- leases -----------------------------------------------------------------------------------
    async def _join(self) -> None:
        """Take this replica id's lease; wait out a crashed predecessor's, refuse a live namesake's."""
        key, ttl_ms = self.keys.replica(self.replica_id), int(self.ttl_s * 1000)
        deadline = time.monotonic() + self.ttl_s + 1.0
        waited = False
        while True:
            try:
                taken = await self.redis.set(key, self._token, nx=True, px=ttl_ms)
            except REDIS_ERRORS as exc:
                raise unreachable(exc) from exc
            if taken:
                break
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"cluster.replica_id {self.replica_id!r} is in use by another running cloud replica: "
                    "give each replica its own id (or leave it unset)"
                )
            if not waited:
                log.info("waiting for the previous lease on replica id %s to run out", self.replica_id)
                waited = True
            await asyncio.sleep(0.25)
        await self._announce()

    async def _announce(self) -> None:
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.keys.replicas, {self.replica_id: now + self.ttl_s})
            pipe.zremrangebyscore(self.keys.replicas, "-inf", now - self.ttl_s)
            await pipe.execute()

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                await self._renew()
            except (ClusterUnavailable, *REDIS_ERRORS) as exc:
                if not self._redis_down:
                    log.warning("cannot renew this replica's leases in Redis (retrying): %s", exc)
                self._redis_down = True
                continue
            if self._redis_down:
                log.info("leases in Redis renewed again")
                self._redis_down = False

    async def _renew(self) -> None:
        holder = await self._keep(
            keys=[self.keys.replica(self.replica_id)], args=[self._token, int(self.ttl_s * 1000)]
        )
        if isinstance(holder, bytes):
            log.error(
                "another process runs as cloud replica %s: give each replica its own cluster.replica_id",
                self.replica_id,
            )
        await self._announce()
        sessions = [s for s in self._registry.sessions() if not s.closed]
        taken = await self.ownership.keep(s.camera_id for s in sessions)
        for session in sessions:
            holder_id = taken.get(session.camera_id)
            if holder_id is not None:
                self._held.discard(session.camera_id)
                self._superseded += 1
                session.end(
                    "ABORTED",
                    f"superseded by a newer stream from the same camera on cloud replica {holder_id!r}",
                )
            else:
                self._held.add(session.camera_id)
