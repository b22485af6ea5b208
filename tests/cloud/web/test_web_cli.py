"""`layercast web` as its own process against a real cloud over mutual TLS (the page presents an
operator certificate): TOML settings, port file, sign-in, the cloud's cameras, then a clean stop
on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
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
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
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
        assert f"operator page on http://127.0.0.1:{port}/" in out and "layercast web: stopped" in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await cloud.stop(5.0)
