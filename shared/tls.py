"""Client side of TLS for every gRPC link to the cloud (edge, ``layercast subscribe`` /
``enhance``, the operator page): one place that turns file paths into channel credentials.

    channel = open_channel("cloud.example:50051", ca_cert=Path("pki/ca.pem"),
                           client_cert=Path("pki/operators/ops.pem"), client_key=Path("pki/operators/ops.key"))

TLS is the default: without ``ca_cert`` the system's trusted roots check the cloud's certificate.
Plain text only when ``insecure=True`` is asked for explicitly; callers say so with
:func:`warn_insecure` (a WARNING in the log), once per process or component, not per reconnect.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from layercast.shared.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientTls:
    """How a client reaches the cloud: plain text (``insecure``) or TLS with these files."""

    insecure: bool = False
    #: PEM file of the CA that signed the cloud's certificate; None = the system's trusted roots.
    ca_cert: Path | None = None
    #: This client's certificate and key (PEM), presented when the cloud asks for mutual TLS.
    client_cert: Path | None = None
    client_key: Path | None = None
    #: Name checked against the cloud's certificate instead of the host in the target.
    server_name: str | None = None


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {str(path)!r}: {exc.strerror or exc}") from None


def channel_credentials(
    ca_cert: Path | None = None, client_cert: Path | None = None, client_key: Path | None = None
) -> grpc.ChannelCredentials:
    """TLS channel credentials from PEM files; ConfigError names a file that cannot be read."""
    if (client_cert is None) != (client_key is None):
        raise ConfigError("a client certificate and its key must be given together")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_cert, "CA certificate"),
        private_key=_read(client_key, "client key"),
        certificate_chain=_read(client_cert, "client certificate"),
    )


def open_channel(target: str, tls: ClientTls, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """A ``grpc.aio`` channel to ``target``: TLS as ``tls`` says, or plain text when ``tls.insecure``."""
    opts = list(options)
    if tls.insecure:
        return grpc.aio.insecure_channel(target, options=opts)
    creds = channel_credentials(tls.ca_cert, tls.client_cert, tls.client_key)
    if tls.server_name:
        opts.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(target, creds, options=opts)


def warn_insecure(what: str, target: str) -> None:
    """The one warning for a plain-text link that was asked for."""
    log.warning(
        "%s: plain-text gRPC to %s (insecure): nothing is encrypted and the cloud is not authenticated",
        what,
        target,
    )
