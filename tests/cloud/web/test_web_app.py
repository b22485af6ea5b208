"""The operator page against a real cloud, real edges and real HTTP (uvicorn on 127.0.0.1):
sign-in, CSRF, roles, the audit log, previews, results, live events and enhancement outcomes."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from layercast.cloud.web.app import build_web_server, create_app
from layercast.cloud.web.settings import WebSettings
from layercast.shared.rpc import operator_pb2, operator_pb2_grpc
from tests.cloud.conftest import operator_channel
from tests.cloud.web.stack import PASSWORDS, ROBOT_TOKEN, Stack, csrf_from, eventually, login

pytestmark = pytest.mark.asyncio(loop_scope="module")


def audit_lines(stack: Stack) -> list[dict]:
    return stack.web.app.state.web.audit.read()


async def newest_frames(client, cam: str, n: int = 1) -> list[dict]:
    async def ready():
        r = await client.get(f"/api/cameras/{cam}/frames")
        frames = r.json()["frames"] if r.status_code == 200 else []
        return frames if len(frames) >= n else None

    return await eventually(ready, 60, f"{n} frames of {cam}")


async def test_pages_and_api_need_a_signed_in_user(stack: Stack):
    async with stack.client() as c:
        r = await c.get("/")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=/"
        r = await c.get("/cameras/cam-live?seq=3")
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=/cameras/cam-live")
        for path in ("/api/cameras", "/api/events", "/api/frames/cam-live/1/preview.png", "/api/session"):
            r = await c.get(path)
            assert r.status_code == 401, path
            assert r.json()["error"] == "not_signed_in"
        r = await c.post("/api/frames/cam-live/1/enhance")
        assert r.status_code == 401
        assert (await c.get("/healthz")).status_code == 200
    assert audit_lines(stack) == [] or all(line["user"] for line in audit_lines(stack))


async def test_wrong_password_and_unknown_user_are_refused(stack: Stack):
    async with stack.client() as c:
        for user, password in (("alice", "not-her-password"), ("mallory", PASSWORDS["alice"]), ("alice", "")):
            page = await c.get("/login")
            r = await c.post(
                "/login", data={"username": user, "password": password, "csrf_token": csrf_from(page.text)}
            )
            assert r.status_code == 401
            assert "Wrong user name or password" in r.text
            assert (await c.get("/api/session")).status_code == 401
        # and the right one works from the same browser
        await login(c, "alice")
        me = (await c.get("/api/session")).json()
        assert me["user"] == "alice" and me["role"] == "enhancer" and me["can_enhance"]


async def test_sign_in_without_csrf_token_is_refused(stack: Stack):
    async with stack.client() as c:
        await c.get("/login")
        r = await c.post("/login", data={"username": "alice", "password": PASSWORDS["alice"]})
        assert r.status_code == 403
        r = await c.post(
            "/login", data={"username": "alice", "password": PASSWORDS["alice"], "csrf_token": "forged" * 5}
        )
        assert r.status_code == 403
        assert (await c.get("/api/session")).status_code == 401


async def test_a_form_posted_from_another_site_is_refused(stack: Stack):
    async with stack.client() as c:
        page = await c.get("/login")
        r = await c.post(
            "/login",
            data={"username": "alice", "password": PASSWORDS["alice"], "csrf_token": csrf_from(page.text)},
            headers={"Origin": "http://evil.example"},
        )
        assert r.status_code == 403


async def test_enhance_without_csrf_token_is_403_and_audited(stack: Stack):
    async with stack.client() as c:
        csrf = await login(c, "alice")
        seq = (await newest_frames(c, "cam-live"))[0]["sequence"]
        r = await c.post(f"/api/frames/cam-live/{seq}/enhance")
        assert r.status_code == 403 and r.json()["error"] == "csrf"
        r = await c.post(f"/api/frames/cam-live/{seq}/enhance", headers={"X-CSRF-Token": csrf[::-1]})
        assert r.status_code == 403
    refused = [a for a in audit_lines(stack) if a["outcome"] == "csrf_rejected" and a["sequence"] == seq]
    assert len(refused) == 2 and {a["user"] for a in refused} == {"alice"}
    assert not stack.cloud.viewer.is_enhanced("cam-live", seq)  # nothing was fetched from the camera


async def test_viewer_sees_previews_but_cannot_enhance(stack: Stack):
    async with stack.client() as c:
        csrf = await login(c, "bob")
        me = (await c.get("/api/session")).json()
        assert me == {"user": "bob", "role": "viewer", "can_enhance": False, "csrf_token": csrf}
        frames = await newest_frames(c, "cam-live", 2)
        seq = frames[1]["sequence"]
        assert (await c.get(f"/api/frames/cam-live/{seq}/preview.png")).status_code == 200
        page = await c.get(f"/cameras/cam-live?seq={seq}")
        assert page.status_code == 200 and 'id="enhance"' in page.text  # the button is there ...
        r = await c.post(f"/api/frames/cam-live/{seq}/enhance", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 403  # ... but the server refuses
        body = r.json()
        assert body["error"] == "forbidden" and "viewer" in body["message"]
        assert "image" not in body
    lines = [a for a in audit_lines(stack) if a["user"] == "bob"]
    assert [(a["outcome"], a["http_status"], a["camera_id"], a["sequence"]) for a in lines] == [
        ("refused", 403, "cam-live", seq)
    ]
    assert lines[0]["role"] == "viewer" and lines[0]["time"].endswith("+00:00")
    assert not stack.cloud.viewer.is_enhanced("cam-live", seq)


async def test_enhancer_gets_the_reconstruction_and_an_audit_line(stack: Stack):
    async with stack.client() as c:
        csrf = await login(c, "alice")
        frames = await newest_frames(c, "cam-live", 3)
        frame = frames[2]
        seq = frame["sequence"]
        before = len(audit_lines(stack))
        r = await c.post(f"/api/frames/cam-live/{seq}/enhance", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["cached"] is False and body["enhancement_bytes"] > 0
        assert body["base_bytes"] == frame["base_bytes"]
        assert body["total_bytes"] == body["base_bytes"] + body["enhancement_bytes"]
        assert body["total_bpp"] == pytest.approx(
            8 * body["total_bytes"] / (frame["width"] * frame["height"]), rel=1e-3
        )
        assert body["elapsed_seconds"] >= body["fetch_seconds"] >= 0
        png = base64.b64decode(body["image"].removeprefix("data:image/png;base64,"))
        rec = np.asarray(Image.open(io.BytesIO(png)))
        assert rec.shape == (frame["height"], frame["width"], 3)
        # The page passes on exactly what the cloud's Operator API gives (now from its cache).
        async with operator_channel(stack.cloud.target) as ch:
            direct = await operator_pb2_grpc.OperatorStub(ch).Enhance(
                operator_pb2.EnhanceRequest(frame=operator_pb2.FrameRef(camera_id="cam-live", sequence=seq)),
                timeout=10,
            )
        assert direct.cached and direct.reconstruction.png == png
        assert direct.enhancement_bytes == body["enhancement_bytes"]
        listed = {f["sequence"]: f for f in (await c.get("/api/cameras/cam-live/frames")).json()["frames"]}
        assert listed[seq]["enhanced"] is True
    new = audit_lines(stack)[before:]
    assert len(new) == 1
    line = new[0]
    assert line["user"] == "alice" and line["role"] == "enhancer" and line["via"] == "session"
    assert (line["camera_id"], line["sequence"], line["outcome"], line["http_status"]) == (
        "cam-live",
        seq,
        "ok",
        200,
    )
    assert line["enhancement_bytes"] == body["enhancement_bytes"] and line["remote"] == "127.0.0.1"
    raw = stack.settings.audit_log.read_text().splitlines()[-1]
    assert json.loads(raw) == line


async def test_expired_frame_gets_a_clear_message(stack: Stack):
    async with stack.client() as c:
        csrf = await login(c, "alice")
        oldest = (await newest_frames(c, "cam-short"))[-1]
        # cam-short keeps enhancement layers for 1 s; wait until its oldest frame is past that.
        await eventually(lambda: time.time() - oldest["capture_time_us"] / 1e6 > 1.5, 10, "the frame to age")
        r = await c.post(
            f"/api/frames/cam-short/{oldest['sequence']}/enhance", headers={"X-CSRF-Token": csrf}
        )
        assert r.status_code == 404
        body = r.json()
        assert body["error"] == "expired" and body["title"] == "Frame expired"
        assert f"Frame {oldest['sequence']} of cam-short has expired" in body["message"]
        assert "retention" in body["details"] and body["grpc_status"] == "NOT_FOUND"
        # the preview of the same frame is still there
        assert (await c.get(f"/api/frames/cam-short/{oldest['sequence']}/preview.png")).status_code == 200
    line = audit_lines(stack)[-1]
    assert (line["camera_id"], line["sequence"], line["outcome"], line["http_status"]) == (
        "cam-short",
        oldest["sequence"],
        "expired",
        404,
    )


async def test_offline_camera_gets_a_clear_message(stack: Stack):
    async with stack.client() as c:
        csrf = await login(c, "alice")
        await asyncio.wait_for(stack.edge_tasks["cam-gone"], 60)  # a finite source: it delivers, then leaves

        async def offline():
            cams = (await c.get("/api/cameras")).json()["cameras"]
            return any(x["camera_id"] == "cam-gone" and not x["online"] for x in cams)

        await eventually(offline, 20, "cam-gone to show offline")
        r = await c.post("/api/frames/cam-gone/2/enhance", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 503
        body = r.json()
        assert body["error"] == "offline" and body["title"] == "Camera offline"
        assert "cam-gone is offline" in body["message"] and body["grpc_status"] == "UNAVAILABLE"
    assert audit_lines(stack)[-1]["outcome"] == "offline"


async def test_grid_previews_and_results_come_from_the_cloud(stack: Stack):
    async with stack.client() as c:
        await login(c, "bob")
        page = await c.get("/")
        assert page.status_code == 200 and 'id="grid"' in page.text and "bob" in page.text
        assert "content-security-policy" in page.headers and page.headers["x-frame-options"] == "DENY"
        cams = {x["camera_id"]: x for x in (await c.get("/api/cameras")).json()["cameras"]}
        assert {"cam-live", "cam-short", "cam-gone"} <= set(cams)
        assert cams["cam-live"]["online"] and cams["cam-live"]["task"] == "detection"
        frame = (await newest_frames(c, "cam-live"))[0]
        seq = frame["sequence"]
        r = await c.get(f"/api/frames/cam-live/{seq}/preview.png")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.headers["cache-control"] == "no-store"  # no picture left in the browser's cache
        async with operator_channel(stack.cloud.target) as ch:
            direct = await operator_pb2_grpc.OperatorStub(ch).GetPreview(
                operator_pb2.FrameRef(camera_id="cam-live", sequence=seq), timeout=10
            )
        assert r.content == direct.png
        assert Image.open(io.BytesIO(r.content)).size == (frame["width"], frame["height"])
        r = await c.get(f"/api/frames/cam-live/{seq}/result")
        assert r.headers["cache-control"] == "no-store"
        res = r.json()
        assert (res["sequence"], res["base_bytes"], res["width"]) == (
            seq,
            frame["base_bytes"],
            frame["width"],
        )
        assert res["base_bpp"] == pytest.approx(
            8 * frame["base_bytes"] / (frame["width"] * frame["height"]), rel=1e-3
        )
        assert isinstance(res["boxes"], list) and res["depth"] is None
        for b in res["boxes"]:
            assert 0 <= b["x1"] <= b["x2"] <= frame["width"] and 0 <= b["score"] <= 1
        assert (await c.get("/api/frames/cam-live/999999/preview.png")).status_code == 404
        assert (await c.get("/api/frames/cam-live/abc/preview.png")).status_code == 404
        assert (await c.get("/cameras/bad%20id")).status_code == 404


async def test_live_events_carry_new_results(stack: Stack):
    async with stack.client() as c:
        await login(c, "bob")
        seen: list[dict] = []
        async with c.stream("GET", "/api/events") as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            event = None
            async for line in resp.aiter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event == "result":
                    seen.append(json.loads(line.removeprefix("data: ")))
                    if len({r["camera_id"] for r in seen}) >= 2 and len(seen) >= 4:
                        break
        cams = {r["camera_id"] for r in seen}
        assert {"cam-live", "cam-short"} <= cams
        for cam in cams:
            seqs = [r["sequence"] for r in seen if r["camera_id"] == cam]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        r = seen[-1]
        assert r["base_bytes"] > 0 and r["base_bpp"] > 0 and r["latency_ms"] is not None
        # the stream was closed by the client: the page forgot it
        feed = stack.web.app.state.web.feed
        await eventually(lambda: len(feed.streams) == 0, 10, "the closed stream to be dropped")


async def test_bearer_token_for_scripts(stack: Stack):
    async with stack.client() as c:
        seq = (await newest_frames_token(c))[0]["sequence"]
        r = await c.post(
            f"/api/frames/cam-live/{seq}/enhance", headers={"Authorization": f"Bearer {ROBOT_TOKEN}"}
        )
        assert (
            r.status_code == 200 and r.json()["enhancement_bytes"] > 0
        )  # no cookie, so no CSRF token needed
        r = await c.get("/api/cameras", headers={"Authorization": "Bearer wrong-token"})
        assert r.status_code == 401
    line = audit_lines(stack)[-1]
    assert (line["user"], line["via"], line["outcome"], line["sequence"]) == ("robot", "token", "ok", seq)


async def newest_frames_token(c) -> list[dict]:
    r = await c.get("/api/cameras/cam-live/frames", headers={"Authorization": f"Bearer {ROBOT_TOKEN}"})
    assert r.status_code == 200
    return r.json()["frames"]


async def test_a_tampered_session_cookie_is_ignored(stack: Stack):
    async with stack.client() as c:
        await login(c, "bob")
        cookie = c.cookies["layercast_session"]
        payload, _, signature = cookie.partition(".")
        forged = base64.b64encode(json.dumps({"user": "alice"}).encode()).decode() + "." + signature
        c.cookies.set("layercast_session", forged)
        assert (await c.get("/api/session")).status_code == 401
        assert payload  # the real cookie was signed data


async def test_sign_out_needs_csrf_and_ends_the_session(stack: Stack):
    async with stack.client() as c:
        csrf = await login(c, "alice")
        assert (await c.post("/logout")).status_code == 403
        assert (await c.get("/api/session")).status_code == 200
        r = await c.post("/logout", data={"csrf_token": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert (await c.get("/api/session")).status_code == 401


async def test_repeated_wrong_passwords_are_throttled(stack: Stack, tmp_path):
    settings = WebSettings(
        cloud_target=stack.cloud.target,
        cloud_insecure=True,
        users=stack.settings.users,
        audit_log=tmp_path / "audit.jsonl",
        login_max_failures=2,
        login_window_s=60,
    )
    server = build_web_server(create_app(settings), "127.0.0.1", 0)
    task = asyncio.create_task(server.serve())
    try:
        port = await server.wait_started()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            codes = []
            for password in ("bad-1", "bad-2", PASSWORDS["alice"]):
                page = await c.get("/login")
                r = await c.post(
                    "/login",
                    data={"username": "alice", "password": password, "csrf_token": csrf_from(page.text)},
                )
                codes.append(r.status_code)
            assert codes == [401, 401, 429]  # even the right password waits once throttled
            assert "Too many failed sign-ins" in r.text
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
