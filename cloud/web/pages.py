"""The HTML pages: sign-in, the camera grid and the frame view.

Pages are rendered by Jinja2 with auto-escaping; their scripts (``static/``)
fetch everything else from ``/api``. No inline script or style: the Content
Security Policy allows only this server's own files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from layercast.cloud.web.auth import csrf_ok, csrf_token, end_session, principal_of, start_session
from layercast.cloud.web.passwords import verify_password
from layercast.cloud.web.signin import Refusal
from layercast.cloud.web.state import camera_param, client_address, require, web_state

templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


def safe_next(value: str | None) -> str:
    """Where to go after sign-in: a path on this site only."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    context.setdefault("user", principal_of(request, web_state(request).settings))
    context["csrf"] = csrf_token(request)
    resp = templates.TemplateResponse(request, name, context, status_code=status)
    resp.headers["Cache-Control"] = "no-store"
    return resp


async def login_page(request: Request) -> Response:
    if principal_of(request, web_state(request).settings) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return render(request, "login.html", next=safe_next(request.query_params.get("next")), error=None)


async def login(request: Request) -> Response:
    st = web_state(request)
    form = await request.form()
    name = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    nxt = safe_next(str(form.get("next", "/")))
    if not await csrf_ok(request, None):
        return render(
            request,
            "login.html",
            status=403,
            next=nxt,
            error="This sign-in form has expired or did not come from this site. Please try again.",
        )
    entry = st.settings.users.get(name)
    outcome = await st.signin.attempt(
        client_address(request), name, lambda: verify_password(entry[0] if entry else None, password)
    )
    if isinstance(outcome, Refusal):
        resp = render(request, "login.html", status=outcome.status, next=nxt, error=outcome.message)
        resp.headers["Retry-After"] = str(outcome.retry_after_s)
        return resp
    if not outcome or entry is None:
        return render(request, "login.html", status=401, next=nxt, error="Wrong user name or password.")
    start_session(request, name, entry[0])
    return RedirectResponse(nxt, status_code=303)


async def logout(request: Request) -> Response:
    if not await csrf_ok(request, None):
        return render(
            request, "error.html", status=403, title="Request refused", message="Reload and try again."
        )
    end_session(request)
    return RedirectResponse("/login", status_code=303)


async def grid(request: Request) -> Response:
    require(request)
    return render(request, "grid.html", page="grid")


async def camera_view(request: Request) -> Response:
    require(request)
    cam = camera_param(request)
    seq = request.query_params.get("seq", "")
    return render(request, "frame.html", page="frame", camera_id=cam, sequence=seq if seq.isdigit() else "")


routes = [
    Route("/", grid),
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/cameras/{camera_id}", camera_view),
]
