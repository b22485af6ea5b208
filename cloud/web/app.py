"""The operator web page: a Starlette app served by uvicorn, talking to the cloud over gRPC only.

Beside the cloud, in the same process and event loop (what ``layercast demo`` does)::

    settings = demo_settings(cloud_target=cloud.target, password="…", data_dir=Path("web"),
                             tls_cert=Path("pki/server.pem"), tls_key=Path("pki/server.key"))
    server = build_web_server(create_app(settings), "127.0.0.1", 0)
    task = asyncio.create_task(server.serve())
    await server.wait_started()
    print(server.url)   # https://127.0.0.1:<port>/

Served over HTTPS when the settings name a certificate (the session cookie is then ``Secure``);
without one only on a loopback address (a warning says so), unless ``plain_http`` is set for a
page behind a TLS proxy.
    ...
    server.should_exit = True
    await task

Standalone against a remote cloud: ``layercast web --config web.toml`` (see cli.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from layercast.cloud.results.cache import LruCache
from layercast.cloud.security.audit import AuditLog
from layercast.cloud.web import api, pages
from layercast.cloud.web.client import CloudClient, CloudError
from layercast.cloud.web.live import LiveFeed
from layercast.cloud.web.passwords import new_secret
from layercast.cloud.web.sessions import SessionStore
from layercast.cloud.web.settings import WebSettings, demo_settings
from layercast.cloud.web.signin import SignInGuard
from layercast.cloud.web.state import NotSignedIn, WebState
from layercast.shared.errors import ConfigError

__all__ = ["WebServer", "build_web_server", "create_app", "demo_settings", "WebSettings"]

log = logging.getLogger(__name__)

SESSION_COOKIE = "layercast_session"
STATIC_DIR = Path(__file__).with_name("static")

#: Only this server's own scripts, styles and images (reconstructions arrive as data: URLs).
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds the headers above to every HTTP response (pure ASGI: streaming stays streaming)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.method != "GET"


async def _not_signed_in(request: Request, exc: Exception) -> Response:
    if _wants_json(request):
        return JSONResponse(
            {"error": "not_signed_in", "title": "Not signed in", "message": "Sign in first."}, status_code=401
        )
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={_quote(target)}", status_code=303)


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    titles = {400: "Bad request", 403: "Not allowed", 404: "Not found", 405: "Method not allowed"}
    title = titles.get(exc.status_code, "Error")
    if _wants_json(request):
        return JSONResponse(
            {"error": title.lower().replace(" ", "_"), "title": title, "message": str(exc.detail)},
            status_code=exc.status_code,
        )
    return pages.render(request, "error.html", status=exc.status_code, title=title, message=str(exc.detail))


async def _cloud_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CloudError)
    if _wants_json(request):
        return JSONResponse(exc.to_json(), status_code=exc.http_status)
    return pages.render(request, "error.html", status=exc.http_status, title=exc.title, message=exc.message)


def create_app(settings: WebSettings) -> Starlette:
    """The operator page. Its gRPC channel and live feed start with the app's lifespan
    (so they belong to the event loop that serves it) and stop with it."""
    settings.validate()
    audit = AuditLog(settings.audit_log)
    sessions = SessionStore(settings.session_max_age_s, settings.max_sessions)
    if not settings.users and not settings.tokens:
        log.warning("operator page: no users or tokens configured; nobody can sign in")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = CloudClient(settings)
        feed = LiveFeed(client, mailbox=settings.sse_queue, max_streams=settings.max_event_streams)
        app.state.web = WebState(
            settings=settings,
            audit=audit,
            signin=SignInGuard(
                per_address=settings.login_max_failures,
                per_account=settings.login_max_failures_per_account,
                global_failures=settings.login_max_failures_global,
                window_s=settings.login_window_s,
                verify_slots=settings.login_verify_slots,
            ),
            sessions=sessions,
            client=client,
            feed=feed,
            previews=LruCache(settings.preview_cache_bytes, len),
            depth_images=LruCache(settings.preview_cache_bytes // 4, lambda v: len(v[0])),
        )
        feed.start()
        log.info("operator page: cloud %s, audit log %s", settings.cloud_target, settings.audit_log)
        try:
            yield
        finally:
            await feed.stop()
            await client.close()

    app = Starlette(
        routes=[
            *pages.routes,
            *api.routes,
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=settings.secret_key or new_secret(32),
                session_cookie=SESSION_COOKIE,
                max_age=settings.session_max_age_s,
                same_site="lax",
                https_only=settings.cookie_secure or settings.https,
            ),
        ],
        exception_handlers={
            NotSignedIn: _not_signed_in,
            HTTPException: _http_error,
            CloudError: _cloud_error,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app


class WebServer(uvicorn.Server):
    """uvicorn's server, embeddable: leaves signal handling to the host process unless asked,
    ends live event streams before waiting for connections to close, and tells its port."""

    def __init__(self, config: uvicorn.Config, app: Starlette, *, handle_signals: bool = False) -> None:
        super().__init__(config)
        self.app = app
        self._handle_signals = handle_signals

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if self._handle_signals:
            with super().capture_signals():
                yield
        else:
            yield

    async def startup(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        try:
            await super().startup(sockets=sockets)
        except SystemExit:  # uvicorn exits the process when it cannot bind; an embedded server must not
            self.should_exit = True
            raise ConfigError(
                f"cannot serve the operator page on {self.config.host}:{self.config.port} "
                "(address in use or not available)"
            ) from None

    async def shutdown(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        web = getattr(self.app.state, "web", None)
        if web is not None:
            web.feed.close_streams()
        await super().shutdown(sockets=sockets)

    @property
    def url(self) -> str:
        """``https://host:port/`` (``http://`` without TLS) once started."""
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if self.config.ssl_certfile else "http"
        return f"{scheme}://{shown}:{self.bound_port}/"

    @property
    def bound_port(self) -> int | None:
        """The port actually bound (useful with port 0); None before start-up."""
        if not self.servers or not self.servers[0].sockets:
            return None
        return int(self.servers[0].sockets[0].getsockname()[1])

    async def wait_started(self, timeout: float = 30.0) -> int:
        """Wait until the server accepts connections; returns the bound port."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.started:
            if self.should_exit or loop.time() > deadline:
                raise ConfigError(
                    f"the operator page did not start on {self.config.host}:{self.config.port} "
                    "(address in use, or its start-up failed; see the log)"
                )
            await asyncio.sleep(0.02)
        port = self.bound_port
        assert port is not None
        return port


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_web_server(
    app: Starlette, host: str = "127.0.0.1", port: int = 8080, *, handle_signals: bool = False
) -> WebServer:
    """A uvicorn server for ``app`` on ``host:port`` (0 = any free port; see ``bound_port``):
    HTTPS with the settings' ``tls_cert`` / ``tls_key``; plain HTTP on loopback (warned), or
    elsewhere only with ``plain_http`` (warned); ConfigError otherwise."""
    settings: WebSettings = app.state.settings
    if not settings.https:
        if not is_loopback(host) and not settings.plain_http:
            raise ConfigError(
                f"the operator page would serve plain HTTP on {host}, beyond this machine: give it a "
                "certificate (tls_cert, tls_key), or set plain_http = true behind a TLS proxy"
            )
        log.warning(
            "operator page served over plain HTTP on %s (no tls_cert): passwords and session cookies "
            "travel unencrypted",
            host,
        )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=5,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
    )
    return WebServer(config, app, handle_signals=handle_signals)
