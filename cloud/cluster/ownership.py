"""Which replica holds which camera's EdgeLink stream: one lease per camera in Redis.

A replica *claims* a camera when the camera's stream attaches (the newest stream wins, as within
one process), *keeps* the lease while the stream lives (refreshed every third of its TTL), and
*releases* it when the stream ends, only if it still holds it: the camera may already stream to
another replica. Each step is one Lua script, so it is atomic. A replica that dies stops holding
its cameras when their leases run out.

The same claim records that this replica's store has frames of the camera (a set per camera),
which is how a frame stored by a replica the camera has since left is found again.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis

from layercast.cloud.cluster.keys import REDIS_ERRORS, Keys, unreachable

#: Take the lease (newest stream wins); record that this replica stores frames of the camera.
#: Returns the previous holder (nil when none).
_CLAIM = """
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return previous
"""

#: Refresh a lease held by ARGV[1] (1), take it again when it ran out (2; and record the optional
#: set KEYS[2], as a claim does), or return the holder that took it meanwhile.
KEEP = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if KEYS[2] then redis.call('SADD', KEYS[2], ARGV[1]) end
  return 2
end
return holder
"""

#: Delete KEYS[1] only if its value is ARGV[1] (compare-and-delete).
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Ownership:
    """Camera leases of one replica (``replica_id``)."""

    def __init__(self, redis: Redis, keys: Keys, replica_id: str, *, ttl_s: float) -> None:
        self._redis = redis
        self._keys = keys
        self.replica_id = replica_id
        self.ttl_ms = int(ttl_s * 1000)
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(RELEASE)
        self._keep = redis.register_script(KEEP)

    async def claim(self, camera_id: str) -> str | None:
        """Hold ``camera_id`` from now on; returns the replica that held it before (None if none)."""
        try:
            previous = await self._claim(
                keys=[self._keys.owner(camera_id), self._keys.stored_at(camera_id)],
                args=[self.replica_id, self.ttl_ms],
            )
        except REDIS_ERRORS as exc:
            raise unreachable(exc) from exc
        return previous.decode() if previous is not None else None

    async def release(self, camera_id: str) -> bool:
        """Stop holding ``camera_id`` if this replica still does; True when it did."""
        try:
            return bool(await self._release(keys=[self._keys.owner(camera_id)], args=[self.replica_id]))
        except REDIS_ERRORS as exc:
            raise unreachable(exc) from exc

    async def keep(self, camera_ids: Iterable[str]) -> dict[str, str | None]:
        """Refresh the leases of ``camera_ids``: camera → None when this replica holds it (again),
        or the replica that took it meanwhile."""
        cams = list(camera_ids)
        if not cams:
            return {}
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for cam in cams:
                    await self._keep(
                        keys=[self._keys.owner(cam), self._keys.stored_at(cam)],
                        args=[self.replica_id, self.ttl_ms],
                        client=pipe,
                    )
                answers = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise unreachable(exc) from exc
        return {
            cam: a.decode() if isinstance(a, bytes) else None for cam, a in zip(cams, answers, strict=True)
        }

    async def owners(self, camera_ids: Iterable[str]) -> dict[str, str | None]:
        """Camera → replica holding its stream now (None: no replica, the camera is offline)."""
        cams = list(camera_ids)
        if not cams:
            return {}
        try:
            values = await self._redis.mget([self._keys.owner(c) for c in cams])
        except REDIS_ERRORS as exc:
            raise unreachable(exc) from exc
        return {cam: v.decode() if v is not None else None for cam, v in zip(cams, values, strict=True)}

    async def owner(self, camera_id: str) -> str | None:
        return (await self.owners([camera_id]))[camera_id]

    async def stored_at(self, camera_id: str) -> set[str]:
        """Replicas that have stored frames of ``camera_id`` (some may be gone)."""
        try:
            return {m.decode() for m in await self._redis.smembers(self._keys.stored_at(camera_id))}
        except REDIS_ERRORS as exc:
            raise unreachable(exc) from exc

    async def record_stored(self, camera_ids: Iterable[str]) -> None:
        """Record that this replica's store has frames of ``camera_ids`` (at start-up: its store)."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for cam in camera_ids:
                    pipe.sadd(self._keys.stored_at(cam), self.replica_id)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise unreachable(exc) from exc

    async def forget_stored(self, camera_id: str, replica_ids: Iterable[str]) -> None:
        """Drop replicas that are gone from the camera's set (their stores went with them)."""
        gone = list(replica_ids)
        if gone:
            try:
                await self._redis.srem(self._keys.stored_at(camera_id), *gone)
            except REDIS_ERRORS as exc:
                raise unreachable(exc) from exc
