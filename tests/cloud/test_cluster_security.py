"""Redis is not trusted: what reaches a replica through it must be signed by a replica, forwarded
calls are authorised and audited where the work is done, implausible sequences are refused, and
Redis itself is reached over TLS with a password.

Real components: a real ``redis-server`` on loopback (plain and TLS), two CloudServer replicas in
this process with the test codec, a camera streaming to replica A, callers on replica B.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio
from grpc import aio

from layercast.cloud.cluster.operator import ENHANCE
from layercast.cloud.cluster.signing import Caller, Signer
from layercast.cloud.config import load_cloud_config
from layercast.cloud.security.credentials import hash_token
from layercast.cloud.server import CloudServer
from layercast.shared.errors import ClusterUnavailable, ConfigError, PermissionDenied, Unauthenticated
from layercast.shared.pki import create_local_pki
from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc, common_pb2, operator_pb2_grpc
from tests.cloud import test_scaleout
from tests.cloud.test_scaleout import (
    REDIS_SERVER,
    SECRET,
    Camera,
    Subscriber,
    _free_port,
    cluster_metrics,
    enhance_request,
    replica_config,
)

#: A real redis-server on loopback for this module (the fixture of the scale-out tests).
redis_url = test_scaleout.redis_url

OPERATORS = {"alice": "alice-token-" + "a" * 20, "val": "val-token-" + "v" * 20}


def _auth(name: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {OPERATORS[name]}")]


@pytest.fixture
async def replicas(
    tmp_path: Path, redis_url: str, task_codec: Any, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[CloudServer, CloudServer, str]]:
    prefix = f"s-{request.node.name}"[:100]
    roles = {
        "auth.operator_tokens": [f"{n}={hash_token(t)}" for n, t in OPERATORS.items()],
        "auth.enhancers": ["alice"],
    }
    a = CloudServer(replica_config(tmp_path, "replica-a", redis_url, prefix, **roles), codec=task_codec)
    b = CloudServer(replica_config(tmp_path, "replica-b", redis_url, prefix, **roles), codec=task_codec)
    await a.start()
    try:
        await b.start()
        try:
            yield a, b, prefix
        finally:
            await b.stop(5.0)
    finally:
        await a.stop(5.0)


class AuthedSubscriber(Subscriber):
    """A Subscribe call of operator ``alice``."""

    def __init__(self, channel: aio.Channel) -> None:
        self.call = analytics_pb2_grpc.AnalyticsStub(channel).Subscribe(
            analytics_pb2.SubscribeRequest(), metadata=_auth("alice")
        )
        self.results: list[common_pb2.Result] = []
        self.changed = asyncio.Event()
        self._task = asyncio.create_task(self._run())


def rejected(server: CloudServer) -> dict[str, float]:
    return {
        name.split('reason="')[1].rstrip('"}'): value
        for name, value in cluster_metrics(server).items()
        if name.startswith("layercast_cloud_cluster_rejected_total")
    }


async def test_forged_messages_and_results_in_redis_are_refused_and_counted(
    replicas, redis_url, task_codec, frames
) -> None:
    a, b, prefix = replicas
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        async with aio.insecure_channel(a.target) as ch_a, aio.insecure_channel(b.target) as ch_b:
            sub_b = AuthedSubscriber(ch_b)
            cam = Camera(ch_a, frames, task_codec.base_model_id)
            await cam.welcome()
            for seq in (1, 2):
                cam.send(seq)
            assert await sub_b.until(2) == [1, 2]

            # A forged Enhance request for replica A, unsigned and with a made-up tag, answering to
            # the attacker's own inbox; and a forged result with the largest sequence there is.
            request = enhance_request(1).SerializeToString()
            header = {"kind": "request", "id": "forged-1", "op": ENHANCE, "from": "attacker",
                      "timeout": 5, "expires": 9e9, "to": "replica-a"}  # fmt: skip
            line = json.dumps(header).encode()
            await client.rpush(f"{prefix}:inbox:replica-a", line + b"\n" + request)
            await client.rpush(f"{prefix}:inbox:replica-a", b"0" * 64 + b"\n" + line + b"\n" + request)
            forged = common_pb2.Result(camera_id="cam-a", sequence=2**64 - 1)
            await client.xadd(
                f"{prefix}:results",
                {"camera": "cam-a", "sequence": str(2**64 - 1), "result": forged.SerializeToString()},
            )
            # A correctly signed result (a replica gone wrong) jumping far ahead is refused too.
            big = a.config.cluster.max_sequence_jump + 10
            wild = common_pb2.Result(camera_id="cam-a", sequence=big)
            signer, data = Signer(SECRET.encode()), wild.SerializeToString()
            await client.xadd(
                f"{prefix}:results",
                {"camera": "cam-a", "sequence": str(big), "result": data,
                 "mac": signer.tag("result", b"cam-a", str(big).encode(), data)},
            )  # fmt: skip

            # The real ones still flow: later results reach the subscriber, a forwarded call works.
            for seq in (3, 4):
                cam.send(seq)
            assert await sub_b.until(4) == [1, 2, 3, 4]
            op_b = operator_pb2_grpc.OperatorStub(ch_b)
            resp = await op_b.Enhance(enhance_request(3), timeout=30, metadata=_auth("alice"))
            assert resp.enhancement_bytes == len(cam.frame_of(3).enhancement)
            late = AuthedSubscriber(ch_b)  # replay skips the forged entries too
            assert await late.until(4) == [1, 2, 3, 4]
            await asyncio.sleep(0.3)
            assert late.sequences == [1, 2, 3, 4] and sub_b.sequences == [1, 2, 3, 4]

            assert await client.llen(f"{prefix}:inbox:attacker") == 0  # nothing answered the forger
            assert cam.asked == [3]  # only the real Enhance reached the camera
            got_a, got_b = rejected(a), rejected(b)
            assert got_a["unsigned"] == 2 and got_a["bad_signature"] == 1  # 1 inbox + 1 result, 1 inbox
            assert got_a["sequence_jump"] == 1 and got_b["sequence_jump"] >= 2  # live + replay
            assert got_b["unsigned"] >= 2  # the forged result, live and in the late replay
            print(f"\nrefused by replica A: {got_a}; by replica B: {got_b}")
            for s in (sub_b, late):
                s.cancel()
            await cam.close()
    finally:
        await client.aclose()


async def test_a_forwarded_enhance_is_authorised_and_audited_on_the_replica_doing_it(
    replicas, task_codec, frames
) -> None:
    a, b, _prefix = replicas
    async with aio.insecure_channel(a.target) as ch_a, aio.insecure_channel(b.target) as ch_b:
        cam = Camera(ch_a, frames, task_codec.base_model_id)
        await cam.welcome()
        cam.send(1)
        await cam.until(lambda: len(cam.acks) == 1)
        payload = enhance_request(1).SerializeToString()

        # Signed by a replica, but for a viewer (or one claiming the enhancer role that A's roles
        # deny, or naming nobody): A refuses, before asking the camera.
        for caller, error in (
            (Caller(operator="val", role="viewer", request_id="r-1"), PermissionDenied),
            (Caller(operator="val", role="enhancer", request_id="r-2"), PermissionDenied),
            (None, Unauthenticated),
        ):
            with pytest.raises(error):
                await b.cluster.rpc.call("replica-a", ENHANCE, payload, timeout_s=10, caller=caller)
        assert cam.asked == []

        # Through B's gRPC API: the viewer is refused on B, the enhancer is served by A, and A's
        # audit log names the operator, who it acts for and the request.
        op_b = operator_pb2_grpc.OperatorStub(ch_b)
        with pytest.raises(aio.AioRpcError) as info:
            await op_b.Enhance(enhance_request(1), timeout=30, metadata=_auth("val"))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await op_b.Enhance(
            enhance_request(1),
            timeout=30,
            metadata=[*_auth("alice"), ("x-layercast-on-behalf-of", "bob"), ("x-request-id", "req-77")],
        )
        assert cam.asked == [1]
        lines = [r for r in a.audit.read() if r["api"] == "cluster"]
        assert [(r["operator"], r["role"], r["outcome"], r["grpc_status"]) for r in lines] == [
            ("val", "viewer", "refused", "PERMISSION_DENIED"),
            ("val", "enhancer", "refused", "PERMISSION_DENIED"),
            ("", "", "error", "UNAUTHENTICATED"),
            ("alice", "enhancer", "ok", "OK"),
        ]
        assert lines[-1]["user"] == "alice:bob" and lines[-1]["camera_id"] == "cam-a"
        assert lines[-1]["sequence"] == 1 and lines[-1]["replica"] == "replica-a"
        assert rejected(a)["unauthorised"] == 3
        await cam.close()


def test_the_cluster_secret_is_required_and_never_shown(tmp_path) -> None:
    base = {"insecure": True, "auth.allow_any_camera": True, "cluster.backend": "redis"}
    with pytest.raises(ConfigError, match="cluster.secret"):
        load_cloud_config(overrides=base, environ={})
    with pytest.raises(ConfigError, match="at least 32"):
        load_cloud_config(overrides={**base, "cluster.secret": "short"}, environ={})
    secret_file = tmp_path / "cluster-secret"
    secret_file.write_text(SECRET + "\n")
    cfg = load_cloud_config(
        overrides={**base, "cluster.secret_file": str(secret_file), "cluster.redis_password": "pw-xyz"},
        environ={},
    )
    assert cfg.cluster.secret_bytes() == SECRET.encode()
    cfg = load_cloud_config(overrides={**base, "cluster.secret": SECRET, "cluster.redis_password": "pw-xyz"})
    assert SECRET not in repr(cfg) and "pw-xyz" not in repr(cfg)
    with pytest.raises(ConfigError, match="redis_ca_file"):
        load_cloud_config(overrides={**base, "cluster.secret": SECRET, "cluster.redis_ca_file": "ca.pem"})


def _start_tls_redis(workdir: Path, pki: Any, password: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--dir", str(workdir), "--requirepass", password]
        + ["--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key)]
        + ["--tls-ca-cert-file", str(pki.ca_cert), "--tls-auth-clients", "no"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    ready, lines = threading.Event(), []

    def drain() -> None:
        for raw in proc.stdout:  # type: ignore[union-attr]
            lines.append(raw.decode(errors="replace"))
            if "Ready to accept connections" in lines[-1]:
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(15):
        proc.kill()
        pytest.fail("redis-server with TLS did not start:\n" + "".join(lines[-20:]))
    return proc, port


async def test_replicas_reach_redis_over_tls_with_a_password(tmp_path, task_codec) -> None:
    pki = create_local_pki(tmp_path / "pki")
    password = "redis-pass-" + "p" * 16
    proc, port = _start_tls_redis(tmp_path, pki, password)
    url = f"rediss://127.0.0.1:{port}/0"
    try:
        tls = {"cluster.redis_ca_file": str(pki.ca_cert), "cluster.redis_password": password}
        server = CloudServer(replica_config(tmp_path, "tls-a", url, "t-tls", **tls), codec=task_codec)
        await server.start()
        try:
            assert cluster_metrics(server)["layercast_cloud_cluster_redis_up"] == 1
            members = await server.cluster.live_replicas()
            assert members == {"tls-a"}
        finally:
            await server.stop(5.0)
        # A wrong password, or no CA to check the server's certificate with, is refused at start.
        for bad in (
            {**tls, "cluster.redis_password": "wrong-" + "w" * 16},
            {"cluster.redis_password": password},
        ):
            server = CloudServer(replica_config(tmp_path, "tls-b", url, "t-tls", **bad), codec=task_codec)
            with pytest.raises(ClusterUnavailable):
                await server.start()
    finally:
        proc.terminate()
        proc.wait(10)
