"""The link over mutual TLS (certificates made with the openssl command line for the test)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import grpc
import grpc.aio
import pytest
from edge_fake_cloud import FakeCloud, eventually, link_config

from layercast.edge.link import EdgeIdentity, EdgeLink
from layercast.edge.outbox import Outbox
from layercast.edge.stats import EdgeStats
from layercast.shared.rpc import edge_pb2_grpc

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=test-ca", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "cam-1"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext", cwd=d)  # fmt: skip
    return d


async def _serve(pki: Path, servicer: FakeCloud) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    edge_pb2_grpc.add_EdgeLinkServicer_to_server(servicer, server)
    creds = grpc.ssl_server_credentials(
        [((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())],
        root_certificates=(pki / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    return server, port


def _link(tmp_path: Path, address: str, **tls) -> tuple[EdgeLink, Outbox]:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    cfg = link_config(address, insecure=False, **tls)
    ident = EdgeIdentity(camera_id="cam-1", token="", base_model_id="ab" * 8)
    return EdgeLink(cfg, ident, outbox, None, EdgeStats()), outbox


async def test_frames_flow_over_mutual_tls(pki: Path, tmp_path: Path):
    fc = FakeCloud()
    server, port = await _serve(pki, fc)
    link, outbox = _link(
        tmp_path, f"127.0.0.1:{port}",
        ca_cert=pki / "ca.pem", client_cert=pki / "cam-1.pem", client_key=pki / "cam-1.key",
    )  # fmt: skip
    for i in range(3):
        outbox.append(i, b"frame %d" % i)
    stop = asyncio.Event()
    task = asyncio.create_task(link.run(stop))
    try:
        await eventually(lambda: len(outbox) == 0, what="frames acked over TLS")
        assert [f.sequence for f in fc.frames] == [1, 2, 3]
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await server.stop(None)
        outbox.close()


async def test_no_client_certificate_no_stream(pki: Path, tmp_path: Path):
    fc = FakeCloud()
    server, port = await _serve(pki, fc)
    link, outbox = _link(tmp_path, f"127.0.0.1:{port}", ca_cert=pki / "ca.pem")
    outbox.append(0, b"frame")
    stop = asyncio.Event()
    task = asyncio.create_task(link.run(stop))
    try:
        await eventually(lambda: link.stats.reconnects >= 2, what="refused handshakes")
        assert fc.attempts == 0 and len(outbox) == 1 and link.stats.connects == 0
        assert "UNAVAILABLE" in link.stats.last_error
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await server.stop(None)
        outbox.close()
