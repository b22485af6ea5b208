"""The page's parts on their own: settings, passwords, audit log, mailboxes, depth colours, errors, CLI."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import threading

import grpc
import numpy as np
import pytest
from grpc import aio
from PIL import Image

from layercast.cloud.security.audit import AuditLog
from layercast.cloud.web.client import map_rpc_error
from layercast.cloud.web.live import BrowserStream, LiveFeed, sse
from layercast.cloud.web.passwords import hash_password, hash_token, token_matches, verify_password
from layercast.cloud.web.results import colourise_depth, depth_metres, depth_png, depth_range, result_json
from layercast.cloud.web.settings import WebSettings, demo_settings, load_web_settings, parse_entries
from layercast.cloud.web.signin import LoginThrottle
from layercast.commands.web import register
from layercast.shared.errors import ConfigError
from layercast.shared.rpc import common_pb2


def test_password_hashes_verify_only_the_right_password():
    h = hash_password("s3cret pass")
    assert h.startswith("$argon2id$") and "s3cret" not in h
    assert verify_password(h, "s3cret pass")
    assert not verify_password(h, "s3cret pas")
    assert not verify_password(None, "s3cret pass")
    assert not verify_password("$argon2id$garbage", "x")
    assert hash_password("same") != hash_password("same")  # salted
    assert token_matches(hash_token("tok"), "tok") and not token_matches(hash_token("tok"), "tok2")


def test_demo_settings_hash_the_password_at_start(tmp_path):
    s = demo_settings(
        cloud_target="127.0.0.1:1", username="operator", password="pw-123", data_dir=tmp_path / "w"
    )
    pw_hash, role = s.users["operator"]
    assert role == "enhancer" and verify_password(pw_hash, "pw-123")
    assert s.audit_log == tmp_path / "w" / "audit.jsonl" and (tmp_path / "w").is_dir()
    assert "pw-123" not in repr(s) and pw_hash not in repr(s)


@pytest.mark.parametrize(
    ("users", "tokens", "needle"),
    [
        ({"a": ("plaintext", "viewer")}, {}, "plaintext password"),
        ({"a": (hash_password("x"), "admin")}, {}, "role 'admin'"),
        ({"bad name": (hash_password("x"), "viewer")}, {}, "name 'bad name'"),
        ({}, {"t": ("abc", "viewer")}, "sha256"),
        ({"a": (hash_password("x"), "viewer")}, {"a": (hash_token("t"), "viewer")}, "both"),
    ],
)
def test_settings_refuse_bad_users_and_tokens(users, tokens, needle):
    with pytest.raises(ConfigError, match=needle):
        WebSettings(users=users, tokens=tokens)


def test_settings_from_toml(tmp_path):
    h = hash_password("pw")
    token_file = tmp_path / "cloud.token"
    token_file.write_text("op-token\n")
    cfg_file = tmp_path / "web.toml"
    cfg_file.write_text(
        f'cloud = "10.1.2.3:50051"\nport = 0\ncloud_token_file = "{token_file}"\n'
        f'users = ["alice=enhancer:{h}"]\ntokens = ["bot=viewer:{hash_token("b")}"]\n'
        f'audit_log = "{tmp_path / "a.jsonl"}"\n'
    )
    cfg, s = load_web_settings(cfg_file, overrides={"listen": "0.0.0.0"}, environ={})
    assert (cfg.listen, cfg.port) == ("0.0.0.0", 0)
    assert s.cloud_target == "10.1.2.3:50051" and s.cloud_token == "op-token"
    assert s.users == {"alice": (h, "enhancer")} and s.tokens["bot"][1] == "viewer"
    with pytest.raises(ConfigError, match="name=role:hash"):
        parse_entries(["alice-enhancer"], kind="users")
    with pytest.raises(ConfigError, match="unknown configuration key"):
        load_web_settings(overrides={"colud": "x"}, environ={})


def test_audit_log_appends_json_lines_from_many_threads(tmp_path):
    log = AuditLog(tmp_path / "sub" / "audit.jsonl")

    def writer(i: int) -> None:
        for j in range(50):
            log.write(user=f"u{i}", camera_id="c", sequence=j, outcome="ok")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (tmp_path / "sub" / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 200
    records = [json.loads(s) for s in lines]
    assert sorted((r["user"], r["sequence"]) for r in records) == sorted(
        (f"u{i}", j) for i in range(4) for j in range(50)
    )
    assert all(r["time"].endswith("+00:00") and r["ts"] > 0 for r in records)
    assert (tmp_path / "sub" / "audit.jsonl").stat().st_mode & 0o077 == 0


def test_login_throttle_counts_failures_per_address():
    t = LoginThrottle(max_failures=3, window_s=60)
    for _ in range(3):
        assert t.blocked_for("1.2.3.4") == 0
        t.failed("1.2.3.4")
    assert 55 < t.blocked_for("1.2.3.4") <= 60
    assert t.blocked_for("5.6.7.8") == 0
    t.succeeded("1.2.3.4")
    assert t.blocked_for("1.2.3.4") == 0


async def test_a_stalled_browser_loses_its_oldest_events_and_slows_no_one():
    feed = LiveFeed(client=None, mailbox=8, max_streams=2)  # type: ignore[arg-type]
    stalled = feed.open_stream()
    reader = feed.open_stream()
    assert stalled is not None and reader is not None
    assert feed.open_stream() is None  # max_streams
    got: list[str] = []
    for i in range(1000):
        feed._broadcast(sse("result", {"sequence": i}))  # never blocks
        if i % 4 == 3:
            got += await reader.take(0.1) or []
    got += await reader.take(0) or []
    assert len(got) == 1001 and reader.dropped == 0  # the status and every result reached the reader
    assert [json.loads(e.split("data: ")[1])["sequence"] for e in got if "result" in e] == list(range(1000))
    waiting = await stalled.take(0)
    assert waiting is not None and len(waiting) == 8  # bounded
    assert stalled.dropped == 1000 + 1 - 8  # status + 1000 results, 8 kept
    assert json.loads(waiting[-1].split("data: ")[1])["sequence"] == 999  # the newest are kept
    feed.close_streams()
    assert await reader.take(1.0) == [
        sse("status", {"state": "closed", "message": "the operator page is shutting down"})
    ]
    assert await reader.take(1.0) is None


async def test_browser_stream_take_waits_for_an_event():
    s = BrowserStream(4)
    assert await s.take(0.05) == []
    asyncio.get_running_loop().call_later(0.05, s.push, "x")
    assert await s.take(2.0) == ["x"]


def _depth_result(metres: np.ndarray, scale: float = 0.001) -> common_pb2.Result:
    raw = np.round(metres / scale).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(raw).save(buf, format="PNG")
    h, w = metres.shape
    return common_pb2.Result(
        camera_id="d",
        sequence=1,
        task="depth",
        width=w,
        height=h,
        depth=common_pb2.DepthMap(width=w, height=h, encoding="png16", data=buf.getvalue(), scale=scale),
    )


def test_depth_png16_is_read_in_metres_and_coloured_near_red_far_blue():
    metres = np.tile(np.linspace(1.0, 40.0, 64, dtype=np.float32), (48, 1))
    r = _depth_result(metres)
    back = depth_metres(r.depth)
    assert back.shape == (48, 64) and np.allclose(back, metres, atol=0.001)
    png, (near, far) = depth_png(r.depth)
    assert 1.0 < near < 2.5 and 38.5 < far < 40.0
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    assert rgb.shape == (48, 64, 3)
    left, right = rgb[:, 0].mean(axis=0), rgb[:, -1].mean(axis=0)
    assert left[0] > left[2] + 50  # near: red
    assert right[2] > right[0] and right.sum() < left.sum()  # far: dark blue (turbo's low end)
    js = result_json(r, (near, far))
    assert js["depth"]["near_m"] == pytest.approx(near, abs=1e-3) and js["boxes"] == []


def test_depth_f16_and_flat_maps():
    arr = np.full((4, 5), 3.0, dtype=np.float16)
    d = common_pb2.DepthMap(width=5, height=4, encoding="f16", data=arr.tobytes(), scale=1.0)
    m = depth_metres(d)
    assert m.shape == (4, 5) and np.all(m == 3.0)
    near, far = depth_range(m)
    assert far > near  # a flat map still gets a valid range
    assert Image.open(io.BytesIO(colourise_depth(m, near, far))).size == (5, 4)
    with pytest.raises(ValueError):
        depth_metres(common_pb2.DepthMap(width=5, height=5, encoding="f16", data=arr.tobytes()))


class _FakeRpcError(aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, aio.Metadata(), aio.Metadata(), details=details)


@pytest.mark.parametrize(
    ("code", "details", "status", "kind"),
    [
        (grpc.StatusCode.NOT_FOUND, "past the edge's retention window", 404, "expired"),
        (grpc.StatusCode.UNAVAILABLE, "camera 'c' is offline (no open stream)", 503, "offline"),
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", 502, "unreachable"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", 504, "timeout"),
        (grpc.StatusCode.UNAUTHENTICATED, "missing or wrong operator token", 502, "not_authorised"),
        (grpc.StatusCode.INTERNAL, "boom", 502, "error"),
    ],
)
def test_grpc_statuses_become_clear_messages(code, details, status, kind):
    err = map_rpc_error(_FakeRpcError(code, details), camera_id="c", sequence=7)
    assert (err.http_status, err.kind, err.details) == (status, kind, details)
    assert err.to_json()["grpc_status"] == code.name and err.message


def test_cli_hash_password_and_new_token(monkeypatch, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["web", "--hash-password"])
    monkeypatch.setattr(sys, "stdin", io.StringIO("my passphrase\n"))
    assert args.func(args) == 0
    printed = capsys.readouterr().out.strip()
    assert verify_password(printed, "my passphrase")
    args = parser.parse_args(["web", "--new-token"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert token_matches(out["hash"], out["token"])
    args = parser.parse_args(["web", "--cloud", "127.0.0.1:1"])
    assert args.func(args) == 2  # no users configured: refuses to start
    assert "no users configured" in capsys.readouterr().err


class _Req:
    def __init__(self, session: dict, headers: dict | None = None, store=None) -> None:
        from types import SimpleNamespace

        self.session = session
        self.headers = headers or {}
        self.app = SimpleNamespace(state=SimpleNamespace(web=SimpleNamespace(sessions=store)))


def test_sessions_end_a_fixed_time_after_sign_in_on_sign_out_and_when_the_password_changes():
    from layercast.cloud.web.auth import end_session, principal_of, start_session
    from layercast.cloud.web.sessions import SessionStore

    now = [1000.0]
    store = SessionStore(max_age_s=600, clock=lambda: now[0])
    h = hash_password("pw")
    s = WebSettings(users={"ann": (h, "viewer")}, session_max_age_s=600)
    req = _Req({}, store=store)
    start_session(req, "ann", h)  # type: ignore[arg-type]
    assert set(req.session) == {"sid", "csrf"}  # the cookie names a session, nothing more
    p = principal_of(req, s)  # type: ignore[arg-type]
    assert p is not None and (p.name, p.role, p.can("view"), p.can("enhance")) == (
        "ann",
        "viewer",
        True,
        False,
    )
    now[0] += 601
    assert principal_of(req, s) is None  # type: ignore[arg-type]
    start_session(req, "ann", h)  # type: ignore[arg-type]
    s2 = WebSettings(users={"ann": (hash_password("new pw"), "viewer")})
    assert principal_of(req, s2) is None  # type: ignore[arg-type]
    s3 = WebSettings(users={"ann": (h, "enhancer")})
    assert principal_of(req, s3).role == "enhancer"  # type: ignore[arg-type,union-attr]  # roles from settings
    copied = _Req(dict(req.session), store=store)  # the same cookie, elsewhere
    assert principal_of(copied, s) is not None  # type: ignore[arg-type]
    end_session(req)  # type: ignore[arg-type]
    assert req.session == {} and principal_of(copied, s) is None  # type: ignore[arg-type]
    assert len(store) == 0
    assert principal_of(_Req({}, {"authorization": "Basic abc"}), s) is None  # type: ignore[arg-type]
