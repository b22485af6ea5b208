"""Test helpers around Prometheus: scrape a /metrics endpoint, run a real Prometheus server.

Blocking HTTP calls run in a worker thread (``asyncio.to_thread``) because the
/metrics endpoints under test are served by the test's own event loop.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (for programs that cannot take port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Scrape:
    """One /metrics answer, parsed."""

    content_type: str
    text: str
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def total(self, name: str, **labels: str) -> float:
        """Sum of every sample ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= set(ls))

    def labels_of(self, name: str) -> list[dict[str, str]]:
        return [dict(ls) for (n, ls) in self.samples if n == name]


def http_get(url: str, *, accept: str | None = None, method: str = "GET", timeout: float = 10.0):
    """(status, headers, body) of one request; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, method=method, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


async def scrape(url: str) -> Scrape:
    """GET ``url`` (a /metrics endpoint served by this loop) and parse the Prometheus text."""
    status, headers, body = await asyncio.to_thread(http_get, url)
    assert status == 200, f"{url} answered {status}: {body[:200]!r}"
    text = body.decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = float(s.value)
    return Scrape(headers.get("Content-Type", ""), text, samples)


class PrometheusServer:
    """A real ``prometheus`` process on 127.0.0.1 scraping the given targets every second."""

    def __init__(
        self, workdir: Path, jobs: dict[str, list[str]], *, rule_files: tuple[Path, ...] = ()
    ) -> None:
        self.binary = shutil.which("prometheus")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = workdir / "prometheus.yml"
        lines = [
            "global:",
            "  scrape_interval: 1s",
            "  scrape_timeout: 900ms",
            "  evaluation_interval: 1s",
        ]
        if rule_files:
            lines.append("rule_files:")
            lines += [f"  - {p}" for p in rule_files]
        lines.append("scrape_configs:")
        for job, targets in jobs.items():
            lines += [
                f"  - job_name: {job}",
                "    static_configs:",
                f"      - targets: {json.dumps(targets)}",
            ]
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.binary is not None
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                status, _, _ = http_get(self.url + "/-/ready", timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready after {timeout}s: {self.log.read_text()[-2000:]}")

    def query(self, promql: str) -> list[dict]:
        """The instant vector (or scalar as one item) of ``promql`` now; raises on an API error."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        status, _, body = http_get(url)
        data = json.loads(body)
        if status != 200 or data.get("status") != "success":
            raise ValueError(f"query {promql!r} failed ({status}): {data.get('error', body[:200])}")
        result = data["data"]
        if result["resultType"] == "vector":
            return result["result"]
        return [{"metric": {}, "value": result["result"]}]

    def scalar(self, promql: str) -> float | None:
        """The single value of ``promql`` (None when the result is empty)."""
        res = self.query(promql)
        if not res:
            return None
        assert len(res) == 1, f"{promql} returned {len(res)} series"
        return float(res[0]["value"][1])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
