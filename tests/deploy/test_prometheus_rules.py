"""deploy/prometheus: the scrape configuration and alert rules pass promtool's checks, the alert
unit tests pass on their synthetic series, and every metric they use is one the code exports."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from layercast.cloud.config import CloudConfig
from layercast.cloud.server import CloudServer
from layercast.edge.app import EdgeApp
from layercast.edge.config import EdgeConfig
from layercast.shared.prometheus import exposed_names
from tests.deploy.promtools import DEPLOY
from tests.system import require

PROM = DEPLOY / "prometheus"
PROMTOOL = shutil.which("promtool")


@pytest.fixture
def needs_promtool() -> None:
    require("promtool", "prometheus", "checking the alert rules")


#: Series Prometheus itself adds to every target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS", "ALERTS_FOR_STATE"}
METRIC_RE = re.compile(r"\b((?:layercast|process|python)_[a-zA-Z0-9_]+)\b")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=PROM)


def code_metric_names() -> set[str]:
    """Every sample name the edge's and the cloud's registries can expose."""
    edge = EdgeApp(EdgeConfig())
    cloud = CloudServer(CloudConfig())
    return exposed_names(edge.registry) | exposed_names(cloud.metrics.registry)


def metric_names_in(promql: str) -> set[str]:
    return set(METRIC_RE.findall(promql))


def alert_rules() -> list[dict[str, str]]:
    """Each rule of alerts.yml as {alert, expr, severity, summary, description} (read as text: the
    file is checked for real by promtool; PyYAML is not a dependency)."""
    text = (PROM / "alerts.yml").read_text()
    rules = []
    for block in re.split(r"^\s*- alert: ", text, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        expr = re.search(r"expr: (\|\n(?:\s{10,}.*\n)+|.*)", body)
        rule = {"alert": name.strip(), "expr": expr.group(1) if expr else ""}
        for key in ("severity", "summary", "description"):
            m = re.search(rf"^\s+{key}: (.+)$", body, flags=re.M)
            rule[key] = m.group(1).strip().strip('"') if m else ""
        rules.append(rule)
    return rules


@pytest.mark.usefixtures("needs_promtool")
def test_promtool_check_config_and_rules():
    res = promtool("check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout and "alerts.yml" in res.stdout  # the rule file is checked too
    res = promtool("check", "rules", "alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in res.stdout


@pytest.mark.usefixtures("needs_promtool")
def test_promtool_test_rules_on_synthetic_series():
    res = promtool("test", "rules", "alerts_test.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


@pytest.mark.usefixtures("needs_promtool")
def test_promtool_test_rules_fails_on_a_wrong_expectation(tmp_path):
    """The unit tests can fail: the same file expecting the wrong camera does not pass."""
    text = (PROM / "alerts_test.yml").read_text().replace("camera: cam-1\n", "camera: cam-9\n", 1)
    (tmp_path / "alerts.yml").write_text((PROM / "alerts.yml").read_text())
    (tmp_path / "alerts_test.yml").write_text(text)
    res = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert res.returncode != 0 and "cam-9" in res.stdout + res.stderr


def test_every_alert_has_severity_summary_and_known_metrics():
    names = code_metric_names()
    rules = alert_rules()
    wanted = {
        "LayercastCloudDown",
        "LayercastCameraDown",
        "LayercastEdgeDroppingFrames",
        "LayercastEnhancementFailures",
        "LayercastEdgeEnhancementStoreFailing",
        "LayercastEndToEndLatencySLO",
    }
    assert wanted <= {r["alert"] for r in rules}
    for rule in rules:
        assert rule["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["summary"] and rule["description"], rule["alert"]
        used = metric_names_in(rule["expr"])
        assert used or "up{" in rule["expr"], rule["alert"]
        unknown = used - names
        assert not unknown, f"{rule['alert']} uses metrics the code does not export: {unknown}"


def test_alert_unit_tests_use_known_series():
    names = code_metric_names() | PROMETHEUS_SERIES
    series = re.findall(r"series: '([a-zA-Z_:][a-zA-Z0-9_:]*)\{", (PROM / "alerts_test.yml").read_text())
    assert len(series) > 20
    for name in series:
        assert name in names, f"alerts_test.yml feeds {name}, which the code does not export"


def test_scrape_config_covers_cloud_and_edges():
    text = (PROM / "prometheus.yml").read_text()
    assert re.search(r"^rule_files:\n  - alerts.yml$", text, flags=re.M)
    for job in ("layercast-cloud", "layercast-edge"):
        block = text.split(f"job_name: {job}\n", 1)[1].split("job_name:", 1)[0]
        targets = re.findall(r'"([a-z0-9.-]+:\d+)"', block)
        assert targets, job
