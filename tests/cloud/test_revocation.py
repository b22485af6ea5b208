"""Revoked certificates (``layercast certs revoke`` → ``tls.crl``): refused on every call and
stream over real mutual TLS on 127.0.0.1, open streams ended when the list changes, no restart."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc import aio

from layercast.cli import main
from layercast.cloud.server import CloudServer
from layercast.shared.errors import ConfigError
from layercast.shared.pki import LocalPki, PkiLayout, create_local_pki
from layercast.shared.revocation import read_crl, revoke
from layercast.shared.rpc import operator_pb2, operator_pb2_grpc
from layercast.shared.tls import ClientTls, open_channel
from tests.cloud.conftest import EdgeStream, cloud_config


def serial(cert: Path) -> int:
    return x509.load_pem_x509_certificate(cert.read_bytes()).serial_number


def client(pki: LocalPki, kind: str, name: str) -> ClientTls:
    cert, key = pki.camera(name) if kind == "camera" else pki.operator(name)
    return ClientTls(ca_cert=pki.ca_cert, client_cert=cert, client_key=key)


def refusals(server: CloudServer) -> float | None:
    return server.metrics.registry.get_sample_value(
        "layercast_cloud_auth_refusals_total", {"reason": "revoked"}
    )


def test_certs_revoke_writes_a_crl_signed_by_the_ca(tmp_path, capsys):
    pki = create_local_pki(tmp_path / "pki", ["cam-a", "cam-b"], operators=["ops"])
    layout = PkiLayout(tmp_path / "pki")
    assert main(["certs", "revoke", "--dir", str(layout.root), "cam-b"]) == 0
    assert "crl.pem" in capsys.readouterr().out
    crl_path = layout.root / "crl.pem"
    crl = read_crl(crl_path, pki.ca_cert.read_bytes())
    assert {e.serial_number for e in crl} == {serial(pki.camera("cam-b")[0])}
    # by certificate file, and the earlier entry is kept
    assert main(["certs", "revoke", "--dir", str(layout.root), str(pki.operator("ops")[0])]) == 0
    crl = read_crl(crl_path, pki.ca_cert.read_bytes())
    assert {e.serial_number for e in crl} == {serial(pki.camera("cam-b")[0]), serial(pki.operator("ops")[0])}
    with pytest.raises(ConfigError, match="no certificate for 'cam-z'"):
        revoke(layout, ["cam-z"])
    # a list signed by another CA is worthless
    other = create_local_pki(tmp_path / "other", ["cam-a"])
    with pytest.raises(ConfigError, match="not signed by the CA"):
        read_crl(crl_path, other.ca_cert.read_bytes())
    if shutil.which("openssl"):  # and openssl agrees it is a valid CRL of that CA
        out = subprocess.run(
            ["openssl", "crl", "-in", str(crl_path), "-CAfile", str(pki.ca_cert), "-noout"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0 and "verify OK" in out.stderr + out.stdout, out


@pytest.fixture
async def crl_cloud(tmp_path, task_codec):
    pki = create_local_pki(tmp_path / "pki", ["cam-a", "cam-b"], operators=["ops", "web"])
    layout = PkiLayout(tmp_path / "pki")
    revoke(layout, ["cam-b", "ops"])
    cfg = cloud_config(
        tmp_path,
        **{
            "tls.cert": str(pki.server_cert),
            "tls.key": str(pki.server_key),
            "tls.client_ca": str(pki.ca_cert),
            "tls.crl": str(layout.root / "crl.pem"),
            "tls.crl_check_s": 0.2,
            "auth.camera_tokens": [],
        },
    )
    server = CloudServer(cfg, codec=task_codec)
    await server.start()
    try:
        yield server, pki, layout
    finally:
        await server.stop(5)


async def test_revoked_certificates_are_refused_and_revoking_ends_an_open_stream(
    crl_cloud, task_codec, frames
):
    server, pki, layout = crl_cloud
    list_cameras = operator_pb2.ListCamerasRequest()
    # a revoked camera cannot stream ...
    async with open_channel(server.target, client(pki, "camera", "cam-b")) as ch:
        e = EdgeStream(ch)
        e.hello("cam-b", "", task_codec.base_model_id, next_sequence=1)
        with pytest.raises(aio.AioRpcError) as info:
            await e.recv(10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in info.value.details()
    # ... nor a revoked operator call, while the others are served
    async with open_channel(server.target, client(pki, "operator", "ops")) as ch:
        with pytest.raises(aio.AioRpcError) as info:
            await operator_pb2_grpc.OperatorStub(ch).ListCameras(list_cameras, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in info.value.details()
    assert refusals(server) == 2
    async with (
        open_channel(server.target, client(pki, "camera", "cam-a")) as cam_ch,
        open_channel(server.target, client(pki, "operator", "web")) as op_ch,
    ):
        e = EdgeStream(cam_ch)
        e.hello("cam-a", "", task_codec.base_model_id, next_sequence=1)
        await e.recv_kind("welcome")
        e.frame(1, frames[0].base)
        assert (await e.recv_kind("ack")).sequence == 1
        cams = await operator_pb2_grpc.OperatorStub(op_ch).ListCameras(list_cameras, timeout=5)
        assert [c.camera_id for c in cams.cameras] == ["cam-a"]

        # Revoked while streaming: the list is re-read without a restart and the stream ends.
        revoke(layout, ["cam-a"])
        with pytest.raises(aio.AioRpcError) as info:
            while True:
                await e.recv(10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in info.value.details()
    async with open_channel(server.target, client(pki, "camera", "cam-a")) as ch:
        again = EdgeStream(ch)
        again.hello("cam-a", "", task_codec.base_model_id, next_sequence=2)
        with pytest.raises(aio.AioRpcError) as info:
            await again.recv(10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refusals(server) == 4
    assert server.revocation is not None and server.revocation.crl.reloads == 1


async def test_a_broken_list_keeps_the_previous_one_in_force(crl_cloud, task_codec):
    server, pki, layout = crl_cloud
    (layout.root / "crl.pem").write_text("not a CRL\n")
    async with open_channel(server.target, client(pki, "operator", "ops")) as ch:
        with pytest.raises(aio.AioRpcError) as info:
            await operator_pb2_grpc.OperatorStub(ch).ListCameras(operator_pb2.ListCamerasRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert server.revocation is not None and server.revocation.crl.reloads == 0


def test_crl_needs_a_client_ca(tmp_path):
    with pytest.raises(ConfigError, match="tls.crl needs tls.client_ca"):
        cloud_config(tmp_path, **{"tls.cert": "s.pem", "tls.key": "s.key", "tls.crl": "crl.pem"})
