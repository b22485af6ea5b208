"""deploy/grafana/layercast.json: valid, up to date with its generator, laid out on Grafana's
24-column grid, and every metric its PromQL uses is exported by the code.
(That each query is valid PromQL is checked against a real Prometheus in test_prometheus_scrape.py.)"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.deploy.promtools import DEPLOY
from tests.deploy.test_prometheus_rules import code_metric_names, metric_names_in

GRAFANA = DEPLOY / "grafana"

#: What issue 6 asks the dashboard to cover, as one metric each.
REQUIRED = {
    "layercast_edge_frames_encoded_total",
    "layercast_edge_frames_sent_total",
    "layercast_edge_frames_acked_total",
    "layercast_edge_frames_dropped_total",
    "layercast_edge_frames_resent_total",
    "layercast_edge_base_sent_bytes_total",
    "layercast_edge_enhancement_stored_bytes_total",
    "layercast_edge_frame_bpp_bucket",
    "layercast_edge_encode_seconds_bucket",
    "layercast_edge_outbox_frames",
    "layercast_edge_reconnects_total",
    "layercast_cloud_active_streams",
    "layercast_cloud_batch_size_bucket",
    "layercast_cloud_queue_delay_seconds_bucket",
    "layercast_cloud_inference_seconds_bucket",
    "layercast_cloud_end_to_end_seconds_bucket",
    "layercast_cloud_enhancement_requests_total",
    "layercast_cloud_enhancement_seconds_bucket",
    "layercast_cloud_enhancement_failures_total",
    "layercast_cloud_subscribers",
    "layercast_cloud_subscriber_lag_max",
    "layercast_build_info",
}


def dashboard() -> dict:
    return json.loads((GRAFANA / "layercast.json").read_text())


def queries(dash: dict) -> list[str]:
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_json_is_up_to_date_with_its_generator():
    res = subprocess.run(
        [sys.executable, str(GRAFANA / "build_dashboard.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr


def test_panels_are_well_formed():
    dash = dashboard()
    assert dash["uid"] and dash["title"] == "layercast" and dash["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert "layercast_cloud_camera_connected" in variables["camera"]["definition"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["title"] and p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)) and all(t["expr"].strip() for t in p["targets"]), p["title"]


def test_every_metric_in_the_dashboard_is_exported_and_the_issue_is_covered():
    exported = code_metric_names()
    used = set().union(*(metric_names_in(e) for e in queries(dashboard())))
    unknown = used - exported
    assert not unknown, f"the dashboard queries metrics the code does not export: {sorted(unknown)}"
    missing = REQUIRED - used
    assert not missing, f"the dashboard does not show: {sorted(missing)}"
    # Not one of the code's own layercast_ families is left off the dashboard (histograms by _bucket
    # or _count/_sum, counters by _total).
    families = {n for n in exported if n.startswith("layercast_") and not n.endswith("_created")}
    bases = {n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for n in used}
    left_out = {
        n
        for n in families
        if n not in used
        and n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") not in bases
    }
    assert not left_out, f"metrics not on the dashboard: {sorted(left_out)}"
