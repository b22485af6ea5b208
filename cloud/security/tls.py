"""The server's side of TLS: credentials from ``[tls]`` and who the peer of a call is.

With ``tls.client_ca`` the handshake requires a client certificate signed by that CA; gRPC has
verified it before any call reaches a servicer, and exposes it in the call's auth context. The
identity is the certificate's ``layercast:camera:<id>`` / ``layercast:operator:<name>`` URI
(see :mod:`layercast.shared.pki`), never its common name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from layercast.cloud.config import CloudConfig
from layercast.shared.errors import ConfigError
from layercast.shared.pki import OPERATOR_URI_PREFIX, camera_id_from_uris

log = logging.getLogger(__name__)


def read_pem(path: Path, key: str) -> bytes:
    """The PEM file ``path`` (the setting ``key``); ConfigError naming the setting otherwise."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key} = {str(path)!r}: cannot read it ({exc.strerror or exc})") from None
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{key} = {str(path)!r} is not a PEM file")
    return data


def server_credentials(cfg: CloudConfig) -> grpc.ServerCredentials | None:
    """TLS credentials of the listening port; None when plain text was asked for (``insecure``),
    which is logged as a warning. Raises ConfigError when neither is configured."""
    cfg.validate_tls()
    if cfg.insecure:
        log.warning(
            "insecure = true: serving plain-text gRPC on %s; nothing is encrypted and cameras are "
            "identified by their tokens only (closed test networks, or behind a TLS-terminating proxy)",
            cfg.address,
        )
        return None
    tls = cfg.tls
    assert tls.cert is not None and tls.key is not None  # validate_tls
    pair = (read_pem(tls.key, "tls.key"), read_pem(tls.cert, "tls.cert"))
    client_ca = read_pem(tls.client_ca, "tls.client_ca") if tls.client_ca is not None else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


@dataclass(frozen=True)
class PeerIdentity:
    """What the transport proved about the caller."""

    #: The peer presented a client certificate that the handshake verified.
    has_certificate: bool = False
    #: The camera the certificate speaks for (its ``layercast:camera:`` URI), if any.
    camera_id: str | None = None
    #: The operator the certificate speaks for (its ``layercast:operator:`` URI), if any.
    operator: str | None = None


ANONYMOUS = PeerIdentity()


def peer_identity(context: Any) -> PeerIdentity:
    """The verified identity of the peer of ``context`` (a servicer context)."""
    try:
        auth = context.auth_context() or {}
    except Exception:  # contexts without a transport (tests' fakes)
        return ANONYMOUS
    if not auth.get("x509_pem_cert") and not auth.get("x509_subject"):
        return ANONYMOUS
    uris = [
        v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in auth.get("peer_uri", ())
    ]
    operators = {u[len(OPERATOR_URI_PREFIX) :] for u in uris if u.startswith(OPERATOR_URI_PREFIX)}
    return PeerIdentity(
        has_certificate=True,
        camera_id=camera_id_from_uris(uris),
        operator=operators.pop() if len(operators) == 1 else None,
    )
