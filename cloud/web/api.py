"""The JSON, image and event endpoints the pages' scripts call (``/api/...``).

Every endpoint needs a signed-in user (or a bearer token); enhancement needs
the ``enhancer`` role and, from a browser, the session's CSRF token. Every
enhancement request, granted or not, is written to the audit log.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from layercast.cloud.web.auth import csrf_ok, csrf_token, principal_of
from layercast.cloud.web.client import CloudError
from layercast.cloud.web.live import sse
from layercast.cloud.web.results import depth_png
from layercast.cloud.web.state import (
    NotSignedIn,
    camera_param,
    client_address,
    require,
    sequence_param,
    web_state,
)
from layercast.shared.rpc import operator_pb2

#: Pictures and results are never kept by the browser or a proxy (a shared or stolen machine's
#: cache would show them without signing in).
_NO_STORE = {"Cache-Control": "no-store"}


def camera_json(c: operator_pb2.Camera) -> dict[str, Any]:
    return {
        "camera_id": c.camera_id,
        "online": c.online,
        "task": c.task,
        "base_model_id": c.base_model_id,
        "enhancement_model_id": c.enhancement_model_id,
        "last_sequence": c.last_sequence,
        "last_seen_us": c.last_seen_us,
        "frames_stored": c.frames_stored,
    }


def frame_json(f: operator_pb2.FrameInfo) -> dict[str, Any]:
    return {
        "sequence": f.sequence,
        "capture_time_us": f.capture_time_us,
        "base_bytes": f.base_bytes,
        "base_bpp": round(float(f.base_bpp), 4),
        "width": f.width,
        "height": f.height,
        "enhanced": f.enhanced,
    }


async def session_info(request: Request) -> JSONResponse:
    p = require(request)
    body: dict[str, Any] = {"user": p.name, "role": p.role, "can_enhance": p.can("enhance")}
    if p.via == "session":
        body["csrf_token"] = csrf_token(request)
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def cameras(request: Request) -> JSONResponse:
    require(request)
    st = web_state(request)
    cams = await st.client.list_cameras()
    out = []
    for c in cams:
        item = camera_json(c)
        item["latest"] = st.feed.latest.get(c.camera_id)
        out.append(item)
    return JSONResponse({"cameras": out, "feed": st.feed.status()}, headers={"Cache-Control": "no-store"})


async def frames(request: Request) -> JSONResponse:
    require(request)
    st = web_state(request)
    cam = camera_param(request)
    try:
        before = int(request.query_params.get("before", "0"))
        limit = int(request.query_params.get("limit", str(st.settings.frames_per_page)))
    except ValueError:
        raise HTTPException(400, "before and limit must be integers") from None
    if before < 0 or not 1 <= limit <= 1000:
        raise HTTPException(400, "before must be >= 0 and limit within 1..1000")
    items = await st.client.list_frames(cam, before=before, limit=limit)
    camera = await st.client.camera(cam)
    return JSONResponse(
        {
            "camera": camera_json(camera) if camera is not None else None,
            "frames": [frame_json(f) for f in items],
            "has_more": len(items) == limit,
        },
        headers={"Cache-Control": "no-store"},
    )


async def preview(request: Request) -> Response:
    require(request)
    st = web_state(request)
    key = (camera_param(request), sequence_param(request))
    png = st.previews.get(key)
    if png is None:
        img = await st.client.preview(*key)
        png = img.png
        st.previews.put(key, png)
    return Response(png, media_type="image/png", headers=_NO_STORE)


async def result(request: Request) -> JSONResponse:
    require(request)
    st = web_state(request)
    cam, seq = camera_param(request), sequence_param(request)
    found = await st.feed.result(cam, seq)
    if found is None:
        return JSONResponse(
            {
                "error": "no_result",
                "title": "No result",
                "message": f"no stored result for frame {seq} of {cam}",
            },
            status_code=404,
        )
    return JSONResponse(await st.feed.summary(found), headers=_NO_STORE)


async def depth(request: Request) -> Response:
    require(request)
    st = web_state(request)
    key = (camera_param(request), sequence_param(request))
    hit = st.depth_images.get(key)
    if hit is None:
        found = await st.feed.result(*key)
        if found is None or not found.HasField("depth"):
            raise HTTPException(404, f"frame {key[1]} of {key[0]} has no depth map")
        hit = await asyncio.to_thread(depth_png, found.depth)
        st.depth_images.put(key, hit)
    png, (near, far) = hit
    headers = dict(_NO_STORE, **{"X-Depth-Near-M": f"{near:.3f}", "X-Depth-Far-M": f"{far:.3f}"})
    return Response(png, media_type="image/png", headers=headers)


def _refusal(kind: str, title: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": kind, "title": title, "message": message}, status_code=status)


async def enhance(request: Request) -> JSONResponse:
    """Fetch a frame's enhancement layer through the cloud; audited whatever the outcome."""
    st = web_state(request)
    p = principal_of(request, st.settings)
    if p is None:
        raise NotSignedIn
    cam, seq = camera_param(request), sequence_param(request)

    def audit(outcome: str, status: int, **extra: Any) -> None:
        st.audit.write(
            user=p.name,
            role=p.role,
            via=p.via,
            camera_id=cam,
            sequence=seq,
            outcome=outcome,
            http_status=status,
            remote=client_address(request),
            **extra,
        )

    if not await csrf_ok(request, p):
        audit("csrf_rejected", 403)
        return _refusal(
            "csrf",
            "Request refused",
            "The request did not carry this session's CSRF token. Reload the page and try again.",
            403,
        )
    if not p.can("enhance"):
        audit("refused", 403)
        return _refusal(
            "forbidden",
            "Enhancement not allowed",
            f"Signed in as {p.name} with the {p.role} role, which may see previews and detections but not "
            "request the full picture. Ask an administrator for the enhancer role.",
            403,
        )
    t0 = time.perf_counter()
    try:
        resp = await st.client.enhance(cam, seq, on_behalf_of=p.name)
    except CloudError as exc:
        audit(
            exc.kind,
            exc.http_status,
            grpc_status=exc.grpc_code,
            elapsed_s=round(time.perf_counter() - t0, 4),
            details=exc.details[:500],
        )
        if exc.kind == "offline":
            camera = await _camera_or_none(request, cam)
            if camera is not None and camera.online:  # online, but its enhancement store failed
                exc = CloudError(
                    exc.http_status,
                    "unavailable",
                    "Camera unavailable",
                    f"Camera {cam} is online but could not provide the enhancement layer now.",
                    exc.grpc_code,
                    exc.details,
                )
        return JSONResponse(exc.to_json(), status_code=exc.http_status)
    elapsed = time.perf_counter() - t0
    audit(
        "ok",
        200,
        enhancement_bytes=resp.enhancement_bytes,
        base_bytes=resp.base_bytes,
        cached=resp.cached,
        fetch_seconds=round(resp.fetch_seconds, 4),
        elapsed_s=round(elapsed, 4),
    )
    img = resp.reconstruction
    body: dict[str, Any] = {
        "camera_id": cam,
        "sequence": seq,
        "width": img.width,
        "height": img.height,
        "base_bytes": resp.base_bytes,
        "enhancement_bytes": resp.enhancement_bytes,
        "total_bytes": resp.base_bytes + resp.enhancement_bytes,
        "total_bpp": round(float(resp.total_bpp), 4),
        "fetch_seconds": round(resp.fetch_seconds, 4),
        "elapsed_seconds": round(elapsed, 4),
        "cached": resp.cached,
        "image": "data:image/png;base64," + base64.b64encode(img.png).decode(),
        "result": await st.feed.summary(resp.result) if resp.HasField("result") else None,
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def _camera_or_none(request: Request, cam: str) -> operator_pb2.Camera | None:
    try:
        return await web_state(request).client.camera(cam)
    except CloudError:
        return None


async def events(request: Request) -> Response:
    """Server-sent events: ``result`` per live frame, ``status`` of the feed, ``dropped`` counts.

    The caller's session (or token) is checked again before every write, events and keep-alives
    alike: a stream ends with ``status`` ``signed_out`` once its session is revoked or expired."""
    require(request)
    st = web_state(request)
    stream = st.feed.open_stream()
    if stream is None:
        raise HTTPException(503, "too many live views are open; close a tab and reload")
    heartbeat = st.settings.sse_heartbeat_s

    async def body():
        reported = 0
        try:
            yield "retry: 3000\n\n"
            while True:
                items = await stream.take(heartbeat)
                if items is None:
                    return
                if principal_of(request, st.settings) is None:
                    yield sse("status", {"state": "signed_out", "message": "signed out; sign in again"})
                    return
                if not items:
                    yield ": keep-alive\n\n"
                    continue
                if stream.dropped != reported:
                    reported = stream.dropped
                    yield sse("dropped", {"dropped": reported})
                yield "".join(items)
        finally:
            st.feed.close_stream(stream)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def health(request: Request) -> JSONResponse:
    st = web_state(request)
    return JSONResponse({"ok": True, "feed": st.feed.status(), "event_streams": len(st.feed.streams)})


routes = [
    Route("/api/session", session_info),
    Route("/api/cameras", cameras),
    Route("/api/cameras/{camera_id}/frames", frames),
    Route("/api/frames/{camera_id}/{sequence}/preview.png", preview),
    Route("/api/frames/{camera_id}/{sequence}/result", result),
    Route("/api/frames/{camera_id}/{sequence}/depth.png", depth),
    Route("/api/frames/{camera_id}/{sequence}/enhance", enhance, methods=["POST"]),
    Route("/api/events", events),
    Route("/healthz", health),
]
