"""Who is calling: cameras (their certificate or their token) and operators (a bearer token).

A camera's identity comes from its credentials, never from what it claims: the Hello's
``camera_id`` must be the camera of the client certificate (mutual TLS, see
:mod:`layercast.cloud.security.tls`) and of the token when one is sent. A camera presenting another
camera's credentials is refused with PERMISSION_DENIED; unknown or missing credentials with
UNAUTHENTICATED. Every refusal is counted by reason (:class:`AuthRefusals`, exported as
``layercast_cloud_auth_refusals_total{reason}``). Tokens are never logged.

Operator tokens travel as ``authorization: Bearer <token>`` metadata and are checked by
:class:`~layercast.cloud.security.operator_auth.OperatorAuthInterceptor`.
"""

from __future__ import annotations

import logging
from typing import Any

from layercast.cloud.security.credentials import CAMERA_ID_RE, TokenTable
from layercast.cloud.security.tls import peer_identity
from layercast.shared.errors import PermissionDenied, Unauthenticated
from layercast.shared.rpc import edge_pb2

log = logging.getLogger(__name__)

#: Why a caller was refused (the ``reason`` label; a fixed list).
REFUSAL_REASONS = (
    "no_hello",  # UNAUTHENTICATED: the stream did not start with a Hello in time
    "no_client_cert",  # UNAUTHENTICATED: camera certificates are required and none was presented
    "bad_credentials",  # UNAUTHENTICATED: unknown camera, wrong or missing token, malformed id
    "cert_not_camera",  # PERMISSION_DENIED: a certificate naming no camera opened a camera stream
    "cert_other_camera",  # PERMISSION_DENIED: certificate of camera X, Hello claims camera Y
    "token_other_camera",  # PERMISSION_DENIED: token of camera X, Hello (or certificate) says Y
    "answer_other_camera",  # PERMISSION_DENIED: answered a request that was sent to another camera
    "camera_cert_operator_api",  # PERMISSION_DENIED: a camera's certificate on Operator/Analytics
    "operator_token",  # UNAUTHENTICATED: a wrong operator token
    "no_operator_identity",  # UNAUTHENTICATED: Operator/Analytics call with no token and no operator cert
    "revoked",  # UNAUTHENTICATED: a client certificate on the revocation list (tls.crl)
    "operator_role",  # PERMISSION_DENIED: a viewer's token called a method for enhancers (Enhance)
)


class AuthRefusals:
    """Refused callers since start, by reason (read by the metrics at scrape time)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)

    def count(self, reason: str) -> None:
        if reason not in self.counts:
            raise ValueError(f"unknown refusal reason {reason!r}")
        self.counts[reason] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class CameraAuthenticator:
    """Decides which camera a stream speaks for, from its certificate and its Hello's token."""

    def __init__(
        self,
        table: TokenTable,
        *,
        allow_any: bool = False,
        require_cert: bool = False,
        refusals: AuthRefusals | None = None,
    ) -> None:
        self.table = table
        self.allow_any = allow_any
        self.require_cert = require_cert
        self.refusals = refusals if refusals is not None else AuthRefusals()
        if allow_any:
            log.warning("auth.allow_any_camera is on: any camera id is accepted without a valid token")

    @property
    def refused(self) -> int:
        """Camera refusals since start (every reason)."""
        return self.refusals.total

    def refuse(self, reason: str, error: Exception, claimed: str) -> Exception:
        """Count and log a refusal; returns ``error`` for the caller to raise."""
        self.refusals.count(reason)
        log.info("refused a camera stream claiming %r: %s", claimed[:64], reason)
        return error

    def authenticate(self, hello: edge_pb2.Hello, context: Any = None) -> str:
        """The camera id the stream speaks for; raises Unauthenticated or PermissionDenied (never
        saying which camera a presented token belongs to)."""
        claimed = hello.camera_id
        peer = peer_identity(context) if context is not None else None
        cert_camera = peer.camera_id if peer is not None else None
        if cert_camera is not None:
            if claimed != cert_camera:
                raise self.refuse(
                    "cert_other_camera",
                    PermissionDenied(
                        f"the client certificate is camera {cert_camera!r}'s; it cannot speak for "
                        f"camera {claimed[:64]!r}"
                    ),
                    claimed,
                )
            if hello.token:  # every credential presented must name the same camera
                self._check_token(claimed, hello.token)
            return claimed
        if self.require_cert:
            if peer is None or not peer.has_certificate:
                raise self.refuse(
                    "no_client_cert",
                    Unauthenticated("a camera must present its client certificate (mutual TLS)"),
                    claimed,
                )
            raise self.refuse(
                "cert_not_camera",
                PermissionDenied("the client certificate does not name a camera (layercast:camera:<id>)"),
                claimed,
            )
        self._check_token(claimed, hello.token)
        return claimed

    def _check_token(self, claimed: str, token: str) -> None:
        """``token`` must be ``claimed``'s; with ``allow_any`` it may be no camera's at all."""
        owner = self.table.find(token) if token else None
        if owner is not None and owner != claimed:
            raise self.refuse(
                "token_other_camera",
                PermissionDenied(f"these credentials belong to another camera, not to {claimed[:64]!r}"),
                claimed,
            )
        if owner == claimed or (self.allow_any and CAMERA_ID_RE.match(claimed)):
            return
        raise self.refuse("bad_credentials", Unauthenticated("unknown camera or wrong credentials"), claimed)


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` metadata entry, if any."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None
