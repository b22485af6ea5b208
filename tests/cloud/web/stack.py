"""A real stack on 127.0.0.1 for the web tests: a CloudServer with a real codec, real edges
(EdgeApp, synthetic camera, insecure loopback link) and the operator page served by uvicorn
over HTTPS (a private CA in the stack's folder), all in one event loop, as ``layercast demo`` runs them.

Cameras:
* ``cam-live``  streams all along, keeps its enhancement layers (enhance succeeds);
* ``cam-short`` streams all along, keeps enhancement layers 1 s only (old frames expire);
* ``cam-gone``  sends a few frames and stops (offline).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from layercast.cloud.security.credentials import hash_token
from layercast.cloud.server import CloudServer
from layercast.cloud.web.app import WebServer, build_web_server, create_app
from layercast.cloud.web.passwords import hash_password
from layercast.cloud.web.settings import WebSettings
from layercast.edge.app import EdgeApp
from layercast.edge.config import load_edge_config
from layercast.edge.encoder import Encoder
from layercast.shared.pki import create_local_pki
from tests.cloud.conftest import OPERATOR_TOKEN, cloud_config

PASSWORDS = {"alice": "alice-enhances-42", "bob": "bob-only-views-7"}
ROBOT_TOKEN = "robot-token-" + "r" * 32
CAMERAS = {"cam-live": {}, "cam-short": {"store.max_age_s": 1.0}, "cam-gone": {"source.limit": 3}}
_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


async def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@dataclass
class Stack:
    cloud: CloudServer
    web: WebServer
    settings: WebSettings
    edges: dict[str, EdgeApp]
    edge_tasks: dict[str, asyncio.Task[Any]]
    encoder: Encoder
    web_task: asyncio.Task[None]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.web.bound_port}"

    def client(self) -> httpx.AsyncClient:
        """An HTTPS client trusting the stack's CA."""
        ca = ssl.create_default_context(cafile=str(self.extra["ca_cert"]))
        return httpx.AsyncClient(base_url=self.url, follow_redirects=False, timeout=30.0, verify=ca)

    async def stop(self) -> None:
        for e in self.edges.values():
            e.request_stop()
        await asyncio.gather(*self.edge_tasks.values(), return_exceptions=True)
        self.web.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.web_task, 15)
        await self.cloud.stop(5.0)
        self.encoder.close()


def web_settings(cloud_target: str, data_dir: Path, **extra: Any) -> WebSettings:
    """The page's settings; plain-text gRPC to the stack's plain-text cloud unless ``extra`` says otherwise."""
    extra.setdefault("cloud_insecure", True)
    extra.setdefault("cloud_token", OPERATOR_TOKEN)  # the stack's cloud knows this operator (an enhancer)
    return WebSettings(
        cloud_target=cloud_target,
        users={
            "alice": (hash_password(PASSWORDS["alice"]), "enhancer"),
            "bob": (hash_password(PASSWORDS["bob"]), "viewer"),
        },
        tokens={"robot": (hash_token(ROBOT_TOKEN), "enhancer")},
        audit_log=data_dir / "audit.jsonl",
        **extra,
    )


async def start_stack(
    data_dir: Path,
    codec: Any,
    *,
    cameras: dict[str, dict[str, Any]] | None = None,
    fps: float = 4.0,
    size: tuple[int, int] = (128, 96),
    web_port: int = 0,
) -> Stack:
    cameras = CAMERAS if cameras is None else cameras
    tokens = {cam: f"{cam}-token-" + "t" * 24 for cam in cameras}
    cfg = cloud_config(
        data_dir,
        **{
            "auth.camera_tokens": [f"{c}={hash_token(t)}" for c, t in tokens.items()],
            "enhancement_timeout_s": 10.0,
        },
    )
    cloud = CloudServer(cfg, codec=codec)
    await cloud.start()
    encoder = Encoder(codec, device="cpu", batch_max=4)
    edges: dict[str, EdgeApp] = {}
    for i, (cam, extra) in enumerate(cameras.items()):
        overrides = {
            "camera_id": cam,
            "token": tokens[cam],
            "data_dir": str(data_dir / cam),
            "link.cloud": cloud.target,
            "link.insecure": True,
            "link.backoff.initial_s": 0.1,
            "link.backoff.max_s": 0.5,
            "source.spec": "synthetic",
            "source.seed": 10 + i,
            "source.fps": fps,
            "source.width": size[0],
            "source.height": size[1],
        }
        overrides.update(extra)
        edges[cam] = EdgeApp(load_edge_config(overrides=overrides, environ={}), encoder=encoder)
    edge_tasks = {cam: asyncio.create_task(e.run(), name=f"edge-{cam}") for cam, e in edges.items()}
    pki = create_local_pki(data_dir / "pki")
    settings = web_settings(cloud.target, data_dir / "web", tls_cert=pki.server_cert, tls_key=pki.server_key)
    web = build_web_server(create_app(settings), "127.0.0.1", web_port)
    web_task = asyncio.create_task(web.serve(), name="web")
    await web.wait_started()
    return Stack(cloud, web, settings, edges, edge_tasks, encoder, web_task, extra={"ca_cert": pki.ca_cert})


def csrf_from(html: str) -> str:
    m = _CSRF_RE.search(html)
    assert m, "no CSRF token in the page"
    return m.group(1)


async def login(client: httpx.AsyncClient, user: str, password: str | None = None) -> str:
    """Sign in through the form; returns the session's CSRF token."""
    page = await client.get("/login")
    assert page.status_code == 200
    resp = await client.post(
        "/login",
        data={"username": user, "password": password or PASSWORDS[user], "csrf_token": csrf_from(page.text)},
    )
    assert resp.status_code == 303, resp.text[:500]
    session = await client.get("/api/session")
    assert session.status_code == 200
    return session.json()["csrf_token"]
