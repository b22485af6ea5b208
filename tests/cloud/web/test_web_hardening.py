"""The page as it ships, tried as an attacker would, over real HTTP(S) against uvicorn on loopback:
HTTPS and its Secure cookie, plain HTTP refused beyond loopback, sign-out revoking a copied
cookie, event streams ending when their session does, per-account and global sign-in throttles
that concurrent attempts cannot slip past, and a bounded pool of Argon2 checks.

The page here has no cloud behind it (its live feed keeps reconnecting): sign-in, sessions and
the event stream's status events need none."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from layercast.cloud.web import pages
from layercast.cloud.web.app import WebServer, build_web_server, create_app
from layercast.cloud.web.passwords import hash_password
from layercast.cloud.web.settings import WebSettings
from layercast.shared.errors import ConfigError
from layercast.shared.pki import LocalPki, create_local_pki
from tests.cloud.web.stack import csrf_from

PASSWORD = "the-right-password-9"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> LocalPki:
    return create_local_pki(tmp_path_factory.mktemp("pki"))


def settings(tmp_path: Path, pki: LocalPki | None, **extra) -> WebSettings:
    tls = {"tls_cert": pki.server_cert, "tls_key": pki.server_key} if pki else {}
    return WebSettings(
        cloud_target="127.0.0.1:9",  # nothing there: the live feed just keeps reconnecting
        cloud_insecure=True,
        users={name: (hash_password(PASSWORD), "viewer") for name in ("alice", "bob", "carol")},
        audit_log=tmp_path / "audit.jsonl",
        **tls,
        **extra,
    )


@contextlib.asynccontextmanager
async def serving(s: WebSettings, host: str = "127.0.0.1") -> AsyncIterator[WebServer]:
    server = build_web_server(create_app(s), host, 0)
    task = asyncio.create_task(server.serve())
    try:
        await server.wait_started()
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


def client(server: WebServer, pki: LocalPki | None) -> httpx.AsyncClient:
    verify = ssl.create_default_context(cafile=str(pki.ca_cert)) if pki else True
    return httpx.AsyncClient(base_url=server.url.rstrip("/"), verify=verify, timeout=30)


async def sign_in(c: httpx.AsyncClient, user: str, password: str = PASSWORD) -> httpx.Response:
    page = await c.get("/login")
    return await c.post(
        "/login", data={"username": user, "password": password, "csrf_token": csrf_from(page.text)}
    )


async def test_https_page_sets_a_secure_cookie(tmp_path, pki):
    async with serving(settings(tmp_path, pki)) as server, client(server, pki) as c:
        assert server.url.startswith("https://127.0.0.1:")
        r = await sign_in(c, "alice")
        assert r.status_code == 303
        cookie = r.headers["set-cookie"].lower()
        assert "layercast_session=" in cookie and "; secure" in cookie and "httponly" in cookie
        assert (await c.get("/api/session")).json()["user"] == "alice"
        with pytest.raises(httpx.HTTPError):  # the page does not speak plain HTTP on its port
            async with httpx.AsyncClient(timeout=5) as plain:
                await plain.get(server.url.replace("https://", "http://") + "login")


async def test_plain_http_only_on_loopback_unless_asked(tmp_path, caplog):
    with pytest.raises(ConfigError, match="plain HTTP on 0.0.0.0"):
        build_web_server(create_app(settings(tmp_path, None)), "0.0.0.0", 0)
    with caplog.at_level(logging.WARNING, logger="layercast.cloud.web.app"):
        build_web_server(create_app(settings(tmp_path, None, plain_http=True)), "0.0.0.0", 0)
        async with serving(settings(tmp_path, None)) as server, client(server, None) as c:
            assert server.url.startswith("http://127.0.0.1:")
            r = await sign_in(c, "alice")
            assert r.status_code == 303 and "secure" not in r.headers["set-cookie"].lower()
    assert sum("plain HTTP" in rec.getMessage() for rec in caplog.records) == 2


async def test_sign_out_revokes_a_copied_cookie_and_ends_its_event_stream(tmp_path, pki):
    async with serving(settings(tmp_path, pki, sse_heartbeat_s=0.2)) as server:
        async with client(server, pki) as owner, client(server, pki) as thief:
            assert (await sign_in(owner, "alice")).status_code == 303
            csrf = (await owner.get("/api/session")).json()["csrf_token"]
            thief.cookies.set("layercast_session", owner.cookies["layercast_session"])
            assert (await thief.get("/api/session")).status_code == 200

            events: list[str] = []

            async def follow() -> None:
                async with thief.stream("GET", "/api/events") as r:
                    assert r.status_code == 200
                    async for line in r.aiter_lines():
                        events.append(line)

            reader = asyncio.create_task(follow())
            await asyncio.sleep(0.5)
            assert not reader.done()  # the stream stands while the session does
            r = await owner.post("/logout", data={"csrf_token": csrf})
            assert r.status_code == 303
            t0 = time.monotonic()
            await asyncio.wait_for(reader, 5)  # ends within about one heartbeat
            assert time.monotonic() - t0 < 2
            assert any('"state":"signed_out"' in e for e in events), events
            assert (await thief.get("/api/session")).status_code == 401
            assert (await thief.get("/")).status_code == 303


async def _attempts(server, pki, names_passwords) -> list[int]:
    async with client(server, pki) as c:
        page = await c.get("/login")
        token = csrf_from(page.text)

        async def one(name: str, password: str) -> int:
            r = await c.post("/login", data={"username": name, "password": password, "csrf_token": token})
            return r.status_code

        return list(await asyncio.gather(*(one(n, p) for n, p in names_passwords)))


async def test_per_account_throttle_holds_whatever_the_address(tmp_path, pki):
    s = settings(tmp_path, pki, login_max_failures=1000, login_max_failures_per_account=3)
    async with serving(s) as server, client(server, pki) as c:
        codes = [(await sign_in(c, "alice", f"wrong-{i}")).status_code for i in range(3)]
        r = await sign_in(c, "alice")
        assert codes == [401, 401, 401] and r.status_code == 429  # even the right password waits
        assert "for this account" in r.text and int(r.headers["retry-after"]) > 0
        assert (await sign_in(c, "bob")).status_code == 303  # other accounts are not held


async def test_global_throttle_stops_spraying_across_accounts(tmp_path, pki):
    s = settings(tmp_path, pki, login_max_failures=1000, login_max_failures_global=4)
    async with serving(s) as server, client(server, pki) as c:
        codes = [(await sign_in(c, name, "wrong")).status_code for name in ("a1", "a2", "a3", "a4")]
        assert codes == [401] * 4
        r = await sign_in(c, "carol")
        assert r.status_code == 429 and "Too many failed sign-ins. Try again" in r.text


async def test_concurrent_attempts_cannot_slip_past_the_throttle(tmp_path, pki):
    s = settings(tmp_path, pki, login_max_failures=3, login_verify_slots=64)
    async with serving(s) as server:
        codes = await _attempts(server, pki, [("alice", f"wrong-{i}") for i in range(20)])
    assert codes.count(401) == 3 and codes.count(429) == 17, codes


async def test_argon2_checks_are_bounded_and_the_excess_refused_at_once(tmp_path, pki, monkeypatch):
    running, peak, calls, lock = [0], [0], [0], threading.Lock()
    real = pages.verify_password

    def counting(password_hash, password):
        with lock:
            running[0] += 1
            calls[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.2)  # a slow Argon2, so attempts overlap
            return real(password_hash, password)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(pages, "verify_password", counting)
    s = settings(tmp_path, pki, login_max_failures=1000, login_max_failures_global=1000, login_verify_slots=2)
    async with serving(s) as server:
        codes = await _attempts(server, pki, [(f"user{i}", "wrong") for i in range(12)])
        assert peak[0] <= 2 and codes.count(503) >= 8 and set(codes) <= {401, 503}, (peak, codes)
        assert calls[0] == codes.count(401)  # a refused attempt ran no Argon2 and waited for no slot
        async with client(server, pki) as c:  # once the burst is over, signing in works again
            assert (await sign_in(c, "alice")).status_code == 303
