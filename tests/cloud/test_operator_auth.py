"""Closed by default: the Operator and Analytics APIs need an identity (a token or an operator
certificate, see test_tls.py), and the development switch that lifts it works on loopback only
(real servers on 127.0.0.1, real stubs)."""

from __future__ import annotations

import logging

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from layercast.cloud.config import load_cloud_config
from layercast.cloud.server import CloudServer
from layercast.shared.errors import ConfigError
from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc, operator_pb2, operator_pb2_grpc
from tests.cloud.conftest import OPERATOR_METADATA, cloud_config

ENHANCE = operator_pb2.EnhanceRequest(frame=operator_pb2.FrameRef(camera_id="cam-a", sequence=1))


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_no_operator_credentials_configured_means_every_operator_call_is_refused(
    tmp_path, task_codec, frames, caplog
):
    """The default configuration (no ``auth.operator_tokens``, no client CA): nothing is open."""
    cfg = cloud_config(tmp_path, **{"auth.operator_tokens": []})
    server = CloudServer(cfg, codec=task_codec)
    with caplog.at_level(logging.WARNING, logger="layercast.cloud.server"):
        await server.start()
    assert "every Operator and Analytics call is refused" in caplog.text
    try:
        async with aio.insecure_channel(server.target) as ch:
            op, analytics = operator_pb2_grpc.OperatorStub(ch), analytics_pb2_grpc.AnalyticsStub(ch)
            codes = [
                await _code(op.ListCameras(operator_pb2.ListCamerasRequest(), timeout=5)),
                await _code(op.GetPreview(operator_pb2.FrameRef(camera_id="cam-a", sequence=1), timeout=5)),
                await _code(op.Enhance(ENHANCE, timeout=5)),
                await _code(analytics.Infer(analytics_pb2.InferRequest(base=frames[0].base), timeout=5)),
            ]
            assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 4
            sub = analytics.Subscribe(analytics_pb2.SubscribeRequest())
            with pytest.raises(aio.AioRpcError) as info:
                await sub.read()
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "operator token" in info.value.details() and "operator certificate" in info.value.details()
            # the server goes on serving: health for probes
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert server.auth_refusals.counts["no_operator_identity"] == 5
        (line,) = server.audit.read()  # the refused Enhance is audited
        assert (line["user"], line["outcome"]) == ("-", "unauthenticated")
    finally:
        await server.stop(5)


async def test_a_token_without_the_enhancer_role_may_view_but_not_enhance(cloud):
    """``cloud_config``'s operator is an enhancer; a server listing nobody makes it a viewer."""
    async with aio.insecure_channel(cloud.target) as ch:
        op = operator_pb2_grpc.OperatorStub(ch)
        await op.ListCameras(operator_pb2.ListCamerasRequest(), metadata=OPERATOR_METADATA, timeout=5)
        assert await _code(op.Enhance(ENHANCE, metadata=OPERATOR_METADATA, timeout=5)) == (
            grpc.StatusCode.NOT_FOUND  # past authorisation; frame 1 was never stored
        )
    cloud.operator_auth.roles.enhancers = frozenset()
    async with aio.insecure_channel(cloud.target) as ch:
        op = operator_pb2_grpc.OperatorStub(ch)
        assert await _code(op.Enhance(ENHANCE, metadata=OPERATOR_METADATA, timeout=5)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )


@pytest.mark.parametrize("listen", ["0.0.0.0", "::", "[::]", "10.1.2.3", "cloud.example"])
def test_anonymous_operators_are_refused_at_start_off_loopback(tmp_path, listen):
    overrides = {"insecure": True, "auth.allow_any_camera": True, "data_dir": str(tmp_path), "listen": listen}
    with pytest.raises(ConfigError, match=r"auth.allow_anonymous_operators = true .*loopback address only"):
        load_cloud_config(
            overrides=overrides, environ={"LAYERCAST_CLOUD_AUTH__ALLOW_ANONYMOUS_OPERATORS": "true"}
        )
    load_cloud_config(overrides=overrides, environ={})  # closed: starts


@pytest.mark.parametrize("listen", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_anonymous_operators_are_allowed_on_loopback(tmp_path, listen):
    overrides = {"insecure": True, "auth.allow_any_camera": True, "data_dir": str(tmp_path), "listen": listen}
    cfg = load_cloud_config(overrides={**overrides, "auth.allow_anonymous_operators": True}, environ={})
    assert cfg.auth.allow_anonymous_operators


async def test_development_switch_serves_anonymous_viewers_with_a_warning(tmp_path, task_codec, caplog):
    cfg = cloud_config(tmp_path, **{"auth.operator_tokens": [], "auth.allow_anonymous_operators": True})
    server = CloudServer(cfg, codec=task_codec)
    with caplog.at_level(logging.WARNING, logger="layercast.cloud.server"):
        await server.start()
    assert "WITHOUT credentials" in caplog.text and "viewer" in caplog.text
    try:
        async with aio.insecure_channel(server.target) as ch:
            op = operator_pb2_grpc.OperatorStub(ch)
            assert list((await op.ListCameras(operator_pb2.ListCamerasRequest(), timeout=5)).cameras) == []
            with pytest.raises(aio.AioRpcError) as info:
                await op.Enhance(ENHANCE, timeout=5)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "'anonymous' has the viewer role" in info.value.details()
    finally:
        await server.stop(5)
