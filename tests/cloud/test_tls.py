"""TLS on the cloud's port, mutual TLS for cameras, and camera identity from credentials: real
servers on 127.0.0.1 with certificates made by layercast.shared.pki."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from layercast.cloud.config import CloudConfig, load_cloud_config
from layercast.cloud.security.auth import AuthRefusals, CameraAuthenticator
from layercast.cloud.security.credentials import TokenTable, hash_token
from layercast.cloud.server import CloudServer
from layercast.shared.errors import ConfigError, PermissionDenied, Unauthenticated
from layercast.shared.pki import LocalPki, create_local_pki
from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc, edge_pb2, operator_pb2, operator_pb2_grpc
from layercast.shared.tls import ClientTls, open_channel
from tests.cloud.conftest import TOKENS, EdgeStream, cloud_config

OPERATOR_TOKEN = "operator-token-" + "z" * 24


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPki:
    return create_local_pki(tmp_path_factory.mktemp("pki"), ["cam-a", "cam-b"], operators=["ops", "web"])


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPki:
    """Another CA issuing the same names: its certificates must be worthless to our cloud."""
    return create_local_pki(tmp_path_factory.mktemp("other-pki"), ["cam-a"], operators=["ops"])


def mtls_overrides(pki: LocalPki, **extra) -> dict:
    return {
        "tls.cert": str(pki.server_cert),
        "tls.key": str(pki.server_key),
        "tls.client_ca": str(pki.ca_cert),
        "auth.camera_tokens": [],  # cameras are who their certificates say
        **extra,
    }


def as_camera(pki: LocalPki, cam: str) -> ClientTls:
    cert, key = pki.camera(cam)
    return ClientTls(ca_cert=pki.ca_cert, client_cert=cert, client_key=key)


def as_operator(pki: LocalPki, name: str = "ops") -> ClientTls:
    cert, key = pki.operator(name)
    return ClientTls(ca_cert=pki.ca_cert, client_cert=cert, client_key=key)


def refusals(server: CloudServer, reason: str) -> float | None:
    return server.metrics.registry.get_sample_value("layercast_cloud_auth_refusals_total", {"reason": reason})


@pytest.fixture
async def mtls_cloud(tmp_path, task_codec, pki):
    cfg = cloud_config(
        tmp_path, **mtls_overrides(pki, **{"auth.operator_tokens": [f"ops={hash_token(OPERATOR_TOKEN)}"]})
    )
    server = CloudServer(cfg, codec=task_codec)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(5)


async def refused_hello(channel: aio.Channel, cam: str, token: str, model_id: str) -> aio.AioRpcError:
    e = EdgeStream(channel)
    e.hello(cam, token, model_id)
    with pytest.raises(aio.AioRpcError) as info:
        await e.recv(10)
    return info.value


async def test_mutual_tls_stream_end_to_end(mtls_cloud, task_codec, frames, pki):
    assert mtls_cloud.transport == "mutual TLS"
    bearer = [("authorization", f"Bearer {OPERATOR_TOKEN}")]
    async with open_channel(mtls_cloud.target, as_camera(pki, "cam-a")) as cam_ch:
        e = EdgeStream(cam_ch)
        e.hello("cam-a", "", task_codec.base_model_id, next_sequence=1)  # no token: the certificate is enough
        welcome = await e.recv_kind("welcome")
        assert welcome.initial_credits > 0
        e.frame(1, frames[0].base)
        assert (await e.recv_kind("ack")).sequence == 1
        async with open_channel(mtls_cloud.target, as_operator(pki)) as op_ch:
            call = analytics_pb2_grpc.AnalyticsStub(op_ch).Subscribe(
                analytics_pb2.SubscribeRequest(camera_ids=["cam-a"]), metadata=bearer
            )
            event = await call.read()
            call.cancel()
            assert (event.result.camera_id, event.result.sequence) == ("cam-a", 1)
            cams = await operator_pb2_grpc.OperatorStub(op_ch).ListCameras(
                operator_pb2.ListCamerasRequest(), metadata=bearer, timeout=5
            )
            assert [c.camera_id for c in cams.cameras] == ["cam-a"]
            # the operator's certificate is an identity of its own; a wrong token is never ignored
            cams = await operator_pb2_grpc.OperatorStub(op_ch).ListCameras(
                operator_pb2.ListCamerasRequest(), timeout=5
            )
            assert [c.camera_id for c in cams.cameras] == ["cam-a"]
            with pytest.raises(aio.AioRpcError) as info:
                await operator_pb2_grpc.OperatorStub(op_ch).ListCameras(
                    operator_pb2.ListCamerasRequest(), metadata=[("authorization", "Bearer guess")], timeout=5
                )
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        e.close()
    assert refusals(mtls_cloud, "operator_token") == 1


@pytest.mark.parametrize("who", ["no certificate", "other CA's camera", "other CA's operator"])
async def test_client_without_a_certificate_of_our_ca_is_refused_in_the_handshake(
    mtls_cloud, pki, other_pki, who
):
    tls = {
        "no certificate": ClientTls(ca_cert=pki.ca_cert),
        "other CA's camera": ClientTls(
            ca_cert=pki.ca_cert,
            client_cert=other_pki.camera("cam-a")[0],
            client_key=other_pki.camera("cam-a")[1],
        ),
        "other CA's operator": ClientTls(
            ca_cert=pki.ca_cert,
            client_cert=other_pki.operator("ops")[0],
            client_key=other_pki.operator("ops")[1],
        ),
    }[who]
    async with open_channel(mtls_cloud.target, tls) as ch:
        with pytest.raises(aio.AioRpcError) as info:
            await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # and the server goes on serving the rightful clients
    async with open_channel(mtls_cloud.target, as_operator(pki)) as ch:
        resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_client_refuses_a_server_its_ca_did_not_sign(mtls_cloud, pki, other_pki):
    cert, key = pki.operator("ops")
    tls = ClientTls(ca_cert=other_pki.ca_cert, client_cert=cert, client_key=key)
    async with open_channel(mtls_cloud.target, tls) as ch:
        with pytest.raises(aio.AioRpcError) as info:
            await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_camera_certificate_cannot_claim_another_camera(mtls_cloud, task_codec, pki):
    assert refusals(mtls_cloud, "cert_other_camera") == 0
    async with open_channel(mtls_cloud.target, as_camera(pki, "cam-a")) as ch:
        err = await refused_hello(ch, "cam-b", "", task_codec.base_model_id)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "cam-a" in err.details() and "cam-b" in err.details()
        assert refusals(mtls_cloud, "cert_other_camera") == 1
        # the same certificate still streams as itself
        e = EdgeStream(ch)
        e.hello("cam-a", "", task_codec.base_model_id, next_sequence=1)
        await e.recv_kind("welcome")
        e.close()
    assert mtls_cloud.registry.is_online("cam-b") is False


async def test_certificate_and_token_must_name_the_same_camera(tmp_path, task_codec, pki):
    tokens = [f"{cam}={hash_token(tok)}" for cam, tok in TOKENS.items()]
    cfg = cloud_config(tmp_path, **mtls_overrides(pki, **{"auth.camera_tokens": tokens}))
    server = CloudServer(cfg, codec=task_codec)
    await server.start()
    try:
        async with open_channel(server.target, as_camera(pki, "cam-a")) as ch:
            err = await refused_hello(ch, "cam-a", TOKENS["cam-b"], task_codec.base_model_id)
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED
            assert TOKENS["cam-b"] not in err.details()
            err = await refused_hello(ch, "cam-a", "not-a-token", task_codec.base_model_id)
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            e = EdgeStream(ch)
            e.hello("cam-a", TOKENS["cam-a"], task_codec.base_model_id, next_sequence=1)
            await e.recv_kind("welcome")
            e.close()
        assert refusals(server, "token_other_camera") == 1 and refusals(server, "bad_credentials") == 1
    finally:
        await server.stop(5)


async def test_camera_certificate_is_kept_off_the_operator_apis(mtls_cloud, pki):
    bearer = [("authorization", f"Bearer {OPERATOR_TOKEN}")]  # even with a stolen operator token
    async with open_channel(mtls_cloud.target, as_camera(pki, "cam-a")) as ch:
        with pytest.raises(aio.AioRpcError) as info:
            await operator_pb2_grpc.OperatorStub(ch).ListCameras(
                operator_pb2.ListCamerasRequest(), metadata=bearer, timeout=5
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        call = analytics_pb2_grpc.AnalyticsStub(ch).Subscribe(
            analytics_pb2.SubscribeRequest(), metadata=bearer
        )
        with pytest.raises(aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refusals(mtls_cloud, "camera_cert_operator_api") == 2


async def test_operator_certificate_names_the_operator_and_its_role(tmp_path, task_codec, pki):
    """The certificate's ``layercast:operator:<name>`` is the caller: ``web`` (listed in
    auth.enhancers) may Enhance, ``ops`` may only view; the audit log names them."""
    cfg = cloud_config(
        tmp_path, **mtls_overrides(pki, **{"auth.operator_tokens": [], "auth.enhancers": ["web"]})
    )
    server = CloudServer(cfg, codec=task_codec)
    await server.start()
    request = operator_pb2.EnhanceRequest(frame=operator_pb2.FrameRef(camera_id="cam-a", sequence=5))
    try:
        async with open_channel(server.target, as_operator(pki, "ops")) as ch:
            op = operator_pb2_grpc.OperatorStub(ch)
            assert list((await op.ListCameras(operator_pb2.ListCamerasRequest(), timeout=5)).cameras) == []
            with pytest.raises(aio.AioRpcError) as info:
                await op.Enhance(request, timeout=5)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED and "'ops'" in info.value.details()
        async with open_channel(server.target, as_operator(pki, "web")) as ch:
            with pytest.raises(aio.AioRpcError) as info:  # allowed: the frame is simply not there
                await operator_pb2_grpc.OperatorStub(ch).Enhance(request, timeout=5)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert [(a["user"], a["role"], a["outcome"]) for a in server.audit.read()] == [
            ("ops", "viewer", "refused"),
            ("web", "enhancer", "not_found"),
        ]
        assert refusals(server, "operator_role") == 1
    finally:
        await server.stop(5)


async def test_operator_certificate_cannot_open_a_camera_stream(mtls_cloud, task_codec, pki):
    async with open_channel(mtls_cloud.target, as_operator(pki)) as ch:
        err = await refused_hello(ch, "cam-a", "", task_codec.base_model_id)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refusals(mtls_cloud, "cert_not_camera") == 1


async def test_server_tls_with_tokens_camera_and_operator(tmp_path, task_codec, pki):
    """TLS without client certificates: cameras by token, a token of cam-a cannot claim cam-b,
    and an operator reaches the APIs with server-authenticated TLS and its bearer token."""
    cfg = cloud_config(
        tmp_path,
        **{
            "tls.cert": str(pki.server_cert),
            "tls.key": str(pki.server_key),
            "auth.operator_tokens": [f"ops={hash_token(OPERATOR_TOKEN)}"],
        },
    )
    server = CloudServer(cfg, codec=task_codec)
    await server.start()
    try:
        assert server.transport == "TLS"
        async with open_channel(server.target, ClientTls(ca_cert=pki.ca_cert)) as ch:
            err = await refused_hello(ch, "cam-b", TOKENS["cam-a"], task_codec.base_model_id)
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED and TOKENS["cam-a"] not in err.details()
            err = await refused_hello(ch, "cam-b", "wrong", task_codec.base_model_id)
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            e = EdgeStream(ch)
            e.hello("cam-a", TOKENS["cam-a"], task_codec.base_model_id, next_sequence=1)
            await e.recv_kind("welcome")
            cams = await operator_pb2_grpc.OperatorStub(ch).ListCameras(
                operator_pb2.ListCamerasRequest(),
                metadata=[("authorization", f"Bearer {OPERATOR_TOKEN}")],
                timeout=5,
            )
            assert [c.camera_id for c in cams.cameras] == ["cam-a"]
            e.close()
        assert refusals(server, "token_other_camera") == 1 and refusals(server, "bad_credentials") == 1
        # plain text to a TLS port gets nowhere
        async with aio.insecure_channel(server.target) as ch:
            with pytest.raises(aio.AioRpcError) as info:
                await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(5)


def test_no_tls_and_no_insecure_is_a_config_error(tmp_path):
    base = {"auth.allow_any_camera": True, "data_dir": str(tmp_path)}
    with pytest.raises(ConfigError, match="TLS is required.*insecure = true"):
        load_cloud_config(overrides=base, environ={})
    with pytest.raises(ConfigError, match="tls.cert and tls.key"):
        load_cloud_config(overrides={**base, "tls.cert": "server.pem"}, environ={})
    with pytest.raises(ConfigError, match="choose one"):
        load_cloud_config(
            overrides={**base, "insecure": True, "tls.cert": "s.pem", "tls.key": "s.key"}, environ={}
        )
    cfg = load_cloud_config(overrides=base, environ={"LAYERCAST_CLOUD_INSECURE": "true"})
    assert cfg.insecure


async def test_server_refuses_to_start_without_tls_or_insecure(tmp_path, task_codec):
    cfg = CloudConfig(listen="127.0.0.1", port=0, data_dir=tmp_path / "cloud")  # built without validation
    server = CloudServer(cfg, codec=task_codec)
    with pytest.raises(ConfigError, match="TLS is required"):
        await server.start()
    assert server.port is None and not (tmp_path / "cloud").exists()


async def test_unreadable_certificate_is_a_config_error(tmp_path, task_codec, pki):
    cfg = cloud_config(
        tmp_path, **{"tls.cert": str(tmp_path / "missing.pem"), "tls.key": str(pki.server_key)}
    )
    with pytest.raises(ConfigError, match="tls.cert.*missing.pem"):
        await CloudServer(cfg, codec=task_codec).start()


async def test_insecure_is_logged_as_a_warning(tmp_path, task_codec, caplog):
    server = CloudServer(cloud_config(tmp_path), codec=task_codec)
    with caplog.at_level(logging.WARNING, logger="layercast.cloud"):
        await server.start()
    try:
        assert server.transport == "plain text"
        warnings = [
            r for r in caplog.records if r.levelno == logging.WARNING and "plain-text" in r.getMessage()
        ]
        assert len(warnings) == 1 and server.config.address in warnings[0].getMessage()
    finally:
        await server.stop(5)


class _Context:
    """A servicer context whose transport proved nothing (no client certificate)."""

    def auth_context(self) -> dict:
        return {"transport_security_type": [b"ssl"]}


def test_camera_without_certificate_when_required_is_unauthenticated():
    counts = AuthRefusals()
    table = TokenTable.parse([f"cam-a={hash_token(TOKENS['cam-a'])}"])
    auth = CameraAuthenticator(table, require_cert=True, refusals=counts)
    hello = edge_pb2.Hello(camera_id="cam-a", token=TOKENS["cam-a"])  # a valid token is not enough
    with pytest.raises(Unauthenticated, match="client certificate"):
        auth.authenticate(hello, _Context())
    assert counts.counts["no_client_cert"] == 1 and auth.refused == 1
    relaxed = CameraAuthenticator(table, refusals=counts)
    assert relaxed.authenticate(hello, _Context()) == "cam-a"
    with pytest.raises(PermissionDenied):
        relaxed.authenticate(edge_pb2.Hello(camera_id="cam-b", token=TOKENS["cam-a"]), _Context())
    assert counts.counts["token_other_camera"] == 1


def test_keys_are_private(pki: LocalPki):
    for path in [pki.layout.ca_key, pki.server_key, pki.camera("cam-a")[1], pki.operator("ops")[1]]:
        assert Path(path).stat().st_mode & 0o777 == 0o600
