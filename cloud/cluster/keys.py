"""Names of the Redis keys the replicas share, and how a Redis failure is reported."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from redis.exceptions import RedisError

from layercast.shared.errors import ClusterUnavailable

log = logging.getLogger("layercast.cloud.cluster")

#: What a Redis call raises when Redis cannot be reached or answers with an error.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)


class Backoff:
    """Pacing of a loop that retries a Redis call: waits 0.1 s doubling to 2 s between failures;
    the first failure of a run is a warning ``cannot <what> (retrying<note>)``, the recovery (when
    ``recovered`` is given) an info line."""

    def __init__(self, what: str, *, note: str = "", recovered: str = "") -> None:
        self._what, self._note, self._recovered = what, note, recovered
        self.delay = 0.0

    async def failed(self, exc: BaseException) -> None:
        if self.delay == 0.0:
            log.warning("cannot %s (retrying%s): %s", self._what, self._note, exc)
        self.delay = min(max(self.delay * 2, 0.1), 2.0)
        await asyncio.sleep(self.delay)

    def succeeded(self) -> None:
        if self.delay and self._recovered:
            log.info("%s", self._recovered)
        self.delay = 0.0


def unreachable(exc: BaseException) -> ClusterUnavailable:
    """The typed error (UNAVAILABLE) for a failed Redis call (the URL is never quoted: it may hold a password)."""
    return ClusterUnavailable(f"the store shared by the cloud replicas (Redis) cannot be reached: {exc}")


@dataclass(frozen=True)
class Keys:
    """Every key under one prefix (``cluster.key_prefix``), so deployments may share a Redis."""

    prefix: str

    def owner(self, camera_id: str) -> str:
        """String: the replica holding the camera's stream (a lease with a TTL)."""
        return f"{self.prefix}:owner:{camera_id}"

    def stored_at(self, camera_id: str) -> str:
        """Set: replicas whose store has frames of the camera."""
        return f"{self.prefix}:stored-at:{camera_id}"

    def replica(self, replica_id: str) -> str:
        """String: the process currently running as ``replica_id`` (a lease with a TTL)."""
        return f"{self.prefix}:replica:{replica_id}"

    @property
    def replicas(self) -> str:
        """Sorted set: replica id → wall-clock time (s) its lease runs out."""
        return f"{self.prefix}:replicas"

    def inbox(self, replica_id: str) -> str:
        """List: requests for the replica and answers to its own requests."""
        return f"{self.prefix}:inbox:{replica_id}"

    @property
    def results(self) -> str:
        """Stream: every replica's results, in the order they were stored."""
        return f"{self.prefix}:results"
