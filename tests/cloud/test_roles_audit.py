"""Operator roles on the gRPC APIs and the audit log of every Operator.Enhance call (real server,
real stubs, a hand-driven camera answering enhancement requests)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc import aio

from layercast.cloud.config import CloudConfig, load_cloud_config
from layercast.cloud.security.audit import AuditLog
from layercast.cloud.security.credentials import hash_token
from layercast.cloud.security.roles import OperatorRoles, on_behalf_of
from layercast.cloud.server import CloudServer
from layercast.shared.errors import ConfigError
from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc, edge_pb2, operator_pb2, operator_pb2_grpc
from tests.cloud.conftest import TOKENS, EdgeStream, cloud_config

OPERATORS = {
    "alice": "alice-op-token-" + "a" * 20,
    "dash": "dash-op-token-" + "d" * 20,
    "web": "web-op-" + "w" * 24,
}


def bearer(name: str, **extra: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {OPERATORS[name]}"), *extra.items()]


def enhance_request(cam: str = "cam-a", seq: int = 1) -> operator_pb2.EnhanceRequest:
    return operator_pb2.EnhanceRequest(frame=operator_pb2.FrameRef(camera_id=cam, sequence=seq))


# -- configuration ------------------------------------------------------------------------------------
def test_enhancers_must_name_operators_with_tokens(tmp_path):
    base = {"insecure": True, "auth.allow_any_camera": True, "data_dir": str(tmp_path)}
    tokens = [f"{n}={hash_token(t)}" for n, t in OPERATORS.items()]
    with pytest.raises(ConfigError, match="'bob', which has no entry in auth.operator_tokens"):
        load_cloud_config(
            overrides={**base, "auth.operator_tokens": tokens, "auth.enhancers": ["bob"]}, environ={}
        )
    with pytest.raises(ConfigError, match="'alice', which has no entry in auth.operator_tokens"):
        load_cloud_config(overrides={**base, "auth.enhancers": ["alice"]}, environ={})
    # With operator certificates (mutual TLS) a name may be a certificate's, unknown in advance.
    mtls = {**base, "insecure": False, "tls.cert": "s.pem", "tls.key": "s.key", "tls.client_ca": "ca.pem"}
    assert (
        load_cloud_config(overrides={**mtls, "auth.enhancers": ["web"]}, environ={})
        .operator_roles()
        .role_of("web")
        == "enhancer"
    )
    # From TOML and the environment as well (a comma list).
    cfg = load_cloud_config(
        overrides={**base, "auth.operator_tokens": tokens},
        environ={"LAYERCAST_CLOUD_AUTH__ENHANCERS": "alice,web"},
    )
    roles = cfg.operator_roles()
    assert [roles.role_of(n) for n in ("alice", "dash", "web")] == ["enhancer", "viewer", "enhancer"]


def test_roles_default_to_viewer():
    """Without ``auth.enhancers`` nobody may Enhance: not a token, not the anonymous caller."""
    assert CloudConfig().auth.enhancers == []
    roles = OperatorRoles.from_config(None, ["alice", "dash"])
    assert [roles.role_of(n) for n in ("alice", "dash", "")] == ["viewer"] * 3
    assert not roles.allows("alice", "/layercast.v1.Operator/Enhance")
    assert roles.allows("alice", "/layercast.v1.Operator/ListCameras")
    assert "nobody may Enhance" in roles.describe()
    listed = OperatorRoles.from_config(["alice"], ["alice", "dash"])
    assert listed.allows("alice", "/layercast.v1.Operator/Enhance")
    assert not listed.allows("dash", "/layercast.v1.Operator/Enhance")


def test_on_behalf_of_is_bounded_and_checked():
    assert on_behalf_of([("x-layercast-on-behalf-of", "alice")]) == "alice"
    assert on_behalf_of([("x-layercast-on-behalf-of", "al ice\n")]) == "?"
    assert on_behalf_of([("x-layercast-on-behalf-of", "a" * 65)]) == "?"
    assert on_behalf_of([("other", "x")]) == ""


def test_audit_log_path_must_be_writable(tmp_path):
    (tmp_path / "a-directory").mkdir()  # (permission bits would not stop root, which the CI may be)
    with pytest.raises(ConfigError, match="audit_log = .*a-directory.* cannot be written"):
        AuditLog(tmp_path / "a-directory").check_writable()


# -- the server -----------------------------------------------------------------------------------------
@pytest.fixture
async def role_cloud(tmp_path, task_codec):
    cfg = cloud_config(
        tmp_path,
        enhancement_timeout_s=5.0,
        **{
            "auth.operator_tokens": [f"{n}={hash_token(t)}" for n, t in OPERATORS.items()],
            "auth.enhancers": ["alice", "web"],
            "audit_log": str(tmp_path / "logs" / "enhance-audit.jsonl"),
        },
    )
    server = CloudServer(cfg, codec=task_codec)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(5)


async def test_viewer_may_view_but_not_enhance_and_every_enhance_is_audited(role_cloud, task_codec, frames):
    server = role_cloud
    assert server.audit.path == server.config.data_dir.parent / "logs" / "enhance-audit.jsonl"
    async with aio.insecure_channel(server.target) as ch:
        op = operator_pb2_grpc.OperatorStub(ch)
        analytics = analytics_pb2_grpc.AnalyticsStub(ch)
        e = EdgeStream(ch)
        e.hello(
            "cam-a", TOKENS["cam-a"], task_codec.base_model_id, next_sequence=1, capabilities=["enhancement"]
        )
        await e.recv_kind("welcome")
        e.frame(1, frames[1].base)
        await e.recv_kind("ack")

        # A viewer lists, previews and infers ...
        assert [
            c.camera_id
            for c in (
                await op.ListCameras(operator_pb2.ListCamerasRequest(), metadata=bearer("dash"))
            ).cameras
        ] == ["cam-a"]
        await op.GetPreview(operator_pb2.FrameRef(camera_id="cam-a", sequence=1), metadata=bearer("dash"))
        await analytics.Infer(
            analytics_pb2.InferRequest(base=frames[0].base), metadata=bearer("dash"), timeout=30
        )
        # ... but may not Enhance: refused before the camera is asked anything.
        with pytest.raises(aio.AioRpcError) as info:
            await op.Enhance(
                enhance_request(), metadata=bearer("dash", **{"x-request-id": "req-dash-1"}), timeout=10
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "viewer role" in info.value.details() and "auth.enhancers" in info.value.details()
        assert server.router.pending == 0

        # An enhancer acting for a person: the camera is asked, the answer comes back.
        call = asyncio.ensure_future(
            op.Enhance(
                enhance_request(),
                metadata=bearer("web", **{"x-layercast-on-behalf-of": "carol", "x-request-id": "req-web-1"}),
                timeout=30,
            )
        )
        req = await e.recv_kind("enhancement_request")
        e.send(
            enhancement=edge_pb2.EnhancementResponse(
                request_id=req.request_id, sequence=1, enhancement=frames[1].enhancement
            )
        )
        resp = await asyncio.wait_for(call, 30)
        assert resp.enhancement_bytes == len(frames[1].enhancement)

        # A viewer's on-behalf-of claim is not recorded; a missing token is audited too.
        with pytest.raises(aio.AioRpcError):
            await op.Enhance(
                enhance_request(seq=7), metadata=bearer("dash", **{"x-layercast-on-behalf-of": "mallory"})
            )
        with pytest.raises(aio.AioRpcError) as info:
            await op.Enhance(enhance_request(seq=8), metadata=[("authorization", "Bearer guess-0123456789")])
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Allowed but failing: a frame the cloud never stored.
        with pytest.raises(aio.AioRpcError) as info:
            await op.Enhance(enhance_request(seq=99), metadata=bearer("alice"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        e.close()

    lines = server.audit.read()
    assert [(a["user"], a["sequence"], a["outcome"], a["grpc_status"]) for a in lines] == [
        ("dash", 1, "refused", "PERMISSION_DENIED"),
        ("web:carol", 1, "ok", "OK"),
        ("dash", 7, "refused", "PERMISSION_DENIED"),
        ("-", 8, "unauthenticated", "UNAUTHENTICATED"),
        ("alice", 99, "not_found", "NOT_FOUND"),
    ]
    refused, ok = lines[0], lines[1]
    assert (
        refused["role"] == "viewer"
        and refused["request_id"] == "req-dash-1"
        and refused["camera_id"] == "cam-a"
    )
    assert ok["operator"] == "web" and ok["on_behalf_of"] == "carol" and ok["role"] == "enhancer"
    assert ok["request_id"] == "req-web-1" and ok["enhancement_bytes"] == len(frames[1].enhancement)
    assert ok["api"] == "grpc" and ok["peer"].startswith("ipv4:127.0.0.1") and ok["time"].endswith("+00:00")
    assert lines[2]["on_behalf_of"] == ""
    assert server.auth_refusals.counts["operator_role"] == 2
    text = server.audit.path.read_text()
    assert all(tok not in text for tok in OPERATORS.values()) and "guess-0123456789" not in text
    assert server.audit.path.stat().st_mode & 0o077 == 0


async def test_anonymous_enhancer_of_the_development_switch_is_audited(tmp_path, task_codec):
    cfg = cloud_config(
        tmp_path,
        **{
            "auth.operator_tokens": [],
            "auth.allow_anonymous_operators": True,
            "auth.enhancers": ["anonymous"],
        },
    )
    server = CloudServer(cfg, codec=task_codec)
    await server.start()
    try:
        async with aio.insecure_channel(server.target) as ch:
            with pytest.raises(aio.AioRpcError) as info:
                await operator_pb2_grpc.OperatorStub(ch).Enhance(
                    enhance_request("cam-b", 3), metadata=[("x-layercast-on-behalf-of", "zoe")], timeout=10
                )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        (line,) = server.audit.read()
        assert server.audit.path == server.config.data_dir / "audit.jsonl"
        assert (line["user"], line["role"], line["camera_id"], line["outcome"]) == (
            "anonymous:zoe",
            "enhancer",
            "cam-b",
            "not_found",
        )
    finally:
        await server.stop(5)
