"""What the fault tests observe from outside the processes: results over Analytics.Subscribe,
Prometheus samples from /metrics, and moments when a log line appears.

Everything here only reads (loopback only, bounded waits), so a probe never changes what it measures.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Mapping

import grpc
from prometheus_client.parser import text_string_to_metric_families

from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc, common_pb2
from tests.cloud.conftest import OPERATOR_METADATA


def results(target: str, camera: str, n: int, timeout: float = 60.0) -> list[common_pb2.Result]:
    """The first ``n`` results of ``camera`` kept by the cloud, oldest first (AssertionError if fewer
    arrive within ``timeout``)."""
    out: list[common_pb2.Result] = []
    with grpc.insecure_channel(target) as ch:
        call = analytics_pb2_grpc.AnalyticsStub(ch).Subscribe(
            analytics_pb2.SubscribeRequest(camera_ids=[camera]), metadata=OPERATOR_METADATA, timeout=timeout
        )
        try:
            for ev in call:
                out.append(ev.result)
                if len(out) == n:
                    call.cancel()
                    break
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise AssertionError(
                    f"{len(out)} of {n} results of {camera} within {timeout}s: {exc.code().name}"
                ) from None
    return out


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``http://127.0.0.1:port/metrics`` as {(name, labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(port: int, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """One sample's value (labels must match exactly), or None when it is not exposed."""
    return scrape(port).get((name, frozenset((labels or {}).items())))


def when_logged(text: Callable[[], str], needle: str, after: int, timeout: float) -> float:
    """Wait until ``needle`` occurs more than ``after`` times in ``text()``; returns the monotonic
    time it was first seen (polled every 10 ms, so that is the resolution)."""
    deadline = time.monotonic() + timeout
    while True:
        if text().count(needle) > after:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} not logged a {after + 1}th time within {timeout}s")
        time.sleep(0.01)
