"""Every gRPC Operator.Enhance call, allowed or refused, written to the audit log.

An interceptor rather than code in the servicer, so calls refused before the servicer runs (no
token, a viewer's token, the rate limit, a server still starting) are recorded too. Install it
outermost after the request-id interceptor. A line::

    {"time": "...", "ts": ..., "api": "grpc", "user": "web:alice", "operator": "web",
     "on_behalf_of": "alice", "role": "enhancer", "camera_id": "door-1", "sequence": 42,
     "outcome": "ok", "grpc_status": "OK", "request_id": "...", "peer": "ipv4:10.0.0.7",
     "elapsed_s": 0.41, "enhancement_bytes": 5123, "base_bytes": 2101, "cached": false}

``user`` is the operator's name (from its token or operator certificate), followed by the person it acted for when an
enhancer token says so (``x-layercast-on-behalf-of``, see :mod:`layercast.cloud.security.roles`);
``anonymous`` for a caller without credentials under ``auth.allow_anonymous_operators``, ``-`` when
the caller had no identity or a wrong token.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any

import grpc
from grpc import aio

from layercast.cloud.rpc.interceptors import _code_of, operator_name, request_id
from layercast.cloud.security.audit import AuditLog
from layercast.cloud.security.ratelimit import peer_host
from layercast.cloud.security.roles import ANONYMOUS, OperatorRoles, on_behalf_of

log = logging.getLogger(__name__)

ENHANCE_METHOD = "/layercast.v1.Operator/Enhance"

#: The person an Enhance call claims to act for (``x-layercast-on-behalf-of``; "" otherwise), for the
#: call's other records (a call forwarded to another replica names it too; honoured for enhancers only).
acting_for: contextvars.ContextVar[str] = contextvars.ContextVar("layercast_acting_for", default="")

#: gRPC status → ``outcome`` of the audit line.
OUTCOMES = {
    "OK": "ok",
    "PERMISSION_DENIED": "refused",
    "UNAUTHENTICATED": "unauthenticated",
    "NOT_FOUND": "not_found",
    "UNAVAILABLE": "unavailable",
    "DEADLINE_EXCEEDED": "timeout",
    "CANCELLED": "cancelled",
    "INVALID_ARGUMENT": "bad_request",
}
_MAX_FIELD = 128


def outcome_of(code: str, details: str) -> str:
    if code == "RESOURCE_EXHAUSTED":
        return "rate_limited" if details.startswith("rate limit") else "refused"
    return OUTCOMES.get(code, "error")


class EnhanceAuditInterceptor(aio.ServerInterceptor):
    """Writes one audit line per Operator.Enhance call (see the module docstring)."""

    def __init__(self, audit: AuditLog, roles: OperatorRoles, *, anonymous_allowed: bool = False) -> None:
        self.audit = audit
        self.roles = roles
        self._anonymous_allowed = anonymous_allowed
        #: Lines that could not be written (the call itself is not affected).
        self.write_failures = 0

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or details.method != ENHANCE_METHOD or not handler.unary_unary:
            return handler
        fn = handler.unary_unary
        claimed = on_behalf_of(details.invocation_metadata)

        async def audited(request: Any, context: aio.ServicerContext) -> Any:
            t0 = time.perf_counter()
            response: Any = None
            error: BaseException | None = None
            # The operator is named further in (by the identity check): who reads this keeps the
            # claim only for an enhancer (see ``current_caller``).
            acting_for.set(claimed)
            try:
                response = await fn(request, context)
                return response
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._record(request, context, claimed, response, error, time.perf_counter() - t0)

        return grpc.unary_unary_rpc_method_handler(
            audited,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _record(
        self,
        request: Any,
        context: aio.ServicerContext,
        claimed: str,
        response: Any,
        error: BaseException | None,
        elapsed: float,
    ) -> None:
        code = _code_of(context, error)
        try:
            details = str(context.details() or "") if code != "OK" else ""
        except Exception:  # not every context implementation keeps its details
            details = ""
        name = operator_name.get()
        if code == "UNAUTHENTICATED" and not name:
            user, role = "-", ""
        else:
            user = name or (ANONYMOUS if self._anonymous_allowed else "-")
            role = self.roles.role_of(name)
        for_whom = claimed if role == "enhancer" else ""  # only enhancers may speak for someone
        frame = getattr(request, "frame", None)
        record: dict[str, Any] = {
            "api": "grpc",
            "user": f"{user}:{for_whom}" if for_whom else user,
            "operator": name,
            "on_behalf_of": for_whom,
            "role": role,
            "camera_id": str(getattr(frame, "camera_id", ""))[:_MAX_FIELD],
            "sequence": int(getattr(frame, "sequence", 0)),
            "outcome": outcome_of(code, details),
            "grpc_status": code,
            "request_id": request_id.get(),
            "peer": peer_host(context),
            "elapsed_s": round(elapsed, 4),
        }
        if details:
            record["details"] = details[:300]
        if response is not None and code == "OK":
            record.update(
                enhancement_bytes=response.enhancement_bytes,
                base_bytes=response.base_bytes,
                cached=response.cached,
                fetch_seconds=round(response.fetch_seconds, 4),
            )
        try:
            self.audit.write(**record)
        except OSError as exc:
            self.write_failures += 1
            log.error("audit log %s: cannot write a line: %s", self.audit.path, exc.strerror or exc)
