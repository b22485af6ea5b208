"""What the page's handlers share, and the checks every handler starts with."""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request

from layercast.cloud.results.cache import LruCache
from layercast.cloud.security.audit import AuditLog
from layercast.cloud.web.auth import Principal, principal_of
from layercast.cloud.web.client import CloudClient
from layercast.cloud.web.live import LiveFeed
from layercast.cloud.web.sessions import SessionStore
from layercast.cloud.web.settings import WebSettings
from layercast.cloud.web.signin import SignInGuard

#: Camera ids as the cloud accepts them (see Hello.camera_id in edge.proto).
CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass
class WebState:
    """Built by the app's lifespan (the gRPC channel must belong to the serving event loop)."""

    settings: WebSettings
    audit: AuditLog
    signin: SignInGuard
    sessions: SessionStore
    client: CloudClient
    feed: LiveFeed
    previews: LruCache[tuple[str, int], bytes]
    depth_images: LruCache[tuple[str, int], tuple[bytes, tuple[float, float]]]


def web_state(request: Request) -> WebState:
    return request.app.state.web


class NotSignedIn(Exception):
    """Raised by ``require`` for a request without a valid session or token."""


def require(request: Request, action: str = "view") -> Principal:
    """The caller, who must be signed in (NotSignedIn) and allowed ``action`` (403)."""
    principal = principal_of(request, web_state(request).settings)
    if principal is None:
        raise NotSignedIn
    if not principal.can(action):
        raise HTTPException(403, f"your role ({principal.role}) may not {action}")
    return principal


def camera_param(request: Request) -> str:
    cam = request.path_params["camera_id"]
    if not CAMERA_ID_RE.match(cam):
        raise HTTPException(404, "no such camera")
    return cam


def sequence_param(request: Request) -> int:
    raw = request.path_params["sequence"]
    if not raw.isdigit() or len(raw) > 19 or int(raw) < 1:
        raise HTTPException(404, "no such frame")
    return int(raw)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
