"""The shipped Redis is closed by default: TLS only, users from an ACL file, only the cloud pods may
reach it (Kubernetes), and the cloud replicas reach it as written.

The compose Redis runs for real here: its command line from docker-compose.yml, the secrets
make-secrets.sh writes, a real redis-server on loopback; a cloud replica configured by the compose
cloud.toml joins it and uses every kind of command the cluster needs, while a plain-text client, a
client without the password and the default user are refused.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from layercast.cloud.cluster.operator import LIST_CAMERAS
from layercast.cloud.cluster.signing import Caller
from layercast.cloud.config import load_cloud_config
from layercast.cloud.results.records import ReplayQuery
from layercast.cloud.server import CloudServer
from layercast.shared.rpc import common_pb2, operator_pb2
from tests.cloud.conftest import make_task_codec
from tests.deploy.test_manifests import COMPOSE, COMPOSE_DIR, one, pod_spec

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def test_k8s_redis_takes_tls_and_an_acl_and_only_cloud_pods() -> None:
    redis_pod = pod_spec(one("Deployment", "layercast-redis"))
    args = redis_pod["containers"][0]["args"]
    opts = dict(zip(args[::2], args[1::2], strict=True))
    assert opts["--port"] == "0" and opts["--tls-port"] == "6379" and "--aclfile" in opts
    acl = one("Secret", "layercast-cluster")["stringData"]["redis-users.acl"]
    assert "user default off" in acl and "nopass +@all" not in acl
    policy = one("NetworkPolicy", "layercast-redis")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "layercast-redis"}
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "layercast-cloud"}}}]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    env = {
        e["name"]: e.get("value")
        for e in pod_spec(one("Deployment", "layercast-cloud"))["containers"][0]["env"]
    }
    url = urllib.parse.urlsplit(env["LAYERCAST_CLOUD_CLUSTER__REDIS_URL"])
    assert url.scheme == "rediss" and url.password is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def compose_redis(tmp_path: Path) -> Any:
    """The compose file's redis command, run on loopback with make-secrets.sh's files."""
    secrets_dir = tmp_path / "secrets"
    subprocess.run(["bash", str(COMPOSE_DIR / "make-secrets.sh"), str(secrets_dir)], check=True, timeout=60)
    doc = yaml.safe_load(COMPOSE.read_text())
    files = {f"/run/secrets/{k}": str(secrets_dir / Path(v["file"]).name) for k, v in doc["secrets"].items()}
    service = doc["services"]["redis"]
    assert service["command"][0] == "redis-server" and "ports" not in service  # not published
    port = _free_port()
    args = [files.get(a, a) for a in service["command"][1:]]
    args[args.index("--tls-port") + 1] = str(port)
    proc = subprocess.Popen(
        [REDIS_SERVER, *args, "--bind", "127.0.0.1", "--appendonly", "no", "--dir", str(tmp_path)],
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
        pytest.fail("the compose redis command did not start:\n" + "".join(lines[-20:]))
    healthcheck = [files.get(a, a) for a in service["healthcheck"]["test"][1:]]
    try:
        yield port, files, healthcheck, tmp_path
    finally:
        proc.terminate()
        proc.wait(10)


async def test_compose_redis_runs_closed_and_a_cloud_replica_uses_it(compose_redis) -> None:
    port, files, healthcheck, tmp_path = compose_redis
    # The compose health check passes (TLS, the probe user).
    probe = subprocess.run(
        [REDIS_CLI, "-p", str(port), *healthcheck[1:]], capture_output=True, text=True, timeout=10
    )
    assert probe.stdout.strip() == "PONG", probe
    ca, password = (
        files["/run/secrets/redis_ca"],
        Path(files["/run/secrets/redis_password"]).read_text().strip(),
    )
    # Refused: plain text, TLS without credentials (the default user is off), a wrong password,
    # and the replicas' user outside its keys or with a dangerous command.
    plain = redis.Redis(host="127.0.0.1", port=port, socket_timeout=3)
    with pytest.raises(redis.RedisError):
        plain.ping()
    tls = {"host": "127.0.0.1", "port": port, "ssl": True, "ssl_ca_certs": ca, "socket_timeout": 3}
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(**tls).set("layercast:x", 1)
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(**tls, username="layercast", password="wrong").ping()
    user = redis.Redis(**tls, username="layercast", password=password)
    with pytest.raises(redis.exceptions.NoPermissionError):
        user.set("other:x", 1)
    with pytest.raises(redis.exceptions.NoPermissionError):
        user.flushall()
    user.close()

    # A replica configured by compose's cloud.toml (host and port of this Redis) joins and uses it.
    toml = COMPOSE_DIR / "cloud.toml"
    written = tomllib.loads(toml.read_text())["cluster"]
    url = urllib.parse.urlsplit(written["redis_url"])
    local_url = url._replace(netloc=f"{url.username}@127.0.0.1:{port}").geturl()
    cfg = load_cloud_config(
        toml,
        environ={},
        overrides={
            "listen": "127.0.0.1",
            "port": 0,
            "data_dir": str(tmp_path / "cloud"),
            "auth.credentials_file": files["/run/secrets/camera_credentials"],
            "cluster.replica_id": "compose-1",
            "cluster.redis_url": local_url,
            **{
                f"cluster.{key}": files[written[key]]
                for key in ("secret_file", "redis_password_file", "redis_ca_file")
            },
        },
    )
    server = CloudServer(cfg, codec=make_task_codec("detection"))
    await server.start()
    try:
        cluster = server.cluster
        assert cluster is not None
        assert await cluster.ownership.claim("cam-z") is None  # leases (SET, Lua)
        await cluster._renew()  # EVALSHA, ZADD, pipelines
        cluster.results.publish(common_pb2.Result(camera_id="cam-z", sequence=1))  # XADD
        assert await cluster.results.flush(10)
        assert [r.sequence for r in await cluster.results.results_after(ReplayQuery(limit=10))] == [
            1
        ]  # XRANGE
        answer = await cluster.rpc.call(  # RPUSH, PEXPIRE, BLPOP
            "compose-1",
            LIST_CAMERAS,
            operator_pb2.ListCamerasRequest().SerializeToString(),
            timeout_s=10,
            caller=Caller(operator="t"),
        )
        assert operator_pb2.ListCamerasResponse.FromString(answer).cameras == []
        assert await cluster.results.trim(3600) >= 0  # XTRIM
        await asyncio.sleep(0)
    finally:
        await server.stop(5.0)
