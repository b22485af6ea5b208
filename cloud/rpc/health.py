"""The standard health service (``grpc.health.v1``), saying which name it does not know.

grpc's implementation answers a Check for an unknown service name with NOT_FOUND and no message;
every refusal of this server says what is wrong, so this one names the service and the known ones.
"""

from __future__ import annotations

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2

from layercast.cloud.rpc.status import bounded


class HealthServicer(health.aio.HealthServicer):
    def __init__(self) -> None:
        super().__init__()
        self._known: set[str] = set()

    async def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        self._known.add(service)
        await super().set(service, status)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in self._known:
            known = ", ".join(repr(s) for s in sorted(self._known))
            await context.abort(
                grpc.StatusCode.NOT_FOUND, bounded(f"unknown service {request.service!r} (known: {known})")
            )
        return await super().Check(request, context)
