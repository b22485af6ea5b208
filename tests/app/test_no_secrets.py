"""No secret in logs, metrics or error messages.

A real cloud (operator tokens with roles), a real edge (real codec, encrypted enhancement store)
and the operator page run on 127.0.0.1 with known camera tokens, operator tokens, passwords, a
session key and an encryption key. Then things go wrong on purpose: wrong and borrowed camera
tokens, wrong operator tokens, a viewer calling Enhance, wrong passwords, a wrong encryption key,
and configurations that carry credentials in the wrong place (in process and through the CLI).
Everything a person or a scraper could read is collected: every log record (DEBUG and up, with
tracebacks), both /metrics pages, gRPC status details, HTTP response bodies, audit logs, and the
CLI's output; none of it may contain a secret, a wrong guess at one, or a token's SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
import torch
from grpc import aio

from layercast.cloud.config import load_cloud_config
from layercast.cloud.security.credentials import hash_token
from layercast.cloud.server import CloudServer
from layercast.cloud.web.app import build_web_server, create_app
from layercast.cloud.web.passwords import hash_password
from layercast.cloud.web.settings import WebSettings, parse_entries
from layercast.edge.app import EdgeApp
from layercast.edge.config import load_edge_config
from layercast.edge.encoder import Encoder
from layercast.edge.enhancement_store import EnhancementStore
from layercast.edge.sealing import AesGcmSealer, encode_key, new_key
from layercast.shared.errors import LayercastError
from layercast.shared.rpc import operator_pb2, operator_pb2_grpc
from tests.cloud.conftest import EdgeStream, cloud_config, make_task_codec
from tests.cloud.web.stack import csrf_from, eventually

CAMERA_TOKENS = {"cam-s": "cam-s-token-Q7f2" + "s" * 20, "cam-t": "cam-t-token-Zp91" + "t" * 20}
OPERATOR_TOKENS = {
    "alice": "op-alice-Hq81" + "a" * 24,
    "dash": "op-dash-Lm40" + "d" * 24,
    "web": "op-web-Vv27" + "w" * 24,
}
PASSWORDS = {"alice": "alice-pw-Rk3!x9", "bob": "bob-pw-Jt6?q2"}
ROBOT_TOKEN = "robot-web-token-Ub55" + "r" * 20
SESSION_KEY = "session-signing-key-Fz09" + "k" * 24
STORE_KEY = new_key()
#: Wrong guesses are secrets too (a typo of the real one, another system's password).
GUESSES = {
    "camera": "cam-guess-Yy72" + "g" * 20,
    "operator": "op-guess-Nn13" + "g" * 20,
    "password": "alice-pw-Rk3!x8",
    "robot": "robot-guess-Cc88" + "g" * 20,
    "store_key": encode_key(new_key()),
}


def secrets_to_look_for() -> dict[str, str]:
    found = {f"camera token {c}": t for c, t in CAMERA_TOKENS.items()}
    found.update({f"operator token {n}": t for n, t in OPERATOR_TOKENS.items()})
    found.update({f"password of {u}": p for u, p in PASSWORDS.items()})
    found.update({"robot token": ROBOT_TOKEN, "session key": SESSION_KEY})
    found.update({"store key (base64)": encode_key(STORE_KEY), "store key (hex)": STORE_KEY.hex()})
    found.update({f"guessed {k}": v for k, v in GUESSES.items()})
    for label, value in list(found.items()):  # a token's hash identifies it too
        found[f"sha256 of {label}"] = hashlib.sha256(value.encode()).hexdigest()
    return found


class Collect(logging.Handler):
    """Every log record, formatted as a log file would hold it (tracebacks included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs():
    handler = Collect()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


async def scrape(url: str) -> str:
    """A /metrics page (asynchronously: the metrics server runs on this event loop)."""
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(url)
        assert r.status_code == 200
        return r.text


def config_errors(tmp_path: Path) -> list[str]:
    """Configurations with credentials where they do not belong, loaded in process."""
    out = []
    base = {"insecure": True, "data_dir": str(tmp_path / "c"), "auth.allow_any_camera": True}
    attempts = [
        lambda: load_cloud_config(
            overrides={**base, "auth.operator_tokens": [f"alice={OPERATOR_TOKENS['alice']}"]}, environ={}
        ),
        lambda: load_cloud_config(
            overrides={**base, "auth.camera_tokens": {"cam-s": CAMERA_TOKENS["cam-s"]}}
        ),
        lambda: load_cloud_config(
            overrides=base, environ={"LAYERCAST_CLOUD_AUTH__OPERATOR_TOKENS": OPERATOR_TOKENS["dash"]}
        ),
        lambda: load_edge_config(overrides={"token": {"value": CAMERA_TOKENS["cam-t"]}}, environ={}),
        lambda: load_edge_config(overrides={"store.encryption_key": 1234}, environ={}),
        lambda: parse_entries([f"alice={PASSWORDS['alice']}"], kind="users"),
        lambda: WebSettings(users={"alice": (PASSWORDS["alice"], "enhancer")}),
        lambda: WebSettings(tokens={"robot": (ROBOT_TOKEN, "enhancer")}),
    ]
    for attempt in attempts:
        with pytest.raises(LayercastError) as info:
            attempt()
        out.append(str(info.value))
    return out


def cli_errors(tmp_path: Path) -> list[str]:
    """The same mistakes through the command line (its one-line error and any log output)."""
    bad_cloud = tmp_path / "bad-cloud.toml"
    bad_cloud.write_text(
        f'insecure = true\ndata_dir = "{tmp_path / "cli-cloud"}"\n'
        f'[auth]\ncamera_tokens = ["cam-s={CAMERA_TOKENS["cam-s"]}"]\n'
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LAYERCAST_EDGE_STORE__ENCRYPTION_KEY": GUESSES["password"]}
    runs = [
        [sys.executable, "-m", "layercast", "-vv", "cloud", "--config", str(bad_cloud)],
        [
            sys.executable,
            "-m",
            "layercast",
            "-vv",
            "edge",
            "--data-dir",
            str(tmp_path / "cli-edge"),
            "--token",
            CAMERA_TOKENS["cam-t"],
            "--insecure",
        ],
    ]
    # Both at once: each spends its time starting an interpreter, and they share nothing.
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for cmd in runs
    ]
    out = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 1, stdout + stderr
            out.append(stdout + stderr)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert "not a token hash" in out[0] and "store.encryption_key" in out[1], out
    return out


async def test_no_secret_in_logs_metrics_or_error_messages(tmp_path, logs):
    torch.set_num_threads(1)
    seen: dict[str, list[str]] = {"errors": [], "http": [], "metrics": []}
    codec = make_task_codec("detection")
    cfg = cloud_config(
        tmp_path,
        metrics_port=0,
        enhancement_timeout_s=10.0,
        **{
            "auth.camera_tokens": [f"{c}={hash_token(t)}" for c, t in CAMERA_TOKENS.items()],
            "auth.operator_tokens": [f"{n}={hash_token(t)}" for n, t in OPERATOR_TOKENS.items()],
            "auth.enhancers": ["alice", "web"],
        },
    )
    cloud = CloudServer(cfg, codec=codec)
    await cloud.start()
    encoder = Encoder(codec, device="cpu", batch_max=2)

    def edge(cam: str, token: str, **extra) -> EdgeApp:
        values = {
            "camera_id": cam,
            "token": token,
            "data_dir": str(tmp_path / cam),
            "link.cloud": cloud.target,
            "link.insecure": True,
            "link.backoff.initial_s": 0.05,
            "link.backoff.max_s": 0.2,
            "source.spec": "synthetic",
            "source.fps": 5.0,
            "source.width": 64,
            "source.height": 48,
            "metrics_port": 0,
            **extra,
        }
        return EdgeApp(load_edge_config(overrides=values, environ={}), encoder=encoder)

    good = edge("cam-s", CAMERA_TOKENS["cam-s"], **{"store.encryption_key": encode_key(STORE_KEY)})
    bad = edge("cam-t", GUESSES["camera"])  # a wrong token: refused, retried, refused ...
    tasks = [asyncio.create_task(good.run()), asyncio.create_task(bad.run())]
    settings = WebSettings(
        cloud_target=cloud.target,
        cloud_token=OPERATOR_TOKENS["web"],
        cloud_insecure=True,
        secret_key=SESSION_KEY,
        users={
            "alice": (hash_password(PASSWORDS["alice"]), "enhancer"),
            "bob": (hash_password(PASSWORDS["bob"]), "viewer"),
        },
        tokens={"robot": (hash_token(ROBOT_TOKEN), "enhancer")},
        audit_log=tmp_path / "web" / "audit.jsonl",
    )
    web = build_web_server(create_app(settings), "127.0.0.1", 0)
    web_task = asyncio.create_task(web.serve())
    await web.wait_started()
    try:
        await eventually(
            lambda: cloud.auth_refusals.counts["bad_credentials"] >= 2, 30, "the wrong token refused"
        )
        bad.request_stop()

        async with aio.insecure_channel(cloud.target) as ch:
            # A camera presenting another camera's token.
            e = EdgeStream(ch)
            e.hello("cam-t", CAMERA_TOKENS["cam-s"], codec.base_model_id)
            with pytest.raises(aio.AioRpcError) as info:
                await e.recv_kind("welcome")
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            seen["errors"].append(info.value.details())
            op = operator_pb2_grpc.OperatorStub(ch)
            calls = [
                ([("authorization", f"Bearer {GUESSES['operator']}")], grpc.StatusCode.UNAUTHENTICATED),
                ([("authorization", OPERATOR_TOKENS["alice"])], grpc.StatusCode.UNAUTHENTICATED),  # no scheme
                ([("authorization", f"Bearer {OPERATOR_TOKENS['dash']}")], grpc.StatusCode.PERMISSION_DENIED),
            ]
            for metadata, code in calls:
                with pytest.raises(aio.AioRpcError) as info:
                    await op.Enhance(
                        operator_pb2.EnhanceRequest(
                            frame=operator_pb2.FrameRef(camera_id="cam-s", sequence=1)
                        ),
                        metadata=metadata,
                        timeout=10,
                    )
                assert info.value.code() == code
                seen["errors"].append(f"{info.value.details()} {info.value.debug_error_string()}")

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web.bound_port}", timeout=30) as c:

            async def sign_in(user: str, password: str) -> httpx.Response:
                page = await c.get("/login")
                return await c.post(
                    "/login",
                    data={"username": user, "password": password, "csrf_token": csrf_from(page.text)},
                )

            r = await sign_in("alice", GUESSES["password"])
            assert r.status_code != 303
            seen["http"].append(r.text)
            r = await c.get("/api/cameras", headers={"Authorization": f"Bearer {GUESSES['robot']}"})
            assert r.status_code == 401
            seen["http"].append(r.text)
            assert (await sign_in("bob", PASSWORDS["bob"])).status_code == 303
            csrf = (await c.get("/api/session")).json()["csrf_token"]
            seq = await eventually(lambda: _newest(c, "cam-s"), 120, "a stored frame of cam-s")
            r = await c.post(f"/api/frames/cam-s/{seq}/enhance", headers={"X-CSRF-Token": csrf})
            assert r.status_code == 403
            seen["http"].extend([r.text, (await c.get("/api/cameras")).text])
            c.cookies.clear()
            assert (await sign_in("alice", PASSWORDS["alice"])).status_code == 303
            csrf = (await c.get("/api/session")).json()["csrf_token"]
            r = await c.post(f"/api/frames/cam-s/{seq}/enhance", headers={"X-CSRF-Token": csrf})
            assert r.status_code == 200, r.text[:500]  # decrypted from the edge's encrypted store
            body = r.json()
            body.pop("image")
            seen["http"].append(str(body))

        assert cloud.metrics_server is not None and good.metrics_server is not None
        seen["metrics"] += [await scrape(cloud.metrics_server.url), await scrape(good.metrics_server.url)]
    finally:
        good.request_stop()
        bad.request_stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        web.should_exit = True
        await asyncio.wait_for(web_task, 15)
        await cloud.stop(5)
        encoder.close()

    # The edge's store read with the wrong key.
    store = EnhancementStore(
        good.config.store_dir, "cam-s", max_bytes=1 << 30, max_age_s=3600, sealer=AesGcmSealer(os.urandom(32))
    )
    with pytest.raises(LayercastError) as info:
        store.get(seq)
    seen["errors"].append(str(info.value))
    seen["errors"] += config_errors(tmp_path)
    seen["cli"] = cli_errors(tmp_path)
    seen["audit"] = [cloud.audit.path.read_text(), settings.audit_log.read_text()]
    seen["logs"] = logs.lines

    # The collection is real: it holds the refusals it must not leak from.
    text = {k: "\n".join(v) for k, v in seen.items()}
    assert "refused a camera stream" in text["logs"] and "bad_credentials" in text["metrics"]
    assert "viewer role" in text["errors"] and "operator_role" in text["metrics"]
    assert '"user":"web:alice"' in text["audit"] and '"outcome":"refused"' in text["audit"]
    assert "layercast_edge" in text["metrics"] and "wrong" in text["errors"].lower()
    leaks = [
        f"{label} in {where}"
        for label, secret in secrets_to_look_for().items()
        for where, blob in text.items()
        if secret in blob
    ]
    assert leaks == [], leaks
    print(f"\nNO SECRETS: {sum(len(v) for v in seen.values())} texts, {len(logs.lines)} log records checked")


async def _newest(c: httpx.AsyncClient, cam: str) -> int | None:
    r = await c.get(f"/api/cameras/{cam}/frames")
    frames = r.json().get("frames", []) if r.status_code == 200 else []
    return frames[0]["sequence"] if frames else None
