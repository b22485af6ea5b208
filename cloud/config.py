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

Environment: ``LAYERCAST_CLOUD_BATCHING__MAX_BATCH_SIZE=8``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from layercast.cloud.credentials import TokenTable
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
    #: Batches computed at the same time (threads running decode + inference).
    workers: int = field(default=1, metadata=_bounds(1, 64))
    #: Frames waiting for inference before ingest stops reading from cameras (back-pressure).
    queue_capacity: int = field(default=1024, metadata=_bounds(1))


@dataclass
class AuthConfig:
    """Who may connect. Tokens are stored as ``sha256:<hex>`` hashes only."""

    #: ``camera_id=sha256:<hex>`` entries.
    camera_tokens: list[str] = field(default_factory=list)
    #: A TOML file with a ``[cameras]`` table: ``camera_id = "sha256:<hex>"``.
    credentials_file: Path | None = None
    #: ``name=sha256:<hex>`` entries for the Operator and Analytics APIs; empty = those APIs need no token.
    operator_tokens: list[str] = field(default_factory=list)
    #: Accept any camera id and token (closed test networks only; logged as a warning).
    allow_any_camera: bool = False


@dataclass
class LimitsConfig:
    """Sizes decided on purpose, checked before anything large is allocated."""

    max_message_bytes: int = field(default=16 * MiB, metadata=_bounds(64 * 1024, 1024 * MiB))
    max_frame_bytes: int = field(default=4 * MiB, metadata=_bounds(1024))
    max_image_pixels: int = field(default=4096 * 4096, metadata=_bounds(64))
    #: Time an edge has to send its Hello after opening the stream.
    hello_timeout_s: float = field(default=10.0, metadata=_bounds(0.1, 600.0))
    #: Frames per ListFrames answer at most.
    max_list_frames: int = field(default=500, metadata=_bounds(1, 100_000))


@dataclass
class CloudConfig:
    """Everything `layercast cloud` needs."""

    listen: str = "127.0.0.1"
    port: int = field(default=50051, metadata=_bounds(0, 65535))
    data_dir: Path = Path("layercast-cloud")
    #: SQLite file; default ``<data_dir>/cloud.db``.
    store_path: Path | None = None
    #: Registry name of the codec (``default`` = the shipped small model).
    model: str = "default"
    #: ``cpu``, ``cuda``, ``cuda:1`` …; unset = cuda when present, else cpu.
    device: str | None = None
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
    limits: LimitsConfig = field(default_factory=LimitsConfig)

    @property
    def db_path(self) -> Path:
        """Where the SQLite store lives."""
        return self.store_path if self.store_path is not None else self.data_dir / "cloud.db"

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
        cameras = self.camera_credentials()
        if not len(cameras) and not self.auth.allow_any_camera:
            raise ConfigError(
                "no camera credentials configured: set auth.camera_tokens (camera_id=sha256:<hex>) or "
                "auth.credentials_file, or auth.allow_any_camera = true on a closed test network"
            )
        self.operator_credentials()

    def camera_credentials(self) -> TokenTable:
        """Camera id → token hash, from ``auth.camera_tokens`` and ``auth.credentials_file``."""
        table = TokenTable.parse(self.auth.camera_tokens, source="auth.camera_tokens")
        if self.auth.credentials_file is not None:
            table = table.merged(TokenTable.from_toml(self.auth.credentials_file))
        return table

    def operator_credentials(self) -> TokenTable:
        """Operator name → token hash (empty table = operator APIs open)."""
        return TokenTable.parse(self.auth.operator_tokens, source="auth.operator_tokens")

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
