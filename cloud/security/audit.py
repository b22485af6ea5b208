"""The audit log: one JSON object per line for every enhancement request.

Written by the operator page (:mod:`layercast.cloud.web.api`, for each request of a signed-in
user) and by the cloud's gRPC Operator API (:mod:`layercast.cloud.security.enhance_audit`, for every
Enhance call whoever makes it). Each line says who asked (and with which role), for which camera
and frame, when, and the outcome (``ok``, ``refused``, ``csrf_rejected``, ``expired``,
``offline``, ``timeout``, ``error`` …) with the status sent. Never a credential.

Lines are appended with a single ``write`` on a file opened in append mode, so concurrent writers
(and log rotation by renaming) never interleave lines.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from layercast.shared.errors import ConfigError


class AuditLog:
    """Appends audit records to a JSON-lines file (created with its folder, mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def check_writable(self, key: str = "audit_log") -> None:
        """Open the file for appending once, so a bad path fails at start (ConfigError naming ``key``),
        not at the first request."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"{key} = {str(self.path)!r} cannot be written: {exc.strerror or exc}"
            ) from None
        os.close(fd)

    def write(self, **record: Any) -> dict[str, Any]:
        """Append one record (``time`` and ``ts`` are added); returns what was written."""
        now = time.time()
        line = {"time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"), "ts": now}
        line.update(record)
        data = (json.dumps(line, separators=(",", ":"), sort_keys=False) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        return line

    def read(self) -> list[dict[str, Any]]:
        """Every record so far (for tests and small tools)."""
        if not self.path.exists():
            return []
        return [json.loads(s) for s in self.path.read_text().splitlines() if s.strip()]
