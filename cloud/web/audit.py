"""The audit log: one JSON object per line for every enhancement request.

Each line says who asked (user and role), for which camera and frame, when,
from where, and the outcome (``ok``, ``refused``, ``csrf_rejected``,
``expired``, ``offline``, ``timeout``, ``error``) with the HTTP status sent.
Lines are appended with a single ``write`` on a file opened in append mode, so
concurrent writers (and log rotation by renaming) never interleave lines.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class AuditLog:
    """Appends audit records to a JSON-lines file (created with its folder, mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

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
