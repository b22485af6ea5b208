"""Prometheus metrics of one edge process (one camera), in a registry of its own.

Counters are read from the app's :class:`~layercast.edge.stats.EdgeStats` at
scrape time (one source of truth: ``--stats`` and ``/metrics`` agree), gauges
from the outbox and the link, and the two histograms (encode latency, bits
per pixel) are observed as frames are encoded by :class:`EdgeMetrics`, the
``EdgeStats`` the app uses by default. Every series carries the ``camera``
label (one value per process), never a frame number.

Served by the app on ``http://metrics_listen:metrics_port/metrics`` when
``metrics_port`` is set (see :mod:`layercast.shared.prometheus`). Names:

========================================================  =======  ==============================
layercast_edge_frames_captured_total                      counter  frames taken from the source
layercast_edge_frames_encoded_total                       counter
layercast_edge_frames_encoded_by_kind_total{kind}         counter  intra / predicted base layers
layercast_edge_intra_requests_total                       counter  the cloud asked for an intra frame
layercast_edge_frames_queued_total                        counter  appended to the outbox
layercast_edge_frames_sent_total                          counter  writes to a stream, resends too
layercast_edge_frames_resent_total                        counter
layercast_edge_frames_acked_total                         counter  duplicate acks included
layercast_edge_frames_acked_duplicate_total               counter
layercast_edge_frames_dropped_total{reason}               counter  see ``DROP_REASONS``
layercast_edge_base_encoded_bytes_total                   counter
layercast_edge_base_sent_bytes_total                      counter  resends included
layercast_edge_enhancement_stored_bytes_total             counter
layercast_edge_enhancement_served_bytes_total             counter
layercast_edge_enhancement_requests_total{outcome}        counter  served / expired / not_found / store_error
layercast_edge_errors_total{kind}                         counter  enhancement_store / outbox
layercast_edge_heartbeats_sent_total                      counter
layercast_edge_connects_total                             counter  streams welcomed
layercast_edge_reconnects_total                           counter  connection attempts after the first
layercast_edge_disconnects_total                          counter
layercast_edge_connected                                  gauge    1 while a stream is open
layercast_edge_source_up                                  gauge    1 while the source delivers frames (a
                                                                   live camera: 0 from a drop, stall or failed
                                                                   open until its next frame)
layercast_edge_source_reconnects_total                    counter  attempts to reopen a live camera
layercast_edge_source_failures_total                      counter  drops, stalls, failed opens, ended streams
layercast_edge_source_last_frame_time_seconds             gauge    unix time of the source's newest frame
layercast_edge_enhancement_store_healthy                  gauge    0 while the store fails (disk full,
                                                                   unwritable, cannot open); store enabled only
layercast_edge_outbox_frames                              gauge    link queue depth (not yet acked)
layercast_edge_frames_in_flight                           gauge    sent, not yet acked
layercast_edge_start_time_seconds                         gauge    unix time
layercast_edge_encode_seconds                             histo.   per encoded batch
layercast_edge_frame_bpp{layer}                           histo.   base / enhancement, per frame
layercast_build_info{version,base_model_id,enhancement_model_id}  gauge  1
========================================================  =======  ==============================
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from layercast.edge.stats import EdgeStats
from layercast.shared.prometheus import BPP_BUCKETS, BuildInfoCollector

if TYPE_CHECKING:
    from layercast.edge.app import EdgeApp

#: Per-batch encode time (a CPU batch of a few frames takes 0.05-2 s).
ENCODE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: ``frames_dropped_total`` reasons and the EdgeStats field counting each.
DROP_REASONS = {
    "capture_overflow": "frames_dropped_capture",  # the encoder fell behind the camera
    "encode_error": "frames_encode_failed",
    "outbox_full": "frames_dropped_outbox",  # dropped by the outbox policy (full, too large)
    "outbox_error": "frames_lost_outbox_error",  # could not be persisted (disk)
    "too_large": "frames_too_large",  # above the cloud's max_frame_bytes
    "rejected": "frames_rejected",  # refused by the cloud
    "sequence_collision": "sequence_collisions",
}

#: Enhancement request outcomes always exposed (others appear when they happen).
ENHANCEMENT_OUTCOMES = ("served", "expired", "not_found", "store_error")


class EdgeMetrics(EdgeStats):
    """The EdgeStats an edge app uses by default: the counters, plus the histograms observed per frame."""

    def __init__(self, camera_id: str = "camera-0") -> None:
        super().__init__()
        self.camera_id = camera_id
        self.encode_seconds_histogram = Histogram(
            "layercast_edge_encode_seconds",
            "Time to encode one batch of frames (base and enhancement layers).",
            ["camera"],
            buckets=ENCODE_BUCKETS,
            registry=None,
        )
        self.bpp_histogram = Histogram(
            "layercast_edge_frame_bpp",
            "Size of each encoded frame's layer in bits per pixel.",
            ["camera", "layer"],
            buckets=BPP_BUCKETS,
            registry=None,
        )
        self._encode = self.encode_seconds_histogram.labels(camera_id)
        self._bpp_base = self.bpp_histogram.labels(camera_id, "base")
        self._bpp_enh = self.bpp_histogram.labels(camera_id, "enhancement")

    def record_encode(self, frames: int, seconds: float, base_bytes: int) -> None:
        super().record_encode(frames, seconds, base_bytes)
        self._encode.observe(seconds)

    def record_frame_size(self, pixels: int, base_bytes: int, enhancement_bytes: int) -> None:
        super().record_frame_size(pixels, base_bytes, enhancement_bytes)
        if pixels > 0:
            self._bpp_base.observe(8.0 * base_bytes / pixels)
            if enhancement_bytes:
                self._bpp_enh.observe(8.0 * enhancement_bytes / pixels)

    def histograms(self) -> list[Histogram]:
        return [self.encode_seconds_histogram, self.bpp_histogram]


class EdgeCollector(Collector):
    """Reads an EdgeApp's counters, outbox and link at scrape time (on the loop thread)."""

    def __init__(self, app: EdgeApp) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        app = self._app
        s = app.stats
        cam = app.config.camera_id

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(f"layercast_edge_{name}", doc, labels=["camera"])
            family.add_metric([cam], value)
            return family

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"layercast_edge_{name}", doc, labels=["camera"])
            family.add_metric([cam], value)
            return family

        yield counter("frames_captured", "Frames taken from the source.", s.frames_captured)
        yield counter("frames_encoded", "Frames encoded into base and enhancement layers.", s.frames_encoded)
        by_kind = CounterMetricFamily(
            "layercast_edge_frames_encoded_by_kind",
            "Base layers encoded, intra or predicted (P-frames).",
            labels=["camera", "kind"],
        )
        by_kind.add_metric([cam, "intra"], s.frames_intra)
        by_kind.add_metric([cam, "predicted"], s.frames_predicted)
        yield by_kind
        yield counter(
            "intra_requests",
            "Times the cloud asked for an intra frame (it lost the reference).",
            s.intra_requests,
        )
        yield counter("frames_queued", "Encoded frames appended to the outbox.", s.frames_queued)
        yield counter("frames_sent", "Base frames written to a stream, resends included.", s.frames_sent)
        yield counter("frames_resent", "Base frames written again after a reconnect.", s.frames_resent)
        yield counter(
            "frames_acked", "Acknowledgements from the cloud (duplicates included).", s.frames_acked
        )
        yield counter(
            "frames_acked_duplicate", "Acks saying the cloud already had the frame.", s.frames_acked_duplicate
        )
        dropped = CounterMetricFamily(
            "layercast_edge_frames_dropped",
            "Frames lost before the cloud stored them, by reason.",
            labels=["camera", "reason"],
        )
        for reason, attr in DROP_REASONS.items():
            dropped.add_metric([cam, reason], getattr(s, attr, 0))
        yield dropped
        yield counter("base_encoded_bytes", "Bytes of base layers encoded.", s.base_bytes_encoded)
        yield counter(
            "base_sent_bytes",
            "Bytes of base layers written to the link, resends included.",
            s.base_bytes_sent,
        )
        yield counter(
            "enhancement_stored_bytes",
            "Bytes of enhancement layers kept for on-demand requests.",
            s.enhancement_bytes_stored,
        )
        yield counter(
            "enhancement_served_bytes",
            "Bytes of enhancement layers sent to the cloud.",
            s.enhancement_bytes_served,
        )
        requests = CounterMetricFamily(
            "layercast_edge_enhancement_requests",
            "Enhancement requests from the cloud, by outcome.",
            labels=["camera", "outcome"],
        )
        outcomes = {o: 0 for o in ENHANCEMENT_OUTCOMES}
        outcomes["served"] = s.enhancement_served
        outcomes.update(s.enhancement_unavailable)
        for outcome, n in outcomes.items():
            requests.add_metric([cam, outcome], n)
        yield requests
        errors = CounterMetricFamily(
            "layercast_edge_errors", "Storage failures the edge survived, by kind.", labels=["camera", "kind"]
        )
        errors.add_metric([cam, "enhancement_store"], s.store_errors)
        errors.add_metric([cam, "outbox"], s.outbox_errors)
        yield errors
        yield counter("heartbeats_sent", "Heartbeats written to the link.", s.heartbeats_sent)
        yield counter("connects", "Streams the cloud welcomed.", s.connects)
        yield counter("reconnects", "Connection attempts after the first.", s.reconnects)
        yield counter("disconnects", "Streams that ended.", s.disconnects)
        yield gauge("connected", "1 while a stream to the cloud is open.", float(s.connected))
        if app.config.store.enabled:
            yield gauge(
                "enhancement_store_healthy",
                "0 from an enhancement store failure (disk full, unwritable, cannot open) until an "
                "enhancement is kept again; base frames flow regardless.",
                float(s.store_healthy),
            )
        health = getattr(app.source, "health", None)
        yield gauge("source_up", "1 while the source delivers frames.", float(health.up if health else 1))
        yield counter(
            "source_reconnects", "Attempts to reopen a live camera.", health.reconnects if health else 0
        )
        yield counter(
            "source_failures",
            "Live camera drops, stalls (no packet within source.read_timeout_s), failed opens and ended streams.",
            health.failures if health else 0,
        )
        if health is not None:
            yield gauge(
                "source_last_frame_time_seconds",
                "Unix time of the source's newest frame.",
                health.last_frame_time,
            )
        outbox = app.outbox
        yield gauge(
            "outbox_frames",
            "Frames waiting in the outbox (not yet acknowledged).",
            len(outbox) if outbox else 0,
        )
        yield gauge(
            "frames_in_flight", "Frames sent and not yet acknowledged.", outbox.in_flight if outbox else 0
        )
        yield gauge("start_time_seconds", "When this edge started (unix time).", s.started_at)
        if isinstance(s, EdgeMetrics):
            for histogram in s.histograms():
                yield from histogram.collect()


def _model_ids(app: EdgeApp) -> tuple[str, str]:
    enc = app.encoder
    if enc is None:
        return "", ""
    return enc.base_model_id or "", enc.enhancement_model_id or ""


def edge_registry(app: EdgeApp) -> CollectorRegistry:
    """A registry of its own for ``app``: its metrics, build info and process metrics."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(EdgeCollector(app))
    registry.register(BuildInfoCollector(lambda: _model_ids(app)))
    ProcessCollector(registry=registry)
    return registry
