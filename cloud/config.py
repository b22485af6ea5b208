"""The cloud server's configuration: one typed place, filled from defaults, a
TOML file, ``LAYERCAST_CLOUD_*`` environment variables and command-line flags.

    cfg = load_cloud_config("cloud.toml", overrides={"port": 0})

A TOML file mirrors the dataclasses::

    listen = "0.0.0.0"
    port = 50051
    data_dir = "/var/lib/layercast"
    [batching]
    max_batch_size = 8
    max_queue_delay_ms = 10
    [auth]
    camera_tokens = ["cam-1=sha256:…"]
    operator_tokens = ["alice=sha256:…", "dash=sha256:…"]
    enhancers = ["alice", "web"]    # tokens or operator certificates that may Enhance; others view
    [limits]
    camera_frames_per_s = 200       # per camera; above it its stream is read more slowly
    operator_requests_per_s = 1000  # per operator; above it RESOURCE_EXHAUSTED
    [tls]                       # or insecure = true: plain text, explicitly (logged as a warning)
    cert = "pki/server.pem"
    key = "pki/server.key"
    client_ca = "pki/ca.pem"    # mutual TLS: cameras are who their certificates say
    crl = "pki/crl.pem"         # revoked certificates (layercast certs revoke), re-read on change
    [cluster]                   # several replicas sharing cameras and results (docs/scale-out.md)
    backend = "redis"
    redis_url = "redis://redis:6379/0"

Environment: ``LAYERCAST_CLOUD_BATCHING__MAX_BATCH_SIZE=8``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from layercast.cloud.security.credentials import TokenTable
from layercast.cloud.security.roles import OperatorRoles
from layercast.shared.config import load_config
from layercast.shared.errors import ConfigError

ENV_PREFIX = "LAYERCAST_CLOUD_"
MiB = 1 << 20


def _bounds(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"min": lo, "max": hi}


@dataclass
class RetentionConfig:
    """How long the cloud keeps frames and results (whichever limit is hit first)."""

    max_age_s: float = field(default=7 * 24 * 3600.0, metadata=_bounds(1.0))
    max_frames_per_camera: int = field(default=10_000, metadata=_bounds(1))
    sweep_interval_s: float = field(default=60.0, metadata=_bounds(0.05, 86400.0))


@dataclass
class BatchingConfig:
    """Dynamic batching across cameras (as Triton does)."""

    max_batch_size: int = field(default=8, metadata=_bounds(1, 1024))
    #: How long the oldest waiting frame may wait for a fuller batch; 0 = dispatch at once.
    max_queue_delay_ms: float = field(default=10.0, metadata=_bounds(0.0, 60_000.0))
    #: Batches computed at the same time (threads running decode + inference), each with
    #: ``threads`` intra-op threads. 2 puts the second core to work; on this 2-core machine under
    #: load 2 workers served 0.96-1.16x the frames/s of 1 with batching on, while 2 intra-op
    #: threads served 0.75-0.92x (docs/speed.md, `layercast bench service --workers 1 2`).
    workers: int = field(default=2, metadata=_bounds(1, 64))
    #: Frames waiting for inference before ingest stops reading from cameras (back-pressure).
    queue_capacity: int = field(default=1024, metadata=_bounds(1))


@dataclass
class AuthConfig:
    """Who may connect. Tokens are stored as ``sha256:<hex>`` hashes only."""

    #: ``camera_id=sha256:<hex>`` entries (never quoted in errors: a token may be there by mistake).
    camera_tokens: list[str] = field(default_factory=list, metadata={"secret": True})
    #: A TOML file with a ``[cameras]`` table: ``camera_id = "sha256:<hex>"``, and optionally an
    #: ``[operators]`` table: ``name = "sha256:<hex>"`` (added to ``operator_tokens``).
    credentials_file: Path | None = None
    #: ``name=sha256:<hex>`` entries for the Operator and Analytics APIs. Every call to those APIs
    #: needs one of these tokens (``authorization: Bearer``) or an operator certificate
    #: (``layercast:operator:<name>``, with ``tls.client_ca``); without either it is UNAUTHENTICATED.
    operator_tokens: list[str] = field(default_factory=list, metadata={"secret": True})
    #: Accept any camera id and token (closed test networks only; logged as a warning).
    allow_any_camera: bool = False
    #: Operator names (of tokens or operator certificates) that may call Operator.Enhance; everyone
    #: else is a viewer (list, preview, subscribe, infer). See ``layercast.cloud.security.roles``.
    enhancers: list[str] = field(default_factory=list)
    #: Development only: Operator and Analytics calls without credentials are served, as the viewer
    #: ``anonymous`` (an enhancer only if ``enhancers`` lists ``anonymous``). Refused at start unless
    #: ``listen`` is a loopback address; logged as a warning.
    allow_anonymous_operators: bool = False


@dataclass
class TlsConfig:
    """The server's TLS (files made by ``layercast certs``; see ``layercast.shared.pki``).

    With ``client_ca`` every connection must present a client certificate signed by it, checked
    in the handshake (Python gRPC cannot ask for an optional one): cameras present theirs, whose
    ``layercast:camera:<id>`` URI is the camera's identity, operators and subscribers an operator
    certificate (plus their token when ``auth.operator_tokens`` is set)."""

    #: PEM certificate chain and private key of the server.
    cert: Path | None = None
    key: Path | None = None
    #: PEM file of the CA that signs client certificates (mutual TLS); unset = server TLS only.
    client_ca: Path | None = None
    #: A camera must be identified by its certificate (a token alone is refused). Unset = true when
    #: ``client_ca`` is set. False lets cameras with certificates naming no camera (another PKI) prove
    #: who they are with a token; a certificate that names a camera must still match the Hello.
    require_camera_certs: bool | None = None
    #: PEM X.509 CRL signed by ``client_ca`` (``layercast certs revoke``): certificates on it are refused
    #: (UNAUTHENTICATED) on every call and stream; the file is re-read when it changes.
    crl: Path | None = None
    #: How often open streams are checked against a changed ``crl`` (new calls are checked at once).
    crl_check_s: float = field(default=2.0, metadata=_bounds(0.1, 3600.0))

    @property
    def camera_certs_required(self) -> bool:
        if self.require_camera_certs is None:
            return self.client_ca is not None
        return self.require_camera_certs


@dataclass
class LimitsConfig:
    """Sizes decided on purpose, checked before anything large is allocated."""

    max_message_bytes: int = field(default=16 * MiB, metadata=_bounds(64 * 1024, 1024 * MiB))
    max_frame_bytes: int = field(default=4 * MiB, metadata=_bounds(1024))
    max_image_pixels: int = field(default=4096 * 4096, metadata=_bounds(64))
    #: Time an edge has to send its Hello after opening the stream (edges send it at once); a
    #: stream without one is refused (UNAUTHENTICATED) after this long.
    hello_timeout_s: float = field(default=3.0, metadata=_bounds(0.1, 600.0))
    #: EdgeLink streams waiting for their Hello at a time; more are refused (RESOURCE_EXHAUSTED).
    max_pending_hellos: int = field(default=256, metadata=_bounds(1, 1_000_000))
    #: Calls in flight on the whole server (every service; gRPC's ``maximum_concurrent_rpcs``):
    #: more are refused with RESOURCE_EXHAUSTED. Leave room for every camera's stream.
    max_concurrent_rpcs: int = field(default=8192, metadata=_bounds(16, 1_000_000))
    #: Streams one HTTP/2 connection may have open (``grpc.max_concurrent_streams``); a client's
    #: further calls on that connection wait for one to end.
    max_concurrent_streams: int = field(default=256, metadata=_bounds(1, 100_000))
    #: Operator and Analytics calls one caller (its operator name, else its address) may have in
    #: flight, Subscribe streams included; more are refused with RESOURCE_EXHAUSTED.
    max_calls_per_caller: int = field(default=256, metadata=_bounds(1, 1_000_000))
    #: Analytics.Subscribe streams served at a time, all callers together (each holds a queue of
    #: ``subscriber_queue`` results at most); more are refused with RESOURCE_EXHAUSTED.
    max_subscribers: int = field(default=1024, metadata=_bounds(1, 1_000_000))
    #: Messages queued down one camera's stream (acks, credits, enhancement requests) at most: a
    #: camera that stops reading its stream has it ended with RESOURCE_EXHAUSTED.
    camera_outgoing_queue: int = field(default=1024, metadata=_bounds(16, 1_000_000))
    #: Longest model id, software version, capability or camera id a Hello, Infer or Subscribe
    #: request may carry (characters); longer is refused with INVALID_ARGUMENT before it is stored.
    max_id_length: int = field(default=128, metadata=_bounds(16, 4096))
    #: Images in Analytics.Infer at a time (all callers): Infer runs after camera frames, and
    #: calls above this are refused with RESOURCE_EXHAUSTED, so a flood of Infer never holds up
    #: the cameras' frames.
    max_concurrent_infer: int = field(default=4, metadata=_bounds(1, 10_000))
    #: Frames per ListFrames answer at most.
    max_list_frames: int = field(default=500, metadata=_bounds(1, 100_000))
    #: A connection must finish its handshake (TLS if any, the HTTP/2 preface and SETTINGS) within
    #: this time or it is closed: a slow-loris client that sends nothing or half a preface holds a
    #: socket for this long at most.
    handshake_timeout_s: float = field(default=10.0, metadata=_bounds(0.1, 600.0))
    #: Frames per second one camera may send (0 = no limit), with bursts of up to
    #: ``camera_frames_burst``. Above it the camera's stream is read more slowly (flow control and
    #: credits slow the edge; no frame is refused or lost). See ``layercast.cloud.security.ratelimit``.
    camera_frames_per_s: float = field(default=200.0, metadata=_bounds(0.0))
    camera_frames_burst: int = field(default=400, metadata=_bounds(1))
    #: Operator and Analytics requests per second of one operator (its token's name; the caller's
    #: address when those APIs are open), 0 = no limit. Above it: RESOURCE_EXHAUSTED. A guard against
    #: runaway clients, not a quota: a Subscribe is one request however long it streams.
    operator_requests_per_s: float = field(default=1000.0, metadata=_bounds(0.0))
    operator_requests_burst: int = field(default=2000, metadata=_bounds(1))
    #: A connection with no call open for this long is sent GOAWAY and closed (clients reconnect
    #: when they next call; camera and subscriber streams are calls, so they are never idle).
    connection_idle_s: float = field(default=300.0, metadata=_bounds(0.5, 86400.0))


@dataclass
class ClusterConfig:
    """Scale-out: several cloud replicas sharing, through Redis, which replica holds which camera's
    stream, operator calls forwarded to it, and one log of results every subscriber reads
    (``layercast.cloud.cluster``, docs/scale-out.md). ``none`` = one process, nothing shared."""

    backend: Literal["none", "redis"] = "none"
    #: ``redis://[user:password@]host:port/db``, ``rediss://`` (TLS) or ``unix:///path.sock``.
    redis_url: str = field(default="redis://127.0.0.1:6379/0", metadata={"secret": True})
    #: This replica's name in the cluster; unset = ``<hostname>-<random>``, kept in
    #: ``<data_dir>/replica-id`` so a restart with the same store keeps it. Must differ per replica.
    replica_id: str | None = None
    #: Prefix of every Redis key (several deployments may share one Redis).
    key_prefix: str = "layercast"
    #: Lease on a camera (and on the replica's liveness), refreshed every third of it while held: a
    #: replica that dies stops being routed to within this time.
    ownership_ttl_s: float = field(default=15.0, metadata=_bounds(1.0, 3600.0))
    #: Longest wait for another replica's answer to a forwarded call (the caller's deadline when shorter).
    forward_timeout_s: float = field(default=15.0, metadata=_bounds(0.1, 600.0))
    #: Results kept in the shared log (approximately; also trimmed to ``retention.max_age_s``).
    results_maxlen: int = field(default=100_000, metadata=_bounds(100))
    #: The key every replica signs its messages through Redis with (HMAC-SHA256 over each inbox
    #: message and each results entry): at least 32 characters, the same on every replica
    #: (``openssl rand -hex 32``). Required with ``backend = "redis"`` (here, in ``secret_file`` or in
    #: ``LAYERCAST_CLOUD_CLUSTER__SECRET``); a message without a valid tag is refused and counted in
    #: ``layercast_cloud_cluster_rejected_total{reason}``.
    secret: str | None = field(default=None, metadata={"secret": True})
    #: A file holding the cluster secret (a Kubernetes Secret mounted as a file); surrounding
    #: whitespace is ignored.
    secret_file: Path | None = None
    #: Password of the Redis user (``AUTH``; ``requirepass`` or an ACL user), when not in redis_url.
    redis_password: str | None = field(default=None, metadata={"secret": True})
    #: A file holding that password (whitespace around it ignored).
    redis_password_file: Path | None = None
    #: PEM file of the CA that signed Redis's certificate, for ``rediss://`` (unset = the system CAs).
    redis_ca_file: Path | None = None
    #: A result whose sequence is more than this ahead of the last one read for its camera is refused
    #: (counted as ``sequence_jump``): one forged far-ahead sequence would otherwise hide every later
    #: result of that camera from subscribers.
    max_sequence_jump: int = field(default=1_000_000, metadata=_bounds(1))

    def __repr__(self) -> str:  # ``--print-config`` and logs: never the password nor the secret
        shown: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        shown["redis_url"] = re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", self.redis_url)
        for key in ("secret", "redis_password"):
            if shown[key] is not None:
                shown[key] = "***"
        return f"ClusterConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def secret_bytes(self) -> bytes:
        """The cluster secret (from ``secret`` or ``secret_file``); ConfigError when missing or short."""
        value = self.secret
        if value is None and self.secret_file is not None:
            try:
                value = self.secret_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"cluster.secret_file = {str(self.secret_file)!r} cannot be read: {exc.strerror or exc}"
                ) from None
        if not value:
            raise ConfigError(
                "cluster.backend = redis needs cluster.secret or cluster.secret_file (the same on every "
                "replica; e.g. `openssl rand -hex 32`): replicas sign what they exchange through Redis"
            )
        if len(value) < 32:
            raise ConfigError("cluster.secret must be at least 32 characters (value not shown)")
        return value.encode()

    def redis_connection_options(self) -> dict[str, Any]:
        """Keyword arguments for redis-py beside the URL: the password and the CA of ``rediss://``."""
        options: dict[str, Any] = {}
        password = self.redis_password
        if password is None and self.redis_password_file is not None:
            try:
                password = self.redis_password_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"cluster.redis_password_file = {str(self.redis_password_file)!r} cannot be read: "
                    f"{exc.strerror or exc}"
                ) from None
        if password:
            options["password"] = password
        if self.redis_url.startswith("rediss://"):
            options["ssl_cert_reqs"] = "required"
            if self.redis_ca_file is not None:
                options["ssl_ca_certs"] = str(self.redis_ca_file)
        return options

    def validate(self) -> None:
        if self.backend == "none":
            return
        if not re.fullmatch(r"(redis|rediss|unix)://\S+", self.redis_url):
            raise ConfigError(
                "cluster.redis_url must look like redis://host:6379/0, rediss://host:6380/0 or "
                "unix:///path/redis.sock (value not shown: it may hold a password)"
            )
        if self.secret is not None and self.secret_file is not None:
            raise ConfigError("cluster.secret and cluster.secret_file are both set; choose one")
        self.secret_bytes()
        if self.redis_ca_file is not None and not self.redis_url.startswith("rediss://"):
            raise ConfigError("cluster.redis_ca_file is set, but cluster.redis_url is not rediss:// (TLS)")
        if self.replica_id is not None and not _REPLICA_ID.fullmatch(self.replica_id):
            raise ConfigError(
                f"cluster.replica_id = {self.replica_id!r} must be 1-128 letters, digits or . _ : - "
                "(or unset for <hostname>-<random>)"
            )
        if not _REPLICA_ID.fullmatch(self.key_prefix):
            raise ConfigError(
                f"cluster.key_prefix = {self.key_prefix!r} must be 1-128 letters, digits or . _ : -"
            )


_REPLICA_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback literals (127.0.0.0/8, ::1); False for 0.0.0.0, [::], names."""
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class CloudConfig:
    """Everything `layercast cloud` needs."""

    listen: str = "127.0.0.1"
    port: int = field(default=50051, metadata=_bounds(0, 65535))
    #: Serve plain-text gRPC without TLS. Must be asked for explicitly (the server refuses to start
    #: without ``[tls]`` otherwise) and is logged as a warning: closed test networks, or behind a
    #: proxy that terminates TLS.
    insecure: bool = False
    data_dir: Path = Path("layercast-cloud")
    #: SQLite file; default ``<data_dir>/cloud.db``.
    store_path: Path | None = None
    #: JSON-lines audit log of Operator.Enhance calls; default ``<data_dir>/audit.jsonl``.
    audit_log: Path | None = None
    #: Registry name of the codec (``default`` = the shipped small model).
    model: str = "default"
    #: ``cpu``, ``cuda``, ``cuda:1`` …; unset = cuda when present, else cpu.
    device: str | None = None
    #: Intra-op threads of decode and inference, torch's and ONNX Runtime's alike (inter-op: 1);
    #: each of ``batching.workers`` runs its batch with them. Set when the server loads its model.
    #: 1 thread × 2 workers uses both cores of a 2-core machine (docs/speed.md, threads).
    threads: int = field(default=1, metadata=_bounds(1, 256))
    #: What runs the float32 transforms on the CPU: "onnxruntime" runs the detector and the
    #: preview synthesis in ONNX Runtime (faster, docs/speed.md), "torch" everything in torch.
    #: On CUDA torch runs them either way (shared/codec/runtime.py).
    runtime: Literal["onnxruntime", "torch"] = "onnxruntime"
    #: How depth maps travel in results.
    depth_encoding: Literal["png16", "f16"] = "png16"
    #: Credits a camera's stream starts with (Welcome.initial_credits): frames it may send before
    #: the cloud grants more; also the most frames of one camera waiting for inference.
    credits_per_camera: int = field(default=32, metadata=_bounds(1, 100_000))
    heartbeat_interval_ms: int = field(default=5000, metadata=_bounds(100, 3_600_000))
    #: Results a subscriber may have queued before it is told it lagged.
    subscriber_queue: int = field(default=256, metadata=_bounds(1, 1_000_000))
    enhancement_timeout_s: float = field(default=10.0, metadata=_bounds(0.01, 600.0))
    #: Bytes of reconstructions and previews kept in memory (LRU).
    cache_bytes: int = field(default=256 * MiB, metadata=_bounds(0))
    #: HTTP/2 keepalive pings (detects dead links to cameras).
    keepalive_time_s: float = field(default=30.0, metadata=_bounds(1.0, 86400.0))
    keepalive_timeout_s: float = field(default=10.0, metadata=_bounds(0.5, 3600.0))
    #: Shortest interval between a client's keepalive pings the server tolerates.
    min_client_ping_interval_s: float = field(default=1.0, metadata=_bounds(0.1, 3600.0))
    #: Seconds ``stop()`` waits for in-flight frames and RPCs.
    shutdown_grace_s: float = field(default=10.0, metadata=_bounds(0.0, 3600.0))
    #: Serve Prometheus metrics on http://metrics_listen:metrics_port/metrics (0 = any free port; unset or -1 = off).
    metrics_port: int | None = field(default=None, metadata=_bounds(-1, 65535))
    metrics_listen: str = "127.0.0.1"
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    @property
    def db_path(self) -> Path:
        """Where the SQLite store lives."""
        return self.store_path if self.store_path is not None else self.data_dir / "cloud.db"

    @property
    def audit_path(self) -> Path:
        """Where Operator.Enhance calls are recorded."""
        return self.audit_log if self.audit_log is not None else self.data_dir / "audit.jsonl"

    def validate(self) -> None:
        """Cross-field checks; raise ConfigError saying what to change."""
        lim = self.limits
        if lim.max_frame_bytes > lim.max_message_bytes - 1024:
            raise ConfigError(
                f"limits.max_frame_bytes = {lim.max_frame_bytes} must be at least 1 KiB below "
                f"limits.max_message_bytes = {lim.max_message_bytes} (a frame travels inside a message)"
            )
        if not self.listen.strip():
            raise ConfigError("listen must be an address such as 127.0.0.1, 0.0.0.0 or [::]")
        if self.keepalive_timeout_s >= self.keepalive_time_s:
            raise ConfigError(
                f"keepalive_timeout_s = {self.keepalive_timeout_s} must be shorter than "
                f"keepalive_time_s = {self.keepalive_time_s}"
            )
        self.validate_tls()
        cameras = self.camera_credentials()
        if not len(cameras) and not self.auth.allow_any_camera and not self.tls.camera_certs_required:
            raise ConfigError(
                "no camera credentials configured: set tls.client_ca (cameras with certificates from "
                "`layercast certs`), auth.camera_tokens (camera_id=sha256:<hex>) or auth.credentials_file, "
                "or auth.allow_any_camera = true on a closed test network"
            )
        self.operator_roles()
        self.validate_operator_access()

    def validate_operator_access(self) -> None:
        """Operator and Analytics calls without credentials only on loopback, only when asked for."""
        if self.auth.allow_anonymous_operators and not is_loopback(self.listen):
            raise ConfigError(
                f"auth.allow_anonymous_operators = true (LAYERCAST_CLOUD_AUTH__ALLOW_ANONYMOUS_OPERATORS, "
                f"--allow-anonymous-operators) would open the Operator and Analytics APIs to anyone who "
                f"reaches listen = {self.listen!r}; it is allowed on a loopback address only (127.0.0.1, "
                "::1). On a network give operators tokens (auth.operator_tokens) or certificates "
                "(tls.client_ca and `layercast certs operator`)"
            )

    @property
    def operator_certificates(self) -> bool:
        """Operators may identify by certificate (mutual TLS)."""
        return not self.insecure and self.tls.client_ca is not None

    def validate_tls(self) -> None:
        """TLS or an explicit ``insecure = true``, and TLS settings that fit together."""
        tls = self.tls
        if self.insecure:
            if tls.cert is not None or tls.key is not None or tls.client_ca is not None:
                raise ConfigError("insecure = true and [tls] settings are both given; choose one")
            return
        if tls.cert is None or tls.key is None:
            raise ConfigError(
                "TLS is required: set tls.cert and tls.key (make them with `layercast certs`), or "
                "insecure = true (LAYERCAST_CLOUD_INSECURE=true, --insecure) for plain text on a closed network"
            )
        if tls.crl is not None and tls.client_ca is None:
            raise ConfigError(
                "tls.crl needs tls.client_ca (the CA that signed the certificates and the list)"
            )
        if tls.require_camera_certs and tls.client_ca is None:
            raise ConfigError(
                "tls.require_camera_certs = true needs tls.client_ca (the CA of camera certificates)"
            )

    def camera_credentials(self) -> TokenTable:
        """Camera id → token hash, from ``auth.camera_tokens`` and ``auth.credentials_file``."""
        table = TokenTable.parse(self.auth.camera_tokens, source="auth.camera_tokens")
        if self.auth.credentials_file is not None:
            table = table.merged(TokenTable.from_toml(self.auth.credentials_file))
        return table

    def operator_credentials(self) -> TokenTable:
        """Operator name → token hash, from ``auth.operator_tokens`` and the ``[operators]`` table of
        ``auth.credentials_file``."""
        table = TokenTable.parse(self.auth.operator_tokens, source="auth.operator_tokens")
        if self.auth.credentials_file is not None:
            table = table.merged(
                TokenTable.from_toml(self.auth.credentials_file, "operators", required=False)
            )
        return table

    def operator_roles(self) -> OperatorRoles:
        """Who may Enhance (``auth.enhancers``), checked against the operator tokens."""
        return OperatorRoles.from_config(
            self.auth.enhancers,
            self.operator_credentials().names(),
            certificates=self.operator_certificates,
            anonymous=self.auth.allow_anonymous_operators,
        )

    @property
    def address(self) -> str:
        """``host:port`` to bind (IPv6 literals in brackets)."""
        host = self.listen
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"


def load_cloud_config(
    toml_path: str | Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> CloudConfig:
    """Defaults < TOML file < ``LAYERCAST_CLOUD_*`` environment < ``overrides`` (dotted keys)."""
    return load_config(
        CloudConfig, toml_path=toml_path, env_prefix=ENV_PREFIX, overrides=overrides, environ=environ
    )
