"""`layercast demo` as a user runs it: starts everything, serves the page over HTTPS (its CA in the
data dir), stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def _acked(metrics_url: str) -> float:
    """A camera's ``layercast_edge_frames_acked_total`` from its /metrics."""
    body = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == "layercast_edge_frames_acked_total"
    )


def test_demo_runs_and_stops_cleanly_on_ctrl_c(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "layercast",
        "demo",
        "--grpc-port",
        "0",
        "--web-port",
        "0",
        "--metrics-port",
        "0",
        "--fps",
        "2",
        "--data-dir",
        str(tmp_path),
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            if line.startswith("  data "):
                break
        text = "".join(out)
        assert "layercast demo is running" in text, text
        # cloud and cameras share the process at the cloud's thread settings (docs/speed.md, threads)
        assert (
            "compute      1 intra-op thread(s), 2 batch workers, CPU transforms placed by runtime = 'onnxruntime'"
            in text
        ), text
        web = re.search(r"operator\s+(https://\S+)", text).group(1)
        metrics = re.search(r"metrics\s+(http://\S+/metrics)", text).group(1)
        cameras = re.search(r"^\s+(http://\S+/metrics.*) \(cameras\)$", text, re.M).group(1).split()
        assert len(cameras) == 3, text
        # frames flow: every camera has had one acknowledged (polled; the bound is for a slow machine)
        deadline = time.monotonic() + 120
        while not all(_acked(url) > 0 for url in cameras):
            assert time.monotonic() < deadline and proc.poll() is None, "a camera got no frame acknowledged"
            time.sleep(0.1)
        ca = ssl.create_default_context(cafile=str(tmp_path / "pki" / "ca.pem"))
        login = urllib.request.urlopen(web, timeout=10, context=ca).read().decode()
        assert "Sign in" in login or "sign in" in login.lower()
        body = urllib.request.urlopen(metrics, timeout=10).read().decode()
        assert "layercast_build_info" in body
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text += rest
    assert proc.returncode == 0, text[-3000:]
    assert "stopped cleanly" in text
    acked = [int(m) for m in re.findall(r"acked (\d+)", text)]
    assert len(acked) == 3 and all(a > 0 for a in acked), text[-2000:]
