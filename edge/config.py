"""Typed configuration of one edge process (one camera).

Filled, later sources winning, from the defaults below, a TOML file, environment
variables prefixed ``LAYERCAST_EDGE_`` and command-line flags (see
:func:`load_edge_config`). Nested tables map to TOML tables and to double
underscores in environment names::

    camera_id = "door-1"
    data_dir = "/var/lib/layercast-edge"

    [link]
    cloud = "cloud.example:50051"
    ca_cert = "/etc/layercast/ca.pem"

    [source]
    spec = "folder:/srv/frames"
    fps = 5

    LAYERCAST_EDGE_LINK__CLOUD=cloud.example:50051 LAYERCAST_EDGE_SOURCE__FPS=10

The camera's token is never printed: it is excluded from ``repr`` and may come
from a file (``token_file``) instead of the command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from layercast.shared.config import load_config
from layercast.shared.errors import ConfigError

#: What Hello.camera_id accepts (see proto/layercast/v1/edge.proto).
CAMERA_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

Device = Literal["auto", "cpu", "cuda"]
SyncMode = Literal["NORMAL", "FULL"]
Encryption = Literal["on", "off"]

MiB = 1024 * 1024


@dataclass
class BackoffConfig:
    """Reconnect delays: exponential, capped, with jitter.

    The n-th consecutive failure waits ``d = min(max_s, initial_s * multiplier**n)``
    scaled by jitter: ``d * (1 - jitter) + uniform(0, d * jitter)``; ``jitter = 1``
    is "full jitter" (uniform in ``[0, d]``), ``jitter = 0`` no randomness.
    """

    initial_s: float = field(default=0.5, metadata={"min": 0.0})
    max_s: float = field(default=30.0, metadata={"min": 0.0})
    multiplier: float = field(default=2.0, metadata={"min": 1.0})
    jitter: float = field(default=1.0, metadata={"min": 0.0, "max": 1.0})


@dataclass
class LinkConfig:
    """The gRPC link to the cloud."""

    #: host:port of the cloud's EdgeLink service.
    cloud: str = "127.0.0.1:50051"
    #: Plain-text HTTP/2 (no TLS). Only when explicitly asked for; a warning is logged.
    insecure: bool = False
    #: PEM file of the CA that signed the cloud's certificate (TLS).
    ca_cert: Path | None = None
    #: PEM files of this camera's client certificate and key (mutual TLS).
    client_cert: Path | None = None
    client_key: Path | None = None
    #: Override of the TLS server name checked against the cloud's certificate.
    server_name: str | None = None
    #: HTTP/2 keepalive: ping the cloud after this long without activity ...
    keepalive_time_ms: int = field(default=20_000, metadata={"min": 1_000})
    #: ... and declare the link dead when the ping is not answered within this. A link that goes
    #: dark is noticed within keepalive_time_ms + keepalive_timeout_ms (tests/e2e/test_faults_network.py).
    keepalive_timeout_ms: int = field(default=10_000, metadata={"min": 100})
    #: Largest message the edge sends (base frames and enhancement responses).
    max_send_message_bytes: int = field(default=16 * MiB, metadata={"min": 64 * 1024})
    #: Largest message the edge accepts from the cloud (acks, requests: all tiny).
    max_receive_message_bytes: int = field(default=1 * MiB, metadata={"min": 4 * 1024})
    #: Time allowed for the cloud's Welcome after the Hello.
    welcome_timeout_s: float = field(default=10.0, metadata={"min": 0.1})
    #: Heartbeat period when idle, used when the Welcome does not set one.
    heartbeat_interval_s: float = field(default=5.0, metadata={"min": 0.05})
    #: Reconnect when frames are in flight and nothing arrived from the cloud for this long (0: never).
    stall_timeout_s: float = field(default=60.0, metadata={"min": 0.0})
    #: Local cap on frames in flight, whatever credits the cloud grants.
    max_in_flight: int = field(default=256, metadata={"min": 1})
    #: Enhancement requests served at once (each reads one file).
    max_concurrent_requests: int = field(default=4, metadata={"min": 1})
    #: On shutdown, time given to the link to deliver what is queued before closing.
    drain_timeout_s: float = field(default=5.0, metadata={"min": 0.0})
    backoff: BackoffConfig = field(default_factory=BackoffConfig)

    def validate(self) -> None:
        if not self.insecure and (self.client_cert is None) != (self.client_key is None):
            raise ConfigError("link.client_cert and link.client_key must be given together")
        if self.backoff.max_s < self.backoff.initial_s:
            raise ConfigError(
                f"link.backoff.max_s = {self.backoff.max_s} is below link.backoff.initial_s = {self.backoff.initial_s}"
            )


@dataclass
class SourceConfig:
    """Where frames come from, and how fast.

    ``spec`` is one of ``synthetic`` (or ``synthetic:SEED``), ``folder:PATH``
    (or a plain directory path), ``video:PATH``, ``v4l2:/dev/videoN`` /
    ``device:N``, ``rtsp://...`` / ``rtsps://...`` (see :mod:`layercast.edge.sources`).
    """

    spec: str = "synthetic"
    fps: float = field(default=5.0, metadata={"min": 0.01, "max": 1000.0})
    #: Start again at the first image when a folder or video ends.
    loop: bool = False
    #: Stop after this many frames (0: no limit).
    limit: int = field(default=0, metadata={"min": 0})
    #: Synthetic camera only: frame size and seed.
    width: int = field(default=256, metadata={"min": 16, "max": 8192})
    height: int = field(default=192, metadata={"min": 16, "max": 8192})
    seed: int = 0
    #: Frames captured but not yet encoded; beyond this the oldest is dropped (and counted).
    queue_frames: int = field(default=8, metadata={"min": 1})
    #: Live cameras (RTSP, V4L2): time allowed to connect, and to wait for the next packet before
    #: the camera counts as stalled and is reopened.
    open_timeout_s: float = field(default=10.0, metadata={"min": 0.1})
    read_timeout_s: float = field(default=5.0, metadata={"min": 0.1})
    #: RTSP transport: "tcp" (interleaved, through firewalls) or "udp".
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    #: Delays between attempts to reopen a live camera that dropped or cannot be reached.
    reconnect: BackoffConfig = field(default_factory=BackoffConfig)


@dataclass
class EncoderConfig:
    """The codec that turns frames into base and enhancement bitstreams."""

    #: Registry name or id of the codec (``load_codec``).
    model: str = "default"
    #: "auto" picks CUDA when torch sees a GPU, else the CPU.
    device: Device = "auto"
    #: Largest batch encoded at once when frames are waiting.
    batch_max: int = field(default=4, metadata={"min": 1, "max": 256})
    #: Seconds of video between intra frames (predicted frames in between, when the codec has a
    #: temporal model); 0 codes every frame intra. The cloud can ask for an intra frame at any time.
    intra_seconds: float = field(default=2.0, metadata={"min": 0.0, "max": 3600.0})
    #: Skip decision of predicted frames: a latent position (16×16 pixels) whose mean change over
    #: channels from the previous frame is below it copies the previous frame
    #: (shared/codec/skip.py); 0 codes every position. Unset: the model's task default (0.3;
    #: 0.4 for depth). Any value decodes the same way.
    skip_threshold: float | None = field(default=None, metadata={"min": 0.0, "max": 99.0})
    #: Dead zone of the positions a predicted frame codes (|y − μ| below it codes the symbol 0);
    #: 0.5 is plain rounding. Any value decodes the same way.
    deadzone: float = field(default=0.6, metadata={"min": 0.5, "max": 1.99})
    #: Intra-op threads of the encoder, torch's and ONNX Runtime's alike (inter-op: 1). 1: on a
    #: shared 2-core box a second torch thread waits for a core another process holds
    #: (docs/speed.md, `layercast bench codec --threads 1 2`); raise it on a dedicated machine.
    threads: int = field(default=1, metadata={"min": 1, "max": 256})
    #: What runs the analysis transforms on the CPU: "onnxruntime" (faster, docs/speed.md) or
    #: "torch"; on CUDA torch runs them either way (shared/codec/runtime.py).
    runtime: Literal["onnxruntime", "torch"] = "onnxruntime"


@dataclass
class OutboxConfig:
    """The persistent queue of base frames not yet acknowledged by the cloud.

    When full (``max_frames`` or ``max_bytes``), the oldest frames not in flight
    are dropped and counted (see ``layercast.edge.outbox``).
    """

    max_frames: int = field(default=10_000, metadata={"min": 1})
    max_bytes: int = field(default=256 * MiB, metadata={"min": 1024})
    #: SQLite ``synchronous``: FULL survives power loss (default), NORMAL only process kills.
    synchronous: SyncMode = "FULL"


@dataclass
class EnhancementStoreConfig:
    """Enhancement bitstreams kept at the edge for on-demand requests."""

    enabled: bool = True
    max_bytes: int = field(default=1024 * MiB, metadata={"min": 1024})
    max_age_s: float = field(default=3600.0, metadata={"min": 1.0})
    #: "on": enhancement layers and outbox base frames are sealed with AES-256-GCM (see
    #: ``layercast.edge.sealing``); "off": stored in plaintext (logged as a warning at start).
    encryption: Encryption = "on"
    #: The base64 key (``layercast edge --new-key FILE`` makes one). Unset, with encryption on:
    #: ``<data_dir>/edge.key``, created (0600) on first start and reused after.
    encryption_key_file: Path | None = None
    #: The same key given directly, for ``LAYERCAST_EDGE_STORE__ENCRYPTION_KEY`` (never printed).
    encryption_key: str = field(default="", repr=False, metadata={"secret": True})


@dataclass
class EdgeConfig:
    """Everything one edge process needs."""

    camera_id: str = "camera-0"
    #: Bearer token for camera_id (prefer token_file or the environment over a flag).
    token: str = field(default="", repr=False, metadata={"secret": True})
    #: File holding the token (first line); used when ``token`` is empty.
    token_file: Path | None = None
    #: Outbox database, enhancement store and (unless configured elsewhere) the key live here (0700).
    data_dir: Path = Path("layercast-edge")
    link: LinkConfig = field(default_factory=LinkConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    store: EnhancementStoreConfig = field(default_factory=EnhancementStoreConfig)
    #: Serve Prometheus metrics on http://metrics_listen:metrics_port/metrics (0: any free port; unset or -1: off).
    metrics_port: int | None = field(default=None, metadata={"min": -1, "max": 65535})
    metrics_listen: str = "127.0.0.1"

    def validate(self) -> None:
        """Cross-field checks; raises ConfigError naming the key."""
        if not CAMERA_ID_RE.fullmatch(self.camera_id):
            raise ConfigError(f"camera_id = {self.camera_id!r}: expected 1-64 characters of [A-Za-z0-9._-]")
        self.link.validate()

    def resolved_token(self) -> str:
        """The token from ``token`` or else the first line of ``token_file`` ("" if neither)."""
        if self.token:
            return self.token
        if self.token_file is None:
            return ""
        try:
            return self.token_file.read_text().splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise ConfigError(f"token_file = {str(self.token_file)!r}: cannot read a token ({exc})") from None

    @property
    def outbox_path(self) -> Path:
        return self.data_dir / "outbox.sqlite3"

    @property
    def default_key_path(self) -> Path:
        """Where the edge keeps the key it made itself (no key configured)."""
        return self.data_dir / "edge.key"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "enhancement" / self.camera_id


def load_edge_config(
    toml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> EdgeConfig:
    """Build an EdgeConfig from defaults < TOML < ``LAYERCAST_EDGE_*`` < overrides (dotted keys)."""
    return load_config(
        EdgeConfig, toml_path=toml_path, env_prefix="LAYERCAST_EDGE_", overrides=overrides, environ=environ
    )
