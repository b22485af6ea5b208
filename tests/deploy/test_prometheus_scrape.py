"""A real Prometheus (Debian's ``prometheus``) scrapes a real edge streaming frames to a real
cloud; PromQL over its HTTP API returns the frame counts this test produced."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time

import numpy as np
import pytest

from layercast.cloud.server import CloudServer
from layercast.edge.app import EdgeApp
from layercast.edge.config import BackoffConfig, EdgeConfig, LinkConfig, SourceConfig
from layercast.edge.encoder import Encoder
from layercast.shared.prometheus import start_metrics_server
from tests.cloud.conftest import TOKENS, cloud_config, make_task_codec
from tests.conftest import smooth_image
from tests.deploy.promtools import DEPLOY, PrometheusServer, http_get
from tests.system import require


@pytest.fixture(autouse=True)
def needs_prometheus() -> None:
    require("prometheus", "prometheus", "the scrape tests")
    require("promtool", "prometheus", "the exposition lint")


N_FRAMES = 12
CAM = "cam-a"


async def wait_for(prom: PrometheusServer, promql: str, expected: float, timeout: float = 20.0) -> float:
    """Poll ``promql`` until it equals ``expected``; a counter never goes past it."""
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = await asyncio.to_thread(prom.scalar, promql)
        if got is not None and got > expected:
            raise AssertionError(f"{promql} = {got}, more than the {expected} produced")
        if got == expected:
            return got
        await asyncio.sleep(0.25)
    raise AssertionError(f"{promql} = {got} after {timeout}s, expected {expected}")


def dashboard_queries() -> list[str]:
    dash = json.loads((DEPLOY / "grafana" / "layercast.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    return [e.replace("$__rate_interval", "30s").replace("$camera", ".*") for e in exprs]


async def test_prometheus_scrapes_edge_and_cloud_and_counts_every_frame(tmp_path):
    codec = make_task_codec()
    rng = np.random.default_rng(11)
    images = [smooth_image(rng, 64, 64) for _ in range(N_FRAMES)]

    cloud = CloudServer(cloud_config(tmp_path, metrics_port=0), codec=codec)
    await cloud.start()
    edge = EdgeApp(
        EdgeConfig(
            camera_id=CAM,
            token=TOKENS[CAM],
            data_dir=tmp_path / "edge",
            link=LinkConfig(
                cloud=cloud.target, insecure=True, backoff=BackoffConfig(initial_s=0.05, max_s=0.2)
            ),
            source=SourceConfig(fps=40.0, queue_frames=N_FRAMES),  # no capture overflow on a slow box
        ),
        encoder=Encoder(codec, batch_max=4),
        source=images,
    )
    # Served by the test (not the app's metrics_port) so it outlives edge.run(): Prometheus
    # must still see the final values after the finite source is delivered.
    edge_metrics = await start_metrics_server(edge.registry, port=0)
    assert cloud.metrics_server is not None
    prom = PrometheusServer(
        tmp_path / "prom",
        {
            "layercast-cloud": [f"127.0.0.1:{cloud.metrics_server.port}"],
            "layercast-edge": [f"127.0.0.1:{edge_metrics.port}"],
        },
        rule_files=(DEPLOY / "prometheus" / "alerts.yml",),
    )
    prom.start()
    try:
        ready = asyncio.ensure_future(asyncio.to_thread(prom.wait_ready))
        stats = await asyncio.wait_for(edge.run(), 30)  # returns once every frame is acknowledged
        assert stats.frames_acked == N_FRAMES
        deadline = time.monotonic() + 20
        while cloud.pipeline.stats.results < N_FRAMES:
            assert time.monotonic() < deadline, "the cloud did not produce every result"
            await asyncio.sleep(0.05)
        await ready

        figures = {}
        for promql, expected in [
            ('sum(layercast_cloud_frames_total{outcome="stored"})', N_FRAMES),
            ("sum(layercast_cloud_frames_total)", N_FRAMES),
            ("sum(layercast_cloud_results_total)", N_FRAMES),
            ("sum(layercast_cloud_end_to_end_seconds_count)", N_FRAMES),
            ("sum(layercast_cloud_batch_size_sum)", N_FRAMES),
            ("sum(layercast_cloud_queue_delay_seconds_count)", N_FRAMES),
            ("sum(layercast_edge_frames_encoded_total)", N_FRAMES),
            ("sum(layercast_edge_frames_sent_total)", N_FRAMES),
            ("sum(layercast_edge_frames_acked_total)", N_FRAMES),
            ('sum(layercast_edge_frame_bpp_count{layer="base"})', N_FRAMES),
            ("sum(layercast_edge_frames_dropped_total)", 0),
            ("sum(layercast_edge_outbox_frames)", 0),
        ]:
            figures[promql] = await wait_for(prom, promql, expected)

        # Both targets up, with the model ids in build info.
        up = {r["metric"]["job"]: r["value"][1] for r in await asyncio.to_thread(prom.query, "up")}
        assert up == {"layercast-cloud": "1", "layercast-edge": "1"}
        info = await asyncio.to_thread(prom.query, "layercast_build_info")
        assert {(r["metric"]["job"], r["metric"]["base_model_id"]) for r in info} == {
            ("layercast-cloud", codec.base_model_id),
            ("layercast-edge", codec.base_model_id),
        }
        # Per camera, and figures that come from real measurements (not counts).
        per_cam = await asyncio.to_thread(prom.query, "sum by (camera) (layercast_cloud_results_total)")
        assert [(r["metric"]["camera"], float(r["value"][1])) for r in per_cam] == [(CAM, N_FRAMES)]
        base_bytes = await asyncio.to_thread(prom.scalar, "sum(layercast_cloud_base_processed_bytes_total)")
        assert base_bytes == stats.base_bytes_encoded
        mean_e2e = await asyncio.to_thread(
            prom.scalar,
            "sum(layercast_cloud_end_to_end_seconds_sum) / sum(layercast_cloud_end_to_end_seconds_count)",
        )
        assert 0 < mean_e2e < 30
        mean_bpp = await asyncio.to_thread(
            prom.scalar,
            'sum(layercast_edge_frame_bpp_sum{layer="base"}) / sum(layercast_edge_frame_bpp_count{layer="base"})',
        )
        assert mean_bpp == pytest.approx(8.0 * stats.base_bytes_encoded / (N_FRAMES * 64 * 64))
        figures["mean end-to-end s"] = mean_e2e
        figures["mean base bpp"] = mean_bpp

        # The alert rules load and evaluate in a real Prometheus; nothing fires on a healthy flow.
        _, _, body = await asyncio.to_thread(http_get, prom.url + "/api/v1/rules")
        rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
        assert len(rules) >= 10 and all(r["health"] in ("ok", "unknown") for r in rules), rules
        firing = await asyncio.to_thread(prom.query, 'ALERTS{alertstate="firing"}')
        assert firing == []

        answered = 0
        # Every dashboard query is valid PromQL for this Prometheus, and most panels have data
        # once each target has been scraped a few times (rate() needs two samples).
        await wait_for(prom, "min(count_over_time(up[30s])) >= bool 3", 1.0)
        for expr in dashboard_queries():
            result = await asyncio.to_thread(prom.query, expr)  # raises on a PromQL error
            answered += bool(result)
        assert answered >= len(dashboard_queries()) // 2
        print("\nPromQL figures:", json.dumps(figures, indent=1))

        # promtool's lint of the exposition Prometheus scraped (naming conventions).
        promtool = shutil.which("promtool")
        if promtool:  # required above
            from prometheus_client import generate_latest

            for registry in (cloud.metrics.registry, edge.registry):
                text = generate_latest(registry).decode()
                res = subprocess.run(
                    [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
                )
                assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr
    finally:
        prom.stop()
        await edge_metrics.close()
        await cloud.stop(5)
