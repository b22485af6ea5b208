"""Who is calling: cameras (from their Hello) and operators (from a bearer token).

Camera identity is per stream: the Hello carries the camera id and its token,
checked here in constant time. When mutual TLS arrives (issue 7) the client
certificate's identity is checked against the claimed id in the same place.
Operator tokens travel as ``authorization: Bearer <token>`` metadata and are
checked by :class:`~layercast.cloud.interceptors.TokenInterceptor`.
"""

from __future__ import annotations

import logging

from grpc import aio

from layercast.cloud.credentials import CAMERA_ID_RE, TokenTable
from layercast.shared.errors import Unauthenticated
from layercast.shared.rpc import edge_pb2

log = logging.getLogger(__name__)


class CameraAuthenticator:
    """Checks a Hello's camera id and token against the configured hashes."""

    def __init__(self, table: TokenTable, *, allow_any: bool = False) -> None:
        self.table = table
        self.allow_any = allow_any
        #: Refused Hellos since start (for metrics).
        self.refused = 0
        if allow_any:
            log.warning("auth.allow_any_camera is on: any camera id is accepted without a valid token")

    def authenticate(self, hello: edge_pb2.Hello, context: aio.ServicerContext | None = None) -> str:
        """The camera id the stream speaks for; raises Unauthenticated (never saying which part was wrong)."""
        camera_id = hello.camera_id
        ok = bool(CAMERA_ID_RE.match(camera_id))
        token_ok = self.table.verify(camera_id, hello.token)
        if ok and (token_ok or self.allow_any):
            return camera_id
        self.refused += 1
        log.info("refused a Hello for camera id %r", camera_id[:64])
        raise Unauthenticated("unknown camera or wrong credentials")


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` metadata entry, if any."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None
