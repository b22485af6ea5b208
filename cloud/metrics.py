"""Prometheus metrics of one cloud server, in a registry of its own.

Two kinds of sources:

* read at scrape time (on the event loop, see :mod:`layercast.shared.prometheus`):
  the pipeline's counters, the batcher's queue, the connected cameras, the
  hub's subscribers, the pending enhancement requests, readiness, build info;
* observed as things happen, through the hooks the server wires:
  :meth:`CloudMetrics.on_batch` (the batcher's ``on_batch``: batch size,
  queue delay and compute time, reported separately as Triton does),
  :meth:`CloudMetrics.on_results` (results stored and published: end-to-end
  latency from capture to result, bits per pixel) and
  :meth:`CloudMetrics.on_enhancement` (each round trip to a camera for an
  enhancement layer).

Labels are bounded: ``camera`` (cameras with credentials), ``outcome``,
``code`` (gRPC status names), ``reason`` (a fixed list). Never a frame number.

==================================================  =======  ===========================================
layercast_cloud_frames_total{camera,outcome}        counter  base frames received: stored / duplicate / rejected
layercast_cloud_frame_errors_total{code}            counter  frames refused or failed, by gRPC status
layercast_cloud_frames_recovered_total              counter  stored frames re-queued at start-up
layercast_cloud_results_total{camera}               counter  results stored and published
layercast_cloud_frames_decoded_total{kind}          counter  camera frames decoded: intra / predicted
layercast_cloud_intra_requests_total{reason}        counter  cameras asked for an intra frame, see ``INTRA_REASONS``
layercast_cloud_base_processed_bytes_total{camera}  counter  base bytes of frames with a result
layercast_cloud_frame_bpp                           histo.   base layer bpp of each result
layercast_cloud_end_to_end_seconds{camera}          histo.   capture (edge clock) → result published
layercast_cloud_batch_size                          histo.   frames per inference batch
layercast_cloud_queue_delay_seconds                 histo.   per frame: queued → dispatched in a batch
layercast_cloud_inference_seconds                   histo.   per batch: decode + task model (compute)
layercast_cloud_inference_failures_total            counter  batch items that failed
layercast_cloud_batcher_queued_frames               gauge    waiting for a batch
layercast_cloud_batcher_outstanding_frames          gauge    submitted, result not yet delivered
layercast_cloud_active_streams                      gauge    open EdgeLink streams
layercast_cloud_camera_connected{camera}            gauge    1/0, cameras seen since start
layercast_cloud_stream_connects_total{camera}       counter  streams opened (reconnects show here)
layercast_cloud_edge_outbox_frames{camera}          gauge    the edge's queue, from its heartbeats
layercast_cloud_edge_dropped_frames{camera}         gauge    the edge's persistent drop count, from heartbeats
layercast_cloud_enhancement_requests_total          counter  round trips to a camera
layercast_cloud_enhancement_failures_total{reason}  counter  see ``FAILURE_REASONS``
layercast_cloud_enhancement_seconds                 histo.   successful round trips
layercast_cloud_enhancement_received_bytes_total    counter
layercast_cloud_enhancement_pending                 gauge
layercast_cloud_subscribers                         gauge    live Analytics subscribers
layercast_cloud_subscriber_lag_max                  gauge    results queued for the furthest-behind one
layercast_cloud_subscribers_lagged_total            counter  subscribers cut off for lagging
layercast_cloud_auth_refusals_total{reason}         counter  callers refused, see ``auth.REFUSAL_REASONS``
layercast_cloud_rate_limited_total{kind}            counter  camera_frames delayed / operator_requests refused
layercast_cloud_limit_refusals_total{limit}         counter  calls refused at a bound (``layercast.cloud.rpc.limits``)
layercast_cloud_audit_write_failures_total          counter  Enhance audit lines that could not be written
layercast_cloud_cluster_redis_up                    gauge    scaled mode: 1 while lease renewals reach Redis
layercast_cloud_cluster_cameras_held                gauge    scaled mode: camera leases this replica holds
layercast_cloud_cluster_cameras_superseded_total    counter  streams ended: the camera's lease went elsewhere
layercast_cloud_cluster_calls_total{direction}      counter  forwarded (sent) / served calls between replicas
layercast_cloud_cluster_results_appended_total      counter  results written to the shared Redis stream
layercast_cloud_cluster_results_backlog             gauge    results waiting to be written
layercast_cloud_cluster_results_dropped_total       counter  results not shared (backlog full; kept locally)
layercast_cloud_cluster_rejected_total{reason}      counter  messages from Redis refused (``cluster.signing.REASONS``)
layercast_cloud_ready                               gauge    1 once serving
layercast_build_info{version,base_model_id,enhancement_model_id}  gauge  1
==================================================  =======  ===========================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from layercast.cloud.cluster.signing import REASONS
from layercast.cloud.ingest.batcher import BatchRecord
from layercast.cloud.ingest.frame import INTRA_REASONS
from layercast.shared.errors import (
    CameraOffline,
    EdgeStoreFailed,
    FrameExpired,
    FrameNotFound,
    RequestTimeout,
)
from layercast.shared.prometheus import BPP_BUCKETS, BuildInfoCollector

if TYPE_CHECKING:
    from layercast.cloud.server import CloudServer

log = logging.getLogger(__name__)

BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)
QUEUE_DELAY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INFERENCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
END_TO_END_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
ENHANCEMENT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: Enhancement failure reasons (label values), most specific error class first.
FAILURE_REASONS: tuple[tuple[str, type[BaseException] | None], ...] = (
    ("camera_offline", CameraOffline),
    ("timeout", RequestTimeout),
    ("expired", FrameExpired),
    ("not_found", FrameNotFound),
    ("store_error", EdgeStoreFailed),
    ("cancelled", None),
    ("error", None),
)

#: ``frames_total`` outcomes always exposed per connected camera.
FRAME_OUTCOMES = ("stored", "duplicate", "rejected")


def failure_reason(error: BaseException) -> str:
    """The ``reason`` label of a failed enhancement round trip."""
    for reason, cls in FAILURE_REASONS:
        if cls is not None and isinstance(error, cls):
            return reason
    import asyncio

    return "cancelled" if isinstance(error, asyncio.CancelledError) else "error"


class CloudMetrics:
    """The metrics of one :class:`~layercast.cloud.server.CloudServer` (``registry``) and its hooks."""

    def __init__(self, server: CloudServer) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.batch_size = Histogram(
            "layercast_cloud_batch_size",
            "Frames per inference batch (dynamic batching).",
            buckets=BATCH_SIZE_BUCKETS,
            registry=reg,
        )
        self.queue_delay = Histogram(
            "layercast_cloud_queue_delay_seconds",
            "Time each frame waited in the batcher queue before its batch was dispatched.",
            buckets=QUEUE_DELAY_BUCKETS,
            registry=reg,
        )
        self.inference = Histogram(
            "layercast_cloud_inference_seconds",
            "Compute time of one batch: decoding the base layers and running the task model.",
            buckets=INFERENCE_BUCKETS,
            registry=reg,
        )
        self.inference_failures = Counter(
            "layercast_cloud_inference_failures", "Batch items that failed to decode or infer.", registry=reg
        )
        self.results = Counter(
            "layercast_cloud_results", "Results stored and published, per camera.", ["camera"], registry=reg
        )
        self.base_bytes = Counter(
            "layercast_cloud_base_processed_bytes",
            "Bytes of base layers of the frames that got a result.",
            ["camera"],
            registry=reg,
        )
        self.bpp = Histogram(
            "layercast_cloud_frame_bpp",
            "Base layer size of each processed frame in bits per pixel.",
            buckets=BPP_BUCKETS,
            registry=reg,
        )
        self.end_to_end = Histogram(
            "layercast_cloud_end_to_end_seconds",
            "From capture at the edge (edge clock) to the result stored and published.",
            ["camera"],
            buckets=END_TO_END_BUCKETS,
            registry=reg,
        )
        self.enhancement_requests = Counter(
            "layercast_cloud_enhancement_requests",
            "Enhancement layers asked of cameras (one per round trip).",
            registry=reg,
        )
        self.enhancement_failures = Counter(
            "layercast_cloud_enhancement_failures",
            "Enhancement round trips that failed, by reason.",
            ["reason"],
            registry=reg,
        )
        for reason, _ in FAILURE_REASONS:
            self.enhancement_failures.labels(reason)
        self.enhancement_seconds = Histogram(
            "layercast_cloud_enhancement_seconds",
            "Time to get an enhancement layer from a camera (successful round trips).",
            buckets=ENHANCEMENT_BUCKETS,
            registry=reg,
        )
        self.enhancement_bytes = Counter(
            "layercast_cloud_enhancement_received_bytes",
            "Bytes of enhancement layers received from cameras.",
            registry=reg,
        )
        reg.register(CloudCollector(server))
        reg.register(BuildInfoCollector(lambda: _model_ids(server)))
        ProcessCollector(registry=reg)

    # -- hooks (all called on the event loop) --------------------------------------------------------
    def on_batch(self, record: BatchRecord) -> None:
        """The batcher's ``on_batch`` observer."""
        self.batch_size.observe(record.size)
        for delay in record.queue_delays_s:
            self.queue_delay.observe(max(0.0, delay))
        self.inference.observe(record.compute_s)
        if record.failed:
            self.inference_failures.inc(record.failed)

    def on_results(self, results: Iterable[Any]) -> None:
        """Results (``layercast.v1.Result``) just stored and published. Never raises (it runs
        inside the pipeline's result sink)."""
        now_us = time.time_ns() // 1000
        try:
            for r in results:
                cam = r.camera_id
                self.results.labels(cam).inc()
                self.base_bytes.labels(cam).inc(r.base_bytes)
                self.bpp.observe(r.base_bpp)
                if r.capture_time_us > 0:
                    self.end_to_end.labels(cam).observe(max(0.0, (now_us - r.capture_time_us) / 1e6))
        except Exception:
            log.exception("recording result metrics failed")

    def on_enhancement(
        self, camera_id: str, seconds: float, error: BaseException | None, nbytes: int
    ) -> None:
        """One enhancement round trip to ``camera_id`` ended (``error`` None on success)."""
        self.enhancement_requests.inc()
        if error is None:
            self.enhancement_seconds.observe(seconds)
            self.enhancement_bytes.inc(nbytes)
        else:
            self.enhancement_failures.labels(failure_reason(error)).inc()


def _model_ids(server: CloudServer) -> tuple[str, str]:
    engine = getattr(server, "engine", None)
    if engine is None or not engine.loaded:
        return "", ""
    return engine.base_model_id, engine.enhancement_model_id


class CloudCollector(Collector):
    """Reads the server's components at scrape time; families are always yielded (maybe empty)."""

    def __init__(self, server: CloudServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        server = self._server
        pipeline = getattr(server, "pipeline", None)
        registry = getattr(server, "registry", None)
        hub = getattr(server, "hub", None)
        router = getattr(server, "router", None)

        yield GaugeMetricFamily(
            "layercast_cloud_ready", "1 once the server is serving.", value=float(server.ready)
        )

        frames = CounterMetricFamily(
            "layercast_cloud_frames",
            "Base frames received from cameras, by outcome.",
            labels=["camera", "outcome"],
        )
        errors = CounterMetricFamily(
            "layercast_cloud_frame_errors", "Frames refused or failed, by gRPC status.", labels=["code"]
        )
        recovered = CounterMetricFamily(
            "layercast_cloud_frames_recovered", "Stored frames without a result re-queued at start-up."
        )
        queued = GaugeMetricFamily("layercast_cloud_batcher_queued_frames", "Frames waiting for a batch.")
        outstanding = GaugeMetricFamily(
            "layercast_cloud_batcher_outstanding_frames",
            "Frames submitted whose result is not delivered yet.",
        )
        if pipeline is not None:
            st = pipeline.stats
            counts = dict(st.by_camera)
            connected = set(registry.connects) if registry is not None else set()
            for cam in connected | {c for c, _ in counts}:
                for outcome in FRAME_OUTCOMES:
                    counts.setdefault((cam, outcome), 0)
            for (cam, outcome), n in sorted(counts.items()):
                frames.add_metric([cam, outcome], n)
            for code, n in sorted(st.rejected_by_code.items(), key=lambda item: item[0].name):
                errors.add_metric([code.name], n)
            recovered.add_metric([], st.recovered)
            queued.add_metric([], pipeline.batcher.queued)
            outstanding.add_metric([], pipeline.batcher.outstanding)
        yield from (frames, errors, recovered, queued, outstanding)

        decoded = CounterMetricFamily(
            "layercast_cloud_frames_decoded", "Camera frames decoded, by kind.", labels=["kind"]
        )
        engine = getattr(server, "engine", None)
        by_kind = engine.decoded_by_kind if engine is not None else {}
        for kind in ("intra", "predicted"):
            decoded.add_metric([kind], by_kind.get(kind, 0))
        intra = CounterMetricFamily(
            "layercast_cloud_intra_requests",
            "Cameras asked for an intra frame (IntraRequest), by reason.",
            labels=["reason"],
        )
        if pipeline is not None:
            for reason in INTRA_REASONS:
                intra.add_metric([reason.lower()], pipeline.stats.intra_requests[reason])
        yield from (decoded, intra)

        streams = GaugeMetricFamily("layercast_cloud_active_streams", "Open EdgeLink streams.")
        connected_g = GaugeMetricFamily(
            "layercast_cloud_camera_connected", "1 while the camera has an open stream.", labels=["camera"]
        )
        connects = CounterMetricFamily(
            "layercast_cloud_stream_connects", "EdgeLink streams opened, per camera.", labels=["camera"]
        )
        edge_queue = GaugeMetricFamily(
            "layercast_cloud_edge_outbox_frames",
            "Frames queued at the edge (its last heartbeat).",
            labels=["camera"],
        )
        edge_dropped = GaugeMetricFamily(
            "layercast_cloud_edge_dropped_frames",
            "Frames the edge has dropped in total (its last heartbeat).",
            labels=["camera"],
        )
        if registry is not None:
            sessions = registry.sessions()
            streams.add_metric([], len(sessions))
            for cam, n in sorted(registry.connects.items()):
                connected_g.add_metric([cam], float(registry.is_online(cam)))
                connects.add_metric([cam], n)
            for s in sorted(sessions, key=lambda s: s.camera_id):
                edge_queue.add_metric([s.camera_id], s.queued_frames)
                edge_dropped.add_metric([s.camera_id], s.dropped_frames)
        yield from (streams, connected_g, connects, edge_queue, edge_dropped)

        pending = GaugeMetricFamily(
            "layercast_cloud_enhancement_pending", "Enhancement requests awaiting a camera."
        )
        if router is not None:
            pending.add_metric([], router.pending)
        yield pending

        subs = GaugeMetricFamily("layercast_cloud_subscribers", "Live Analytics subscribers.")
        lag = GaugeMetricFamily(
            "layercast_cloud_subscriber_lag_max", "Results queued for the subscriber furthest behind."
        )
        lagged = CounterMetricFamily(
            "layercast_cloud_subscribers_lagged", "Subscribers cut off because their queue was full."
        )
        if hub is not None:
            subs.add_metric([], hub.subscriber_count)
            lag.add_metric([], max(hub.lag(), default=0))
            lagged.add_metric([], hub.lagged_total)
        yield from (subs, lag, lagged)

        refusals = CounterMetricFamily(
            "layercast_cloud_auth_refusals",
            "Callers refused by authentication (cameras and operators), by reason.",
            labels=["reason"],
        )
        auth = getattr(server, "auth_refusals", None)
        if auth is not None:
            for reason, n in auth.counts.items():
                refusals.add_metric([reason], n)
        yield refusals

        limited = CounterMetricFamily(
            "layercast_cloud_rate_limited",
            "Frames slowed (camera_frames) and requests refused (operator_requests) by rate limits.",
            labels=["kind"],
        )
        for limiter in (getattr(server, "frame_limiter", None), getattr(server, "operator_limiter", None)):
            if limiter is not None:
                limited.add_metric([limiter.kind], limiter.limited)
        yield limited
        bounds = CounterMetricFamily(
            "layercast_cloud_limit_refusals",
            "Calls refused at a bound: per_caller, subscribers, pending_hellos, infer.",
            labels=["limit"],
        )
        call_limits = getattr(server, "call_limits", None)
        if call_limits is not None:
            for limit in ("per_caller", "subscribers", "pending_hellos", "infer"):
                bounds.add_metric([limit], call_limits.refused.get(limit, 0))
        yield bounds
        yield from _cluster_families(server)
        audit = getattr(server, "enhance_audit", None)
        yield CounterMetricFamily(
            "layercast_cloud_audit_write_failures",
            "Audit lines of Operator.Enhance calls that could not be written.",
            value=audit.write_failures if audit is not None else 0,
        )


#: Scaled mode's single-value families: (type, name, help, ``ClusterStats`` field).
_CLUSTER_FAMILIES: tuple[tuple[type, str, str, str], ...] = (
    (
        GaugeMetricFamily,
        "layercast_cloud_cluster_redis_up",
        "1 while this replica's lease renewals reach Redis (scaled mode).",
        "redis_up",
    ),
    (
        GaugeMetricFamily,
        "layercast_cloud_cluster_cameras_held",
        "Camera leases this replica holds.",
        "cameras_held",
    ),
    (
        CounterMetricFamily,
        "layercast_cloud_cluster_cameras_superseded",
        "Camera streams ended here because the camera's lease went to another replica.",
        "cameras_superseded",
    ),
    (
        CounterMetricFamily,
        "layercast_cloud_cluster_results_appended",
        "Results written to the stream shared by the replicas.",
        "results_appended",
    ),
    (
        GaugeMetricFamily,
        "layercast_cloud_cluster_results_backlog",
        "Results waiting to be written to the shared stream.",
        "results_backlog",
    ),
    (
        CounterMetricFamily,
        "layercast_cloud_cluster_results_dropped",
        "Results not shared with the other replicas because the backlog was full (kept in the local store).",
        "results_dropped",
    ),
)


def _cluster_families(server: CloudServer) -> Iterator[Metric]:
    """Scaled mode's figures (families without samples in embedded mode)."""
    cluster = getattr(server, "cluster", None)
    st = cluster.stats() if cluster is not None else None
    for kind, name, doc, field in _CLUSTER_FAMILIES:
        fam = kind(name, doc)
        if st is not None:
            fam.add_metric([], float(getattr(st, field)))
        yield fam
    calls = CounterMetricFamily(
        "layercast_cloud_cluster_calls",
        "Calls between replicas: sent to others (forwarded) and served for others (served).",
        labels=["direction"],
    )
    if st is not None:
        calls.add_metric(["forwarded"], st.forwarded_calls)
        calls.add_metric(["served"], st.served_calls)
    yield calls
    rejected = CounterMetricFamily(
        "layercast_cloud_cluster_rejected",
        "Inbox messages, results entries and forwarded calls from Redis refused, by reason "
        "(unsigned, bad_signature, misaddressed, replayed, unauthorised, sequence_jump, malformed).",
        labels=["reason"],
    )
    if st is not None:
        for reason in REASONS:
            rejected.add_metric([reason], float(st.rejected.get(reason, 0)))
    yield rejected
