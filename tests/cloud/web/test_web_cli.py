"""`layercast web` as its own process against a real cloud over mutual TLS (the page presents an
operator certificate), serving HTTPS itself: TOML settings, port file, sign-in, the cloud's
cameras, then a clean stop on SIGTERM; plain HTTP beyond loopback refused."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys

import httpx

from layercast.cloud.server import CloudServer
from layercast.cloud.web.passwords import hash_password
from layercast.shared.pki import create_local_pki
from tests.cloud.conftest import cloud_config
from tests.cloud.web.stack import eventually, login


async def test_standalone_web_process_serves_against_a_remote_cloud(tmp_path, task_codec):
    pki = create_local_pki(tmp_path / "pki", operators=["web"])
    tls = {
        "tls.cert": str(pki.server_cert),
        "tls.key": str(pki.server_key),
        "tls.client_ca": str(pki.ca_cert),
    }
    cloud = CloudServer(cloud_config(tmp_path, **tls), codec=task_codec)
    await cloud.start()
    web_cert, web_key = pki.operator("web")
    config = tmp_path / "web.toml"
    config.write_text(
        f'users = ["alice=enhancer:{hash_password("alice-enhances-42")}"]\n'
        f'audit_log = "{tmp_path / "audit.jsonl"}"\n'
    )
    port_file = tmp_path / "port"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "layercast.commands.web",
        "web",
        "--config",
        str(config),
        "--cloud",
        cloud.target,
        "--cloud-ca-cert",
        str(pki.ca_cert),
        "--cloud-client-cert",
        str(web_cert),
        "--cloud-client-key",
        str(web_key),
        "--tls-cert",
        str(pki.server_cert),
        "--tls-key",
        str(pki.server_key),
        "--port",
        "0",
        "--port-file",
        str(port_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        await eventually(lambda: port_file.exists() or proc.returncode is not None, 60, "the port file")
        assert proc.returncode is None, (await proc.stderr.read()).decode()
        port = int(port_file.read_text())
        ca = ssl.create_default_context(cafile=str(pki.ca_cert))
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", timeout=30, verify=ca) as c:
            await login(c, "alice")
            r = await c.get("/api/cameras")
            assert r.status_code == 200 and r.json()["cameras"] == []  # the cloud answered; no camera yet

            async def live():
                return (await c.get("/healthz")).json()["feed"]["state"] == "live"

            await eventually(live, 20, "the page's live subscription to the cloud")
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 20)
        out = (await proc.stdout.read()).decode()
        assert rc == 0, (await proc.stderr.read()).decode()
        assert f"operator page on https://127.0.0.1:{port}/" in out and "layercast web: stopped" in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await cloud.stop(5.0)


def test_plain_http_beyond_loopback_is_refused(tmp_path):
    config = tmp_path / "web.toml"
    config.write_text(f'users = ["alice=enhancer:{hash_password("alice-enhances-42")}"]\n')
    proc = subprocess.run(
        [sys.executable, "-m", "layercast.commands.web", "web", "--config", str(config)]
        + ["--cloud-insecure", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "plain HTTP on 0.0.0.0" in proc.stderr and "tls_cert" in proc.stderr
