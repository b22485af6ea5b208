"""The cloud server: every component wired into one grpc.aio server.

    server = CloudServer(load_cloud_config("cloud.toml"))
    port = await server.start()          # health SERVING once the model is warm and recovery queued
    ...
    await server.stop()                  # drains: stops taking frames, finishes batches, then closes

The standard health service (``grpc.health.v1``) and server reflection are on
every server; other services answer UNAVAILABLE until the server is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from layercast.cloud.cluster import open_cluster
from layercast.cloud.config import CloudConfig
from layercast.cloud.ingest.engine import CodecLike, InferenceEngine, load_registry_codec
from layercast.cloud.ingest.pipeline import FramePipeline
from layercast.cloud.metrics import CloudMetrics
from layercast.cloud.results.hub import Hub, ResultSink, ResultSource
from layercast.cloud.results.store import Store, open_store
from layercast.cloud.results.viewer import FrameViewer
from layercast.cloud.rpc.health import HealthServicer
from layercast.cloud.rpc.interceptors import ReadinessInterceptor, RequestLogInterceptor
from layercast.cloud.rpc.limits import CallLimitInterceptor, CallLimits
from layercast.cloud.rpc.malformed import DecodeErrorInterceptor
from layercast.cloud.rpc.servicers.analytics import AnalyticsServicer
from layercast.cloud.rpc.servicers.edge_link import EdgeLinkServicer, send_event
from layercast.cloud.rpc.servicers.operator import LocalOperator, OperatorServicer
from layercast.cloud.security.audit import AuditLog
from layercast.cloud.security.auth import AuthRefusals, CameraAuthenticator
from layercast.cloud.security.enhance_audit import EnhanceAuditInterceptor
from layercast.cloud.security.operator_auth import OperatorAuthInterceptor
from layercast.cloud.security.ratelimit import KeyedLimiter, OperatorRateLimitInterceptor
from layercast.cloud.security.revocation import RevocationInterceptor, RevocationList
from layercast.cloud.security.tls import read_pem, server_credentials
from layercast.cloud.sessions import EnhancementRouter, EnhancementSource, SessionRegistry
from layercast.shared.clock import now_us
from layercast.shared.errors import ConfigError, LayercastError
from layercast.shared.prometheus import MetricsServer, metrics_enabled, start_metrics_server
from layercast.shared.rpc import (
    analytics_pb2,
    analytics_pb2_grpc,
    edge_pb2,
    edge_pb2_grpc,
    operator_pb2,
    operator_pb2_grpc,
)

if TYPE_CHECKING:
    from layercast.cloud.cluster.node import RedisCluster

log = logging.getLogger(__name__)

#: Full names of the layercast services this server hosts.
SERVICE_NAMES = (
    edge_pb2.DESCRIPTOR.services_by_name["EdgeLink"].full_name,
    analytics_pb2.DESCRIPTOR.services_by_name["Analytics"].full_name,
    operator_pb2.DESCRIPTOR.services_by_name["Operator"].full_name,
)


def server_options(cfg: CloudConfig) -> list[tuple[str, int]]:
    """Channel arguments chosen on purpose: message sizes, keepalive, no port sharing."""
    return [
        ("grpc.max_receive_message_length", cfg.limits.max_message_bytes),
        ("grpc.max_send_message_length", cfg.limits.max_message_bytes),
        # Ping idle connections so a dead link to a camera is noticed.
        ("grpc.keepalive_time_ms", int(cfg.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(cfg.keepalive_timeout_s * 1000)),
        # Every ping gets the keepalive's deadline: a keepalive may ride on a flow-control ping
        # already in flight, whose default deadline is 60 s (see edge/channel.py).
        ("grpc.http2.ping_timeout_ms", int(cfg.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Let cameras ping this often (their keepalive) without being sent GOAWAY "too_many_pings".
        ("grpc.http2.min_ping_interval_without_data_ms", int(cfg.min_client_ping_interval_s * 1000)),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", int(cfg.min_client_ping_interval_s * 1000)),
        # A second server on the same port must fail, not silently share it.
        ("grpc.so_reuseport", 0),
        # Bounds on connections that do nothing (slow-loris): no handshake in time, or no call for long.
        ("grpc.server_handshake_timeout_ms", int(cfg.limits.handshake_timeout_s * 1000)),
        ("grpc.max_connection_idle_ms", int(cfg.limits.connection_idle_s * 1000)),
        # Streams one connection may hold open (its further calls wait client-side).
        ("grpc.max_concurrent_streams", cfg.limits.max_concurrent_streams),
    ]


class CloudServer:
    """The whole cloud process (embedded mode: one process, SQLite store)."""

    def __init__(
        self,
        config: CloudConfig,
        *,
        codec: CodecLike | None = None,
        store: Store | None = None,
    ) -> None:
        self.config = config
        self._codec = codec
        self._store_override = store
        self.port: int | None = None
        self._ready = False
        self._state = "starting"
        self._server: aio.Server | None = None
        self._health = HealthServicer()  # grpc's, with a message for unknown service names
        self._tasks: list[asyncio.Task[None]] = []
        self._aux = ThreadPoolExecutor(max_workers=2, thread_name_prefix="layercast-aux")
        self.started_at = time.time()
        #: Callers refused by authentication, by reason (``layercast_cloud_auth_refusals_total``).
        self.auth_refusals = AuthRefusals()
        #: Prometheus metrics (``metrics.registry``), served on ``config.metrics_port`` from start().
        self.metrics = CloudMetrics(self)
        self.metrics_server: MetricsServer | None = None
        # Built by start():
        self.store: Store
        self.engine: InferenceEngine
        self.pipeline: FramePipeline
        self.hub: Hub
        self.registry: SessionRegistry
        self.router: EnhancementRouter
        self.viewer: FrameViewer
        #: Scale-out membership (``[cluster] backend = "redis"``); None in embedded mode.
        self.cluster: RedisCluster | None = None
        self.camera_auth: CameraAuthenticator
        self.operator_auth: OperatorAuthInterceptor
        #: The ``tls.crl`` check (None without a revocation list).
        self.revocation: RevocationInterceptor | None = None
        self.audit: AuditLog
        self.enhance_audit: EnhanceAuditInterceptor
        #: Rate limits (``layercast_cloud_rate_limited_total{kind}``), see ``layercast.cloud.security.ratelimit``.
        lim = config.limits
        self.frame_limiter = KeyedLimiter("camera_frames", lim.camera_frames_per_s, lim.camera_frames_burst)
        self.operator_limiter = KeyedLimiter(
            "operator_requests", lim.operator_requests_per_s, lim.operator_requests_burst
        )
        #: Calls in flight per caller, subscribers, streams waiting for a Hello (``layercast.cloud.rpc.limits``).
        self.call_limits = CallLimits(
            per_caller=lim.max_calls_per_caller,
            subscribers=lim.max_subscribers,
            pending_hellos=lim.max_pending_hellos,
        )

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def target(self) -> str:
        """``host:port`` a client on this machine can dial."""
        host = self.config.listen
        if host in ("0.0.0.0", "[::]", "::", ""):
            host = "127.0.0.1"
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"

    @property
    def transport(self) -> str:
        """How clients reach this server: ``mutual TLS``, ``TLS`` or ``plain text``."""
        if self.config.insecure:
            return "plain text"
        return "mutual TLS" if self.config.tls.client_ca is not None else "TLS"

    async def start(self) -> int:
        """Bind, load and warm up the model, queue unfinished frames, then report SERVING.

        Until then health says NOT_SERVING and the layercast services answer UNAVAILABLE.
        Returns the bound port (useful with ``port = 0``)."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        credentials = server_credentials(cfg)  # TLS, or plain text only when asked for (ConfigError)
        self._build_components()
        self._server = self._build_server()
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if credentials is None:
            port = self._server.add_insecure_port(cfg.address)
        else:
            port = self._server.add_secure_port(cfg.address, credentials)
        if port == 0:
            raise ConfigError(f"cannot listen on {cfg.address} (address in use or not available)")
        self.port = port
        await self._server.start()
        log.info("cloud listening on %s, %s (warming up)", self.target, self.transport)
        try:
            if metrics_enabled(cfg.metrics_port):
                self.metrics_server = await start_metrics_server(
                    self.metrics.registry, host=cfg.metrics_listen, port=cfg.metrics_port or 0
                )
            if not self.engine.loaded:
                self._state = "loading its model"
                from layercast.shared.codec.runtime import configure_threads

                configure_threads(cfg.threads)
                codec = await loop.run_in_executor(
                    self._aux,
                    lambda: load_registry_codec(cfg.model, device=cfg.device, runtime=cfg.runtime),
                )
                self.engine.attach(codec)
            self._state = "warming up"
            await loop.run_in_executor(self._aux, self.engine.warm_up)
            if self.cluster is not None:
                self._state = "joining the cluster"
                await self.cluster.start(
                    registry=self.registry, hub=self.hub, store=self.store, pipeline=self.pipeline
                )
            self._state = "recovering unfinished frames"
            self.pipeline.batcher.start()
            await self.pipeline.recover()
        except BaseException:
            await self.stop(0)
            raise
        self._tasks.append(asyncio.create_task(self._retention_loop(), name="retention"))
        if self.revocation is not None:
            self._tasks.append(asyncio.create_task(self._revocation_loop(self.revocation), name="revocation"))
        self._ready, self._state = True, "serving"
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "cloud serving on %s: model %s (%s), store %s",
            self.target,
            self.engine.base_model_id,
            self.engine.task,
            cfg.db_path,
        )
        return port

    def _build_components(self) -> None:
        cfg = self.config
        self.registry = SessionRegistry()
        self.router = EnhancementRouter(
            self.registry, timeout_s=cfg.enhancement_timeout_s, on_fetch=self.metrics.on_enhancement
        )
        self.camera_auth = CameraAuthenticator(
            cfg.camera_credentials(),
            allow_any=cfg.auth.allow_any_camera,
            require_cert=not cfg.insecure and cfg.tls.camera_certs_required,
            refusals=self.auth_refusals,
        )
        operator_tokens, roles = cfg.operator_credentials(), cfg.operator_roles()
        anonymous = cfg.auth.allow_anonymous_operators
        self.operator_auth = OperatorAuthInterceptor(
            operator_tokens, self._operator_prefixes(), self.auth_refusals, roles, allow_anonymous=anonymous
        )
        log.info("%s", roles.describe())
        if anonymous:
            log.warning(
                "auth.allow_anonymous_operators = true: the Operator and Analytics APIs on %s serve "
                "callers WITHOUT credentials (as %r, %s); development on this machine only",
                cfg.address,
                "anonymous",
                roles.role_of(""),
            )
        elif not len(operator_tokens) and not cfg.operator_certificates:
            log.warning(
                "no operator credentials: without auth.operator_tokens or tls.client_ca (operator "
                "certificates) every Operator and Analytics call is refused"
            )
        self.revocation = self._revocation()
        self.audit = AuditLog(cfg.audit_path)
        self.audit.check_writable("audit_log")
        self.enhance_audit = EnhanceAuditInterceptor(self.audit, roles, anonymous_allowed=anonymous)
        self.store = self._store_override or open_store(cfg.db_path)
        # The decoder's worker threads read a camera's stored chain through the store's own
        # lock-guarded connection (a store without one rebuilds no chains).
        self.engine = InferenceEngine(
            self._codec,
            max_pixels=cfg.limits.max_image_pixels,
            depth_encoding=cfg.depth_encoding,
            load_chain=getattr(getattr(self.store, "backend", None), "frame_chain", None),
        )
        # Embedded: the store is the log subscribers replay and the pipeline publishes to the hub.
        # Scale-out: every replica appends to one shared log, whose reader publishes to the hub.
        self.cluster = open_cluster(cfg)
        log_source: ResultSource = self.store if self.cluster is None else self.cluster.results
        self.hub = Hub(log_source, queue_size=cfg.subscriber_queue)
        sink: ResultSink = self.hub if self.cluster is None else self.cluster.results
        enhancements: EnhancementSource = self.router
        if self.cluster is not None:
            enhancements = self.cluster.enhancements(self.router, self.registry)
        self.pipeline = FramePipeline(
            store=self.store,
            engine=self.engine,
            hub=sink,
            registry=self.registry,
            deliver=send_event,
            max_batch_size=cfg.batching.max_batch_size,
            max_queue_delay_s=cfg.batching.max_queue_delay_ms / 1000.0,
            workers=cfg.batching.workers,
            queue_capacity=cfg.batching.queue_capacity,
            max_frame_bytes=cfg.limits.max_frame_bytes,
            backlog_per_camera=cfg.credits_per_camera,
            on_batch=self.metrics.on_batch,
            on_results=self.metrics.on_results,
        )
        self.viewer = FrameViewer(
            store=self.store,
            engine=self.engine,
            router=enhancements,
            executor=self._aux,
            cache_bytes=cfg.cache_bytes,
        )

    def _revocation(self) -> RevocationInterceptor | None:
        """The revocation check of ``tls.crl`` (None without one)."""
        tls = self.config.tls
        if tls.crl is None or tls.client_ca is None or self.config.insecure:
            return None
        crl = RevocationList(tls.crl, read_pem(tls.client_ca, "tls.client_ca"))
        log.info("revocation list %s: %d revoked certificates", tls.crl, len(crl.serials))

        def end_camera(camera_id: str, message: str) -> bool:
            session = self.registry.get(camera_id)
            if session is None:
                return False
            session.end("UNAUTHENTICATED", message)
            return True

        prefixes = [f"/{name}/" for name in SERVICE_NAMES]
        return RevocationInterceptor(crl, prefixes, self.auth_refusals, end_camera=end_camera)

    async def _revocation_loop(self, revocation: RevocationInterceptor) -> None:
        while True:
            await asyncio.sleep(self.config.tls.crl_check_s)
            try:
                revocation.check()
            except Exception:
                log.exception("revocation list check failed")

    @staticmethod
    def _operator_prefixes() -> list[str]:
        """Method prefixes of the Analytics and Operator services (the operators' APIs)."""
        return [f"/{SERVICE_NAMES[1]}/", f"/{SERVICE_NAMES[2]}/"]

    def _build_server(self) -> aio.Server:
        cfg = self.config
        server = aio.server(
            interceptors=[
                RequestLogInterceptor(),
                # Outside everything that may refuse an Enhance call, so refusals are audited too.
                self.enhance_audit,
                ReadinessInterceptor(lambda: self._ready, lambda: f"the cloud is {self._state}"),
                # Revoked client certificates (tls.crl) before anything else looks at the caller.
                *([self.revocation] if self.revocation is not None else []),
                # Identity (token or operator certificate; camera certificates refused) and role.
                self.operator_auth,
                # After the identity check, which names the operator the limit is counted for.
                OperatorRateLimitInterceptor(self.operator_limiter, self._operator_prefixes()),
                CallLimitInterceptor(self.call_limits, self._operator_prefixes()),
                # Last, so readiness and authentication answer before a request is found malformed.
                DecodeErrorInterceptor(),
            ],
            options=server_options(cfg),
            maximum_concurrent_rpcs=cfg.limits.max_concurrent_rpcs,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        edge_pb2_grpc.add_EdgeLinkServicer_to_server(
            EdgeLinkServicer(
                auth=self.camera_auth,
                engine=self.engine,
                pipeline=self.pipeline,
                registry=self.registry,
                router=self.router,
                store=self.store,
                credits=cfg.credits_per_camera,
                heartbeat_interval_ms=cfg.heartbeat_interval_ms,
                max_frame_bytes=cfg.limits.max_frame_bytes,
                hello_timeout_s=cfg.limits.hello_timeout_s,
                frame_limiter=self.frame_limiter,
                presence=self.cluster,
                limits=self.call_limits,
                outgoing_queue=cfg.limits.camera_outgoing_queue,
                max_id_length=cfg.limits.max_id_length,
            ),
            server,
        )
        analytics_pb2_grpc.add_AnalyticsServicer_to_server(
            AnalyticsServicer(
                hub=self.hub,
                pipeline=self.pipeline,
                engine=self.engine,
                executor=self._aux,
                limits=self.call_limits,
                max_concurrent_infer=cfg.limits.max_concurrent_infer,
                max_id_length=cfg.limits.max_id_length,
            ),
            server,
        )
        local = LocalOperator(
            store=self.store,
            registry=self.registry,
            viewer=self.viewer,
            default_limit=100,
            max_limit=cfg.limits.max_list_frames,
        )
        operator_api = (
            local if self.cluster is None else self.cluster.operator_api(local, self.router, audit=self.audit)
        )
        operator_pb2_grpc.add_OperatorServicer_to_server(OperatorServicer(operator_api), server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        return server

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, stop taking frames, end camera streams (they reconnect
        and resend what was not acknowledged), finish every acknowledged frame, then close."""
        if self._server is None:
            return
        grace = self.config.shutdown_grace_s if grace is None else grace
        deadline = time.monotonic() + grace
        self._ready, self._state = False, "shutting down"
        await self._health.enter_graceful_shutdown()
        self.pipeline.stop_accepting()
        self.registry.end_all("UNAVAILABLE", "the cloud is shutting down; reconnect later")
        await self.pipeline.close_feeders(max(0.0, deadline - time.monotonic()))
        drained = await self.pipeline.batcher.close(timeout=max(0.0, deadline - time.monotonic()))
        if not drained:
            log.warning(
                "shutdown grace ran out with frames still in the batcher; they are processed after restart"
            )
        if self.cluster is not None:  # the last results reach the other replicas' subscribers too
            await self.cluster.flush(max(0.0, deadline - time.monotonic()))
        self.hub.close()
        await self._server.stop(max(0.0, deadline - time.monotonic()))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.cluster is not None:
            await self.cluster.close()
        await self.store.close()
        if self.metrics_server is not None:
            await self.metrics_server.close()
            self.metrics_server = None
        self._aux.shutdown(wait=False, cancel_futures=True)
        self._server = None
        log.info("cloud stopped")

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def _retention_loop(self) -> None:
        r = self.config.retention
        while True:
            try:
                report = await self.store.apply_retention(
                    now_us=now_us(), max_age_s=r.max_age_s, max_frames_per_camera=r.max_frames_per_camera
                )
                if report.frames_deleted or report.results_deleted:
                    log.info(
                        "retention removed %d frames and %d results",
                        report.frames_deleted,
                        report.results_deleted,
                    )
            except Exception:
                log.exception("retention sweep failed")
            if self.cluster is not None:  # the shared results stream keeps results as long as the stores
                try:
                    await self.cluster.results.trim(r.max_age_s)
                except LayercastError as exc:
                    log.warning("could not trim the shared results stream: %s", exc)
            await asyncio.sleep(r.sweep_interval_s)


async def serve(
    config: CloudConfig, *, codec: CodecLike | None = None, stop: asyncio.Event | None = None
) -> None:
    """Run a server until ``stop`` is set (or forever), then stop it gracefully."""
    server = CloudServer(config, codec=codec)
    await server.start()
    try:
        if stop is None:
            await server.wait_for_termination()
        else:
            await stop.wait()
    finally:
        await server.stop()
