"""Writes deploy/grafana/layercast.json, the Grafana dashboard of layercast's Prometheus metrics.

    python deploy/grafana/build_dashboard.py          # rewrite layercast.json
    python deploy/grafana/build_dashboard.py --check  # exit 1 if layercast.json is out of date

The dashboard is described below as rows of panels with their PromQL; the JSON is
generated so that ids and grid positions stay consistent. Import it in Grafana
(Dashboards → Import) and pick the Prometheus data source for ``datasource``.
tests/deploy/test_grafana_dashboard.py checks that every metric it uses exists in
the code and that the JSON is up to date; the real-Prometheus test runs every query.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("layercast.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"
CAM = 'camera=~"$camera"'


def q(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series") -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend, "instant": instant, "range": not instant, "format": fmt}


def quantiles(metric: str, by: str = "", sel: str = "", qs: tuple[float, ...] = (0.5, 0.95, 0.99)):
    """histogram_quantile targets of ``metric`` (a histogram's base name) for each quantile."""
    group = f"le, {by}" if by else "le"
    legend_by = f"{{{{{by}}}}} " if by else ""
    sel = f"{{{sel}}}" if sel else ""
    return [
        q(
            f"histogram_quantile({x}, sum by ({group}) (rate({metric}_bucket{sel}[{RI}])))",
            f"{legend_by}p{int(x * 100)}",
        )
        for x in qs
    ]


def panel(
    title: str,
    targets: list[dict],
    *,
    unit: str = "short",
    kind: str = "timeseries",
    w: int = 8,
    h: int = 8,
    desc: str = "",
):
    p: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "_size": (w, h),
    }
    if kind == "timeseries":
        p["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10}
        p["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi"},
        }
    elif kind == "stat":
        p["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
        }
    return p


ROWS: list[tuple[str, list[dict[str, Any]]]] = [
    (
        "Overview",
        [
            panel("Cloud ready", [q("min(layercast_cloud_ready)", instant=True)], kind="stat", w=4, h=4),
            panel(
                "Open camera streams",
                [q("sum(layercast_cloud_active_streams)", instant=True)],
                kind="stat",
                w=4,
                h=4,
            ),
            panel(
                "Cameras disconnected",
                [q("count(layercast_cloud_camera_connected == 0) or vector(0)", instant=True)],
                kind="stat",
                w=4,
                h=4,
            ),
            panel(
                "Frames stored /s",
                [q(f'sum(rate(layercast_cloud_frames_total{{outcome="stored"}}[{RI}]))', instant=True)],
                kind="stat",
                unit="reqps",
                w=4,
                h=4,
            ),
            panel(
                "End-to-end p95",
                [
                    q(
                        f"histogram_quantile(0.95, sum by (le) (rate(layercast_cloud_end_to_end_seconds_bucket[{RI}])))",
                        instant=True,
                    )
                ],
                kind="stat",
                unit="s",
                w=4,
                h=4,
            ),
            panel(
                "Enhancement failures /s",
                [q(f"sum(rate(layercast_cloud_enhancement_failures_total[{RI}]))", instant=True)],
                kind="stat",
                unit="reqps",
                w=4,
                h=4,
            ),
            panel(
                "Build and models",
                [q("layercast_build_info", instant=True, fmt="table")],
                kind="table",
                w=24,
                h=4,
                desc="layercast_build_info: software version and codec model ids of every scraped process.",
            ),
        ],
    ),
    (
        "Frames in the cloud",
        [
            panel(
                "Frames received by camera and outcome",
                [
                    q(
                        f"sum by (camera, outcome) (rate(layercast_cloud_frames_total{{{CAM}}}[{RI}]))",
                        "{{camera}} {{outcome}}",
                    )
                ],
                unit="reqps",
            ),
            panel(
                "Results per camera",
                [q(f"sum by (camera) (rate(layercast_cloud_results_total{{{CAM}}}[{RI}]))", "{{camera}}")],
                unit="reqps",
            ),
            panel(
                "Frames refused or failed, by status",
                [
                    q(f"sum by (code) (rate(layercast_cloud_frame_errors_total[{RI}]))", "{{code}}"),
                    q(f"sum(rate(layercast_cloud_inference_failures_total[{RI}]))", "inference failures"),
                    q("sum(layercast_cloud_frames_recovered_total)", "recovered at start-up"),
                ],
                unit="reqps",
            ),
            panel(
                "Video: frames decoded by kind, intra frames requested",
                [
                    q(
                        f"sum by (kind) (rate(layercast_cloud_frames_decoded_total[{RI}]))",
                        "decoded {{kind}}",
                    ),
                    q(
                        f"sum by (reason) (rate(layercast_cloud_intra_requests_total[{RI}]))",
                        "intra requested: {{reason}}",
                    ),
                    q(
                        f"sum by (kind) (rate(layercast_edge_frames_encoded_by_kind_total{{{CAM}}}[{RI}]))",
                        "edge encoded {{kind}}",
                    ),
                    q(
                        f"sum(rate(layercast_edge_intra_requests_total{{{CAM}}}[{RI}]))",
                        "edge intra requests received",
                    ),
                ],
                unit="reqps",
                desc="Each camera's base layer is a low-delay video: intra frames, predicted frames between "
                "them. The cloud asks a camera for an intra frame when it cannot decode a predicted one "
                "(no_reference: nothing held for the camera, e.g. after a restart; reference_mismatch; "
                "decode_failed) and when a stream opens without a reference in this process.",
            ),
            panel(
                "Callers refused by authentication, by reason",
                [q(f"sum by (reason) (rate(layercast_cloud_auth_refusals_total[{RI}]))", "{{reason}}")],
                unit="reqps",
                desc="Cameras with wrong or another camera's credentials (certificate or token), "
                "camera certificates on the operator APIs, missing operator tokens.",
            ),
            panel(
                "Rate limits and the audit log",
                [
                    q(f"sum by (kind) (rate(layercast_cloud_rate_limited_total[{RI}]))", "{{kind}}"),
                    q(
                        f"sum by (limit) (rate(layercast_cloud_limit_refusals_total[{RI}]))",
                        "bound: {{limit}}",
                    ),
                    q(
                        f"sum by (reason) (rate(layercast_cloud_cluster_rejected_total[{RI}]))",
                        "cluster message refused: {{reason}}",
                    ),
                    q(
                        f"sum(rate(layercast_cloud_audit_write_failures_total[{RI}]))",
                        "audit lines not written",
                    ),
                ],
                unit="reqps",
                desc="camera_frames: frames read later because a camera was above limits.camera_frames_per_s "
                "(slowed, not refused); operator_requests: calls refused above limits.operator_requests_per_s; "
                "bound: streams, calls, subscribers or queues refused at their [limits] bound; cluster message "
                "refused: Redis inbox messages or results entries with a wrong or missing signature, or an "
                "implausible sequence.",
            ),
            panel(
                "End-to-end latency (capture → result)",
                quantiles("layercast_cloud_end_to_end_seconds", by="camera", sel=CAM, qs=(0.5, 0.95)),
                unit="s",
            ),
            panel(
                "Base layer bytes per camera",
                [
                    q(
                        f"sum by (camera) (rate(layercast_cloud_base_processed_bytes_total{{{CAM}}}[{RI}]))",
                        "{{camera}}",
                    )
                ],
                unit="Bps",
            ),
            panel(
                "Base layer bits per pixel",
                [
                    *quantiles("layercast_cloud_frame_bpp", qs=(0.5, 0.95)),
                    q(
                        f"sum(rate(layercast_cloud_frame_bpp_sum[{RI}])) / sum(rate(layercast_cloud_frame_bpp_count[{RI}]))",
                        "mean",
                    ),
                ],
            ),
        ],
    ),
    (
        "Batching and inference (dynamic batcher)",
        [
            panel(
                "Batch size",
                [
                    q(
                        f"sum(rate(layercast_cloud_batch_size_sum[{RI}])) / sum(rate(layercast_cloud_batch_size_count[{RI}]))",
                        "mean",
                    ),
                    *quantiles("layercast_cloud_batch_size", qs=(0.95,)),
                    q(f"sum(rate(layercast_cloud_batch_size_count[{RI}]))", "batches /s"),
                ],
                w=6,
            ),
            panel(
                "Queue delay per frame",
                quantiles("layercast_cloud_queue_delay_seconds"),
                unit="s",
                w=6,
                desc="Time a frame waits in the batcher before its batch is dispatched (Triton's queue time).",
            ),
            panel(
                "Inference time per batch",
                quantiles("layercast_cloud_inference_seconds"),
                unit="s",
                w=6,
                desc="Decode + task model for one batch (Triton's compute time).",
            ),
            panel(
                "Batcher queue",
                [
                    q("sum(layercast_cloud_batcher_queued_frames)", "waiting for a batch"),
                    q("sum(layercast_cloud_batcher_outstanding_frames)", "outstanding"),
                ],
                w=6,
            ),
        ],
    ),
    (
        "Edges",
        [
            panel(
                "Edge frames /s",
                [
                    q(
                        f"sum by (camera) (rate(layercast_edge_frames_encoded_total{{{CAM}}}[{RI}]))",
                        "{{camera}} encoded",
                    ),
                    q(
                        f"sum by (camera) (rate(layercast_edge_frames_sent_total{{{CAM}}}[{RI}]))",
                        "{{camera}} sent",
                    ),
                    q(
                        f"sum by (camera) (rate(layercast_edge_frames_acked_total{{{CAM}}}[{RI}]))",
                        "{{camera}} acked",
                    ),
                    q(
                        f"sum by (camera) (rate(layercast_edge_frames_resent_total{{{CAM}}}[{RI}]))",
                        "{{camera}} resent",
                    ),
                    q(
                        f"sum by (camera) (rate(layercast_edge_frames_queued_total{{{CAM}}}[{RI}]))",
                        "{{camera}} queued",
                    ),
                    q(
                        f"sum by (camera) (rate(layercast_edge_frames_acked_duplicate_total{{{CAM}}}[{RI}]))",
                        "{{camera}} acked as duplicate",
                    ),
                ],
                unit="reqps",
            ),
            panel(
                "Edge frames dropped, by reason",
                [
                    q(
                        f"sum by (camera, reason) (rate(layercast_edge_frames_dropped_total{{{CAM}}}[{RI}]))",
                        "{{camera}} {{reason}}",
                    ),
                    q(
                        f"sum by (camera) (delta(layercast_cloud_edge_dropped_frames{{{CAM}}}[5m]))",
                        "{{camera}} (heartbeat, per 5m)",
                    ),
                ],
                unit="reqps",
            ),
            panel(
                "Link queue (outbox)",
                [
                    q(f"sum by (camera) (layercast_edge_outbox_frames{{{CAM}}})", "{{camera}} outbox"),
                    q(f"sum by (camera) (layercast_edge_frames_in_flight{{{CAM}}})", "{{camera}} in flight"),
                    q(
                        f"sum by (camera) (layercast_cloud_edge_outbox_frames{{{CAM}}})",
                        "{{camera}} (heartbeat)",
                    ),
                ],
            ),
            panel(
                "Connections",
                [
                    q(f"sum by (camera) (layercast_cloud_camera_connected{{{CAM}}})", "{{camera}} connected"),
                    q(
                        f"sum by (camera) (increase(layercast_edge_reconnects_total{{{CAM}}}[5m]))",
                        "{{camera}} reconnects /5m",
                    ),
                    q(
                        f"sum by (camera) (increase(layercast_cloud_stream_connects_total{{{CAM}}}[5m]))",
                        "{{camera}} streams opened /5m",
                    ),
                    q(
                        f"sum by (camera) (layercast_edge_connected{{{CAM}}})",
                        "{{camera}} edge says connected",
                    ),
                    q(
                        f"sum by (camera) (increase(layercast_edge_connects_total{{{CAM}}}[5m]))",
                        "{{camera}} welcomed /5m",
                    ),
                    q(
                        f"sum by (camera) (increase(layercast_edge_disconnects_total{{{CAM}}}[5m]))",
                        "{{camera}} disconnects /5m",
                    ),
                ],
            ),
            panel(
                "Encode time per batch",
                quantiles("layercast_edge_encode_seconds", by="camera", sel=CAM, qs=(0.5, 0.95)),
                unit="s",
            ),
            panel(
                "Bits per pixel by layer (edge)",
                quantiles("layercast_edge_frame_bpp", by="layer", sel=CAM, qs=(0.5,)),
            ),
            panel(
                "Edge bytes",
                [
                    q(f"sum(rate(layercast_edge_base_encoded_bytes_total{{{CAM}}}[{RI}]))", "base encoded"),
                    q(f"sum(rate(layercast_edge_base_sent_bytes_total{{{CAM}}}[{RI}]))", "base sent"),
                    q(
                        f"sum(rate(layercast_edge_enhancement_stored_bytes_total{{{CAM}}}[{RI}]))",
                        "enhancement stored",
                    ),
                    q(
                        f"sum(rate(layercast_edge_enhancement_served_bytes_total{{{CAM}}}[{RI}]))",
                        "enhancement served",
                    ),
                ],
                unit="Bps",
            ),
            panel(
                "Camera source health",
                [
                    q(f"min by (camera) (layercast_edge_source_up{{{CAM}}})", "{{camera}} up"),
                    q(
                        f"sum by (camera) (increase(layercast_edge_source_reconnects_total{{{CAM}}}[5m]))",
                        "{{camera}} reconnects / 5 min",
                    ),
                    q(
                        f"sum by (camera) (increase(layercast_edge_source_failures_total{{{CAM}}}[5m]))",
                        "{{camera}} failures / 5 min",
                    ),
                ],
                desc="1 while the camera (RTSP, video file, V4L2) delivers frames; a stalled or vanished "
                "camera drops to 0 and is reopened with back-off.",
            ),
            panel(
                "Enhancement store healthy (edge; 0 = writes failing)",
                [q(f"min by (camera) (layercast_edge_enhancement_store_healthy{{{CAM}}})", "{{camera}}")],
            ),
            panel(
                "Edge errors and heartbeats",
                [
                    q(
                        f"sum by (camera, kind) (rate(layercast_edge_errors_total{{{CAM}}}[{RI}]))",
                        "{{camera}} {{kind}} errors",
                    ),
                    q(
                        f"sum by (camera) (rate(layercast_edge_heartbeats_sent_total{{{CAM}}}[{RI}]))",
                        "{{camera}} heartbeats",
                    ),
                    q(
                        f"sum by (camera) (rate(layercast_edge_frames_captured_total{{{CAM}}}[{RI}]))",
                        "{{camera}} captured",
                    ),
                ],
                unit="reqps",
            ),
            panel(
                "Edge uptime",
                [q(f"time() - max by (camera) (layercast_edge_start_time_seconds{{{CAM}}})", "{{camera}}")],
                unit="s",
            ),
        ],
    ),
    (
        "Enhancement on demand",
        [
            panel(
                "Enhancement requests and failures",
                [
                    q(f"sum(rate(layercast_cloud_enhancement_requests_total[{RI}]))", "requests"),
                    q(
                        f"sum by (reason) (rate(layercast_cloud_enhancement_failures_total[{RI}]))",
                        "failed: {{reason}}",
                    ),
                    q(
                        f"sum by (camera, outcome) (rate(layercast_edge_enhancement_requests_total{{{CAM}}}[{RI}]))",
                        "edge {{camera}}: {{outcome}}",
                    ),
                ],
                unit="reqps",
            ),
            panel(
                "Enhancement round trip",
                quantiles("layercast_cloud_enhancement_seconds", qs=(0.5, 0.95)),
                unit="s",
            ),
            panel(
                "Enhancement bytes and pending",
                [
                    q(f"sum(rate(layercast_cloud_enhancement_received_bytes_total[{RI}]))", "received B/s"),
                    q("sum(layercast_cloud_enhancement_pending)", "pending requests"),
                ],
            ),
        ],
    ),
    (
        "Scaled mode (replicas through Redis; empty in embedded mode)",
        [
            panel(
                "Replicas: Redis reachable, cameras held",
                [
                    q("layercast_cloud_cluster_redis_up", "Redis up {{instance}}"),
                    q("layercast_cloud_cluster_cameras_held", "cameras held {{instance}}"),
                    q(
                        "increase(layercast_cloud_cluster_cameras_superseded_total[5m])",
                        "cameras moved away /5m {{instance}}",
                    ),
                ],
            ),
            panel(
                "Calls between replicas",
                [
                    q(
                        f"sum by (instance, direction) (rate(layercast_cloud_cluster_calls_total[{RI}]))",
                        "{{instance}} {{direction}}",
                    )
                ],
                unit="reqps",
                desc="Operator calls forwarded to the replica holding the camera or frame, and calls served for others.",
            ),
            panel(
                "Results shared through Redis",
                [
                    q(f"rate(layercast_cloud_cluster_results_appended_total[{RI}])", "appended {{instance}}"),
                    q("layercast_cloud_cluster_results_backlog", "backlog {{instance}}"),
                    q(
                        "increase(layercast_cloud_cluster_results_dropped_total[5m])",
                        "not shared /5m {{instance}}",
                    ),
                ],
            ),
        ],
    ),
    (
        "Subscribers and processes",
        [
            panel(
                "Analytics subscribers",
                [
                    q("sum(layercast_cloud_subscribers)", "subscribers"),
                    q("max(layercast_cloud_subscriber_lag_max)", "lag of the slowest (results)"),
                    q("sum(increase(layercast_cloud_subscribers_lagged_total[5m]))", "cut off /5m"),
                ],
            ),
            panel(
                "Memory",
                [q('process_resident_memory_bytes{job=~"layercast.*"}', "{{job}} {{instance}}")],
                unit="bytes",
            ),
            panel(
                "CPU",
                [q(f'rate(process_cpu_seconds_total{{job=~"layercast.*"}}[{RI}])', "{{job}} {{instance}}")],
                unit="percentunit",
            ),
        ],
    ),
]


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    next_id, y = 1, 0
    for title, row in ROWS:
        panels.append(
            {
                "type": "row",
                "title": title,
                "id": next_id,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id, y = next_id + 1, y + 1
        x, row_h = 0, 0
        for p in row:
            p = dict(p)
            w, h = p.pop("_size")
            if x + w > 24:
                x, y = 0, y + row_h
                row_h = 0
            p["id"] = next_id
            p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
            for i, t in enumerate(p["targets"]):
                t["refId"] = chr(ord("A") + i)
                t["datasource"] = DS
            panels.append(p)
            next_id, x, row_h = next_id + 1, x + w, max(row_h, h)
        y += row_h
    return {
        "__inputs": [],
        "title": "layercast",
        "uid": "layercast-overview",
        "description": "Edge cameras, the cloud's batcher and inference, end-to-end latency and enhancement on demand.",
        "tags": ["layercast"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "camera",
                    "label": "Camera",
                    "type": "query",
                    "datasource": DS,
                    "query": {
                        "query": "label_values(layercast_cloud_camera_connected, camera)",
                        "refId": "cameras",
                    },
                    "definition": "label_values(layercast_cloud_camera_connected, camera)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                    "sort": 1,
                    "hide": 0,
                },
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--check", action="store_true", help="fail if layercast.json differs from what would be written"
    )
    args = ap.parse_args()
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
