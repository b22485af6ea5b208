"""Who is asking, and may they: sessions, bearer tokens, roles, CSRF and sign-in throttling.

A browser signs in with a name and password and then carries a signed session
cookie (Starlette's SessionMiddleware, itsdangerous). The cookie holds a random
session id, looked up on every request in the page's server-side store
(``sessions.py``: sign-out revokes it), and a random CSRF token; every state-changing request (POST) must
send that token back (form field ``csrf_token`` or header ``X-CSRF-Token``),
which a page on another site cannot read. Scripts may instead send
``Authorization: Bearer <token>``; no cookie is involved, so no CSRF token is
needed. Roles come from the settings on every request, never from the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

from layercast.cloud.web.passwords import new_secret, token_matches
from layercast.cloud.web.sessions import SessionStore
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
    session = sessions_of(request).get(request.session.get("sid"))
    if session is None:  # never signed in, signed out, expired (a fixed time after sign-in)
        return None
    entry = settings.users.get(session.user)
    if entry is None:  # removed from the configuration since sign-in
        return None
    if session.password_fingerprint != _fingerprint(entry[0]):  # the password changed since sign-in
        return None
    return Principal(session.user, entry[1], "session")


def sessions_of(request: Request) -> SessionStore:
    """The page's server-side session store."""
    return request.app.state.web.sessions


def start_session(request: Request, name: str, password_hash: str) -> None:
    """A fresh session for ``name`` (anything from before sign-in is dropped, its id revoked)."""
    store = sessions_of(request)
    store.revoke(request.session.get("sid"))
    request.session.clear()
    request.session.update({"sid": store.create(name, _fingerprint(password_hash)), "csrf": new_secret(24)})


def end_session(request: Request) -> None:
    """Sign out: the session id is revoked (a copy of the cookie stops working) and the cookie cleared."""
    sessions_of(request).revoke(request.session.get("sid"))
    request.session.clear()


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
