"""The commands as a person runs them: `layercast cloud` in its own process, then
`layercast subscribe` and `layercast enhance` against it (over mutual TLS with an operator
certificate, or plain text with --insecure)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from layercast.cloud.security.credentials import hash_token
from layercast.cloud.server import CloudServer
from layercast.shared.pki import create_local_pki
from layercast.shared.rpc import edge_pb2
from layercast.shared.tls import ClientTls, open_channel
from tests.cloud.conftest import OPERATOR, OPERATOR_TOKEN, TOKENS, EdgeStream, cloud_config, operator_channel

REPO = Path(__file__).resolve().parents[2]


async def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "layercast.commands.cloud",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or os.environ.copy(),
        cwd=REPO,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def mtls_cloud(tmp_path, task_codec):
    pki = create_local_pki(tmp_path / "pki", ["cam-a"], operators=["cli"])
    tls = {
        "tls.cert": str(pki.server_cert),
        "tls.key": str(pki.server_key),
        "tls.client_ca": str(pki.ca_cert),
        "auth.enhancers": ["cli"],  # the operator certificate's name
    }
    server = CloudServer(cloud_config(tmp_path, **tls), codec=task_codec)
    await server.start()
    try:
        yield server, pki
    finally:
        await server.stop(5.0)


async def test_subscribe_and_enhance_commands(mtls_cloud, task_codec, frames, tmp_path):
    cloud, pki = mtls_cloud
    target = cloud.target
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cert, key = pki.operator("cli")
    tls_flags = (f"--ca-cert={pki.ca_cert}", f"--client-cert={cert}", f"--client-key={key}")
    cam_cert, cam_key = pki.camera("cam-a")
    async with open_channel(
        target, ClientTls(ca_cert=pki.ca_cert, client_cert=cam_cert, client_key=cam_key)
    ) as ch:
        e = EdgeStream(ch)
        e.hello("cam-a", "", task_codec.base_model_id)
        await e.recv_kind("welcome")
        for seq in (1, 2, 3):
            e.frame(seq, frames[seq].base)
        assert [(await e.recv_kind("ack")).sequence for _ in range(3)] == [1, 2, 3]

        # without the operator certificate the cloud refuses the connection
        rc, out, err = await run_cli(
            "subscribe", f"--cloud={target}", f"--ca-cert={pki.ca_cert}", "--limit=1", env=env
        )
        assert rc == 1 and "UNAVAILABLE" in err and not out

        rc, out, err = await run_cli("subscribe", f"--cloud={target}", *tls_flags, "--limit=3", env=env)
        assert rc == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        assert [(r["camera_id"], r["sequence"]) for r in lines] == [("cam-a", 1), ("cam-a", 2), ("cam-a", 3)]
        assert lines[0]["width"] == 64 and lines[0]["task"] == "detection"
        assert isinstance(lines[0]["capture_time_us"], int)

        rc, out, _ = await run_cli(
            "subscribe", f"--cloud={target}", *tls_flags, "--after=cam-a=2", "--limit=1", env=env
        )
        assert rc == 0 and json.loads(out)["sequence"] == 3

        # enhance: the test plays the camera and answers with the real enhancement layer
        output = tmp_path / "out" / "frame2.png"
        enhance = asyncio.create_task(
            run_cli(
                "enhance",
                f"--cloud={target}",
                *tls_flags,
                "--camera=cam-a",
                "--seq=2",
                f"-o={output}",
                env=env,
            )
        )
        req = await e.recv_kind("enhancement_request", timeout=60)
        e.send(
            enhancement=edge_pb2.EnhancementResponse(
                request_id=req.request_id, sequence=2, enhancement=frames[2].enhancement
            )
        )
        rc, out, err = await enhance
        assert rc == 0, err
        info = json.loads(out)
        assert info["enhancement_bytes"] == len(frames[2].enhancement) and not info["cached"]
        dec = task_codec.decode_base_batch([frames[2].base])[0]
        got = np.asarray(Image.open(io.BytesIO(output.read_bytes())))
        assert np.array_equal(got, task_codec.reconstruct(dec, frames[2].enhancement))

        rc, _, err = await run_cli(
            "enhance",
            f"--cloud={target}",
            *tls_flags,
            "--camera=cam-a",
            "--seq=99",
            f"-o={tmp_path / 'x.png'}",
            env=env,
        )
        assert rc == 1 and "NOT_FOUND" in err
        e.close()


@pytest.mark.slow
async def test_cloud_command_serves_a_registry_model_and_stops_on_sigterm(tmp_path, task_codec, frames):
    models = tmp_path / "models"
    task_codec.base_ckpt.save(models / "test-base.pt")
    task_codec.enh_ckpt.save(models / "test-enh.pt")
    env = {**os.environ, "LAYERCAST_MODELS": str(models), "PYTHONPATH": str(REPO)}
    port_file = tmp_path / "port"
    cloud = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "layercast.commands.cloud",
        "cloud",
        "--port=0",
        f"--port-file={port_file}",
        f"--data-dir={tmp_path / 'data'}",
        "--model=test-base",
        "--device=cpu",
        "--insecure",
        f"--set=auth.camera_tokens=cam-a={hash_token(TOKENS['cam-a'])}",
        f"--set=auth.operator_tokens={OPERATOR}={hash_token(OPERATOR_TOKEN)}",
        "--set=batching.max_queue_delay_ms=5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 180
        while not port_file.exists():
            assert cloud.returncode is None, (await cloud.stderr.read()).decode()
            assert time.monotonic() < deadline, "the cloud did not start"
            await asyncio.sleep(0.1)
        target = f"127.0.0.1:{int(port_file.read_text())}"
        banner = (await asyncio.wait_for(cloud.stdout.readline(), 10)).decode()
        assert "serving on" in banner and "plain text" in banner and task_codec.base_model_id in banner
        async with operator_channel(target) as ch:
            e = EdgeStream(ch)
            e.hello("cam-a", TOKENS["cam-a"], task_codec.base_model_id)
            await e.recv_kind("welcome")
            e.frame(1, frames[1].base)
            assert (await e.recv_kind("ack")).sequence == 1
            rc, out, err = await run_cli(
                "subscribe",
                f"--cloud={target}",
                "--insecure",
                "--limit=1",
                env={**env, "LAYERCAST_TOKEN": OPERATOR_TOKEN},
            )
            assert rc == 0 and json.loads(out)["sequence"] == 1, err
            assert "plain-text" in err  # the insecure link is announced
            e.close()
        cloud.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(cloud.wait(), 30)
        rest = (await cloud.stdout.read()).decode()
        assert rc == 0 and "stopping" in rest
    finally:
        if cloud.returncode is None:
            cloud.kill()
            await cloud.wait()
