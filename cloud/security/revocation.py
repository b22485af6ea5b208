"""Revoked client certificates refused on every call and stream (``tls.crl``).

Python gRPC cannot check a CRL in the TLS handshake, so the check is here: every call to the
layercast services (EdgeLink, Analytics, Operator) whose peer certificate's serial is on the
revocation list (an X.509 CRL signed by ``tls.client_ca``, made by ``layercast certs revoke``) is
refused with UNAUTHENTICATED and counted as ``layercast_cloud_auth_refusals_total{reason="revoked"}``.

The file is re-read when it changes (size or mtime), checked on each call and every
``tls.crl_check_s`` seconds; streams already open with a certificate that becomes revoked are ended
then (a camera's EdgeLink stream with UNAUTHENTICATED, other calls cancelled). A changed file that
cannot be read or is not signed by the CA is logged as an error and the previous list stays in force.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from grpc import aio

from layercast.cloud.rpc.interceptors import _around, _wrap_handler
from layercast.cloud.security.auth import AuthRefusals
from layercast.cloud.security.tls import peer_identity
from layercast.shared.errors import ConfigError
from layercast.shared.revocation import read_crl, revoked_serials

log = logging.getLogger(__name__)


class RevocationList:
    """The serials of a CRL file, re-read when the file changes."""

    def __init__(self, path: Path, ca_cert_pem: bytes) -> None:
        self.path = Path(path)
        self._ca = ca_cert_pem
        self._stamp = self._stat()
        self.serials = revoked_serials(read_crl(self.path, ca_cert_pem))  # ConfigError at start
        #: Times the file was re-read with a new list.
        self.reloads = 0

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def refresh(self) -> bool:
        """Re-read the file if it changed; True when the list of serials changed."""
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            serials = revoked_serials(read_crl(self.path, self._ca))
        except ConfigError as exc:
            log.error("%s; the previous revocation list (%d serials) stays in force", exc, len(self.serials))
            return False
        changed = serials != self.serials
        self.serials = serials
        self.reloads += 1
        log.info("revocation list %s: %d revoked certificates", self.path, len(serials))
        return changed


@functools.lru_cache(maxsize=1024)
def _serial_of(pem: bytes) -> int | None:
    try:
        return x509.load_pem_x509_certificate(pem).serial_number
    except ValueError:
        return None


def peer_serial(context: Any) -> int | None:
    """The serial of the peer's verified client certificate, if it presented one."""
    try:
        auth = context.auth_context() or {}
    except Exception:  # contexts without a transport
        return None
    pems = auth.get("x509_pem_cert") or ()
    return _serial_of(bytes(pems[0])) if pems else None


class RevocationInterceptor(aio.ServerInterceptor):
    """UNAUTHENTICATED for calls whose client certificate is revoked; ends open streams that become so."""

    def __init__(
        self,
        crl: RevocationList,
        service_prefixes: Iterable[str],
        refusals: AuthRefusals,
        end_camera: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.crl = crl
        self._prefixes = tuple(service_prefixes)
        self._refusals = refusals
        #: Ends a camera's stream with UNAUTHENTICATED (True if it had one); else its call is cancelled.
        self._end_camera = end_camera
        #: Open calls by certificate serial: (task, camera id or None).
        self._open: dict[int, set[tuple[asyncio.Task[Any], str | None]]] = {}

    def check(self) -> None:
        """Re-read the list if the file changed, and end open calls of newly revoked certificates."""
        if not self.crl.refresh():
            return
        for serial in set(self._open) & self.crl.serials:
            for task, camera in list(self._open.pop(serial, ())):
                self._refusals.count("revoked")
                message = f"client certificate (serial {serial:x}) has been revoked"
                if camera is None or self._end_camera is None or not self._end_camera(camera, message):
                    task.cancel()
                log.warning("ended a call of a revoked certificate (serial %x, camera %s)", serial, camera)

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(self._prefixes):
            return handler
        entries: dict[str, tuple[int, tuple[asyncio.Task[Any], str | None]]] = {}

        async def before(context: Any) -> None:
            serial = peer_serial(context)
            if serial is None:
                return
            self.check()
            if serial in self.crl.serials:
                self._refusals.count("revoked")
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"client certificate (serial {serial:x}) has been revoked (tls.crl)",
                )
            task = asyncio.current_task()
            if task is not None:
                entry = (task, peer_identity(context).camera_id)
                self._open.setdefault(serial, set()).add(entry)
                entries["it"] = (serial, entry)

        def after(_context: Any, _err: BaseException | None) -> None:
            if "it" in entries:
                serial, entry = entries.pop("it")
                calls = self._open.get(serial)
                if calls is not None:
                    calls.discard(entry)
                    if not calls:
                        del self._open[serial]

        return _wrap_handler(handler, lambda fn, _s: _around(fn, before, after))
