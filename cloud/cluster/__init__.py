"""Scale-out: several cloud replicas sharing, through Redis, what must be shared.

Embedded mode (``[cluster] backend = "none"``, the default) uses none of this and needs no Redis:
one process holds every camera stream, its SQLite store replays results, its hub fans them out.

With ``backend = "redis"`` each replica still keeps its own SQLite store (the frames it received)
and its own camera streams, and shares:

* ownership (:mod:`.ownership`): camera → replica holding its EdgeLink stream, a lease per camera;
* forwarding (:mod:`.rpc`, :mod:`.operator`): an Operator call for a camera or a frame this replica
  does not hold goes to the replica that does, errors keep their gRPC status across the hop;
* results (:mod:`.results`): one Redis Stream every replica appends its results to and serves
  Analytics.Subscribe from, so a subscriber on any replica sees every camera exactly once, in order.

:class:`~.node.RedisCluster` wires the three; the server builds it with :func:`open_cluster`.
See docs/scale-out.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from layercast.cloud.cluster.node import RedisCluster
    from layercast.cloud.config import CloudConfig


def open_cluster(config: CloudConfig) -> RedisCluster | None:
    """The cluster this server joins, or None in embedded mode (then redis is not even imported)."""
    if config.cluster.backend == "none":
        return None
    from layercast.cloud.cluster.node import RedisCluster

    return RedisCluster(config)
