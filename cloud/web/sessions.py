"""Server-side sessions of the operator page.

The browser's cookie (signed by Starlette's SessionMiddleware) carries only a random session id
and the CSRF token; who is signed in, since when and under which password lives here, in the
page's memory. Signing out revokes the id, so a copy of the cookie stops working at once; a
session also ends ``max_age_s`` after sign-in and when its user's password changes. The store
is bounded: beyond ``max_sessions`` the oldest session ends. A restart of the page ends every
session (everyone signs in again).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Session:
    user: str
    #: A digest of the password hash at sign-in (a password change ends the session).
    password_fingerprint: str
    signed_in: float


class SessionStore:
    """Session id → :class:`Session`, oldest first; thread-safe."""

    def __init__(self, max_age_s: float, max_sessions: int = 10_000, clock=time.time) -> None:
        self.max_age_s = max_age_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self, user: str, password_fingerprint: str) -> str:
        """A new session id for ``user``."""
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[sid] = Session(user, password_fingerprint, self._clock())
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return sid

    def get(self, sid: object) -> Session | None:
        """The live session of ``sid``; None when unknown, revoked or expired."""
        if not isinstance(sid, str):
            return None
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                return None
            if self._clock() - s.signed_in > self.max_age_s:
                del self._sessions[sid]
                return None
            return s

    def revoke(self, sid: object) -> bool:
        """End one session; True when it existed."""
        if not isinstance(sid, str):
            return False
        with self._lock:
            return self._sessions.pop(sid, None) is not None

    def revoke_user(self, user: str) -> int:
        """End every session of ``user``; returns how many."""
        with self._lock:
            ids = [k for k, s in self._sessions.items() if s.user == user]
            for k in ids:
                del self._sessions[k]
            return len(ids)

    def __len__(self) -> int:
        return len(self._sessions)
