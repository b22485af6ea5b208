"""The commands as a person runs them: `layercast cloud` in its own process, then
`layercast subscribe` and `layercast enhance` against it."""

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
from grpc import aio
from PIL import Image

from layercast.cloud.credentials import hash_token
from layercast.shared.rpc import edge_pb2
from tests.cloud.conftest import TOKENS, EdgeStream

REPO = Path(__file__).resolve().parents[2]


async def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "layercast.cloud.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or os.environ.copy(),
        cwd=REPO,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def test_subscribe_and_enhance_commands(cloud, task_codec, frames, tmp_path):
    target = cloud.target
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    async with aio.insecure_channel(target) as ch:
        e = EdgeStream(ch)
        e.hello("cam-a", TOKENS["cam-a"], task_codec.base_model_id)
        await e.recv_kind("welcome")
        for seq in (1, 2, 3):
            e.frame(seq, frames[seq].base)
        assert [(await e.recv_kind("ack")).sequence for _ in range(3)] == [1, 2, 3]

        rc, out, err = await run_cli("subscribe", f"--cloud={target}", "--limit=3", env=env)
        assert rc == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        assert [(r["camera_id"], r["sequence"]) for r in lines] == [("cam-a", 1), ("cam-a", 2), ("cam-a", 3)]
        assert lines[0]["width"] == 64 and lines[0]["task"] == "detection"
        assert isinstance(lines[0]["capture_time_us"], int)

        rc, out, _ = await run_cli("subscribe", f"--cloud={target}", "--after=cam-a=2", "--limit=1", env=env)
        assert rc == 0 and json.loads(out)["sequence"] == 3

        # enhance: the test plays the camera and answers with the real enhancement layer
        output = tmp_path / "out" / "frame2.png"
        enhance = asyncio.create_task(
            run_cli("enhance", f"--cloud={target}", "--camera=cam-a", "--seq=2", f"-o={output}", env=env)
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
            "enhance", f"--cloud={target}", "--camera=cam-a", "--seq=99", f"-o={tmp_path / 'x.png'}", env=env
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
        "layercast.cloud.cli",
        "cloud",
        "--port=0",
        f"--port-file={port_file}",
        f"--data-dir={tmp_path / 'data'}",
        "--model=test-base",
        "--device=cpu",
        f"--set=auth.camera_tokens=cam-a={hash_token(TOKENS['cam-a'])}",
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
        assert "serving on" in banner and task_codec.base_model_id in banner
        async with aio.insecure_channel(target) as ch:
            e = EdgeStream(ch)
            e.hello("cam-a", TOKENS["cam-a"], task_codec.base_model_id)
            await e.recv_kind("welcome")
            e.frame(1, frames[1].base)
            assert (await e.recv_kind("ack")).sequence == 1
            rc, out, err = await run_cli("subscribe", f"--cloud={target}", "--limit=1", env=env)
            assert rc == 0 and json.loads(out)["sequence"] == 1, err
            e.close()
        cloud.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(cloud.wait(), 30)
        rest = (await cloud.stdout.read()).decode()
        assert rc == 0 and "stopping" in rest
    finally:
        if cloud.returncode is None:
            cloud.kill()
            await cloud.wait()
