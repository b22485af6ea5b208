"""Who is asking, and may they: sessions, bearer tokens, roles, CSRF and sign-in throttling.

A browser signs in with a name and password and then carries a signed session
cookie (Starlette's SessionMiddleware, itsdangerous). The session holds the
user's name and a random CSRF token; every state-changing request (POST) must
send that token back (form field ``csrf_token`` or header ``X-CSRF-Token``),
which a page on another site cannot read. Scripts may instead send
``Authorization: Bearer <token>``; no cookie is involved, so no CSRF token is
needed. Roles come from the settings on every request, never from the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

from layercast.cloud.web.passwords import new_secret, token_matches
from layercast.cloud.web.settings import ROLES, WebSettings

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Principal:
    """An authenticated user or token."""

    name: str
    role: str
    via: str  # "session" or "token"

    def can(self, action: str) -> bool:
        return action in ROLES.get(self.role, frozenset())


def principal_of(request: Request, settings: WebSettings) -> Principal | None:
    """The session's user, or the bearer token's owner; None when neither is valid."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        token = token.strip()
        for name, (token_hash, role) in settings.tokens.items():
            if token_matches(token_hash, token):
                return Principal(name, role, "token")
        return None
    name = request.session.get("user")
    if not isinstance(name, str):
        return None
    entry = settings.users.get(name)
    if entry is None:  # removed from the configuration since sign-in
        return None
    if request.session.get("pw") != _fingerprint(entry[0]):  # the password changed since sign-in
        return None
    signed_in = request.session.get("at")
    if not isinstance(signed_in, int) or time.time() - signed_in > settings.session_max_age_s:
        return None  # sessions end a fixed time after sign-in, however active
    return Principal(name, entry[1], "session")


def start_session(request: Request, name: str, password_hash: str) -> None:
    """A fresh session for ``name`` (anything from before sign-in is dropped)."""
    request.session.clear()
    request.session.update(
        {"user": name, "pw": _fingerprint(password_hash), "csrf": new_secret(24), "at": int(time.time())}
    )


def _fingerprint(password_hash: str) -> str:
    """A short digest of the stored hash: a password change ends older sessions."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use (also before sign-in, for the login form)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or len(token) < 16:
        token = new_secret(24)
        request.session["csrf"] = token
    return token


async def csrf_ok(request: Request, principal: Principal | None) -> bool:
    """Whether a state-changing request carries the session's CSRF token (and a same-site Origin).

    Requests authenticated by a bearer token carry no cookie and need no CSRF token."""
    if principal is not None and principal.via == "token":
        return True
    if not _same_origin(request):
        return False
    expected = request.session.get("csrf")
    if not isinstance(expected, str) or not expected:
        return False
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD, "")
        sent = value if isinstance(value, str) else ""
    return bool(sent) and hmac.compare_digest(sent.encode(), expected.encode())


def _same_origin(request: Request) -> bool:
    """An ``Origin`` header, when the browser sends one, must name this server."""
    origin = request.headers.get("origin")
    if not origin:
        return True
    if origin == "null":
        return False
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower()


class LoginThrottle:
    """Counts failed sign-ins per client address in a sliding window."""

    def __init__(self, max_failures: int, window_s: float) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] < now - self.window_s:
            q.popleft()
        return q

    def blocked_for(self, key: str) -> float:
        """Seconds ``key`` must still wait (0 = may try now)."""
        now = time.monotonic()
        q = self._recent(key, now)
        if len(q) < self.max_failures:
            return 0.0
        return max(0.0, q[0] + self.window_s - now)

    def failed(self, key: str) -> None:
        now = time.monotonic()
        self._recent(key, now).append(now)
        if len(self._failures) > 10_000:  # forget idle addresses
            for k in [k for k, q in self._failures.items() if not q or q[-1] < now - self.window_s]:
                del self._failures[k]

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
