"""Settings of the operator web page.

In code, :class:`WebSettings` is built directly::

    settings = WebSettings(
        cloud_target="127.0.0.1:50051",
        users={"alice": (hash_password("…"), "enhancer"), "bob": ("$argon2id$…", "viewer")},
        audit_log=Path("/var/log/layercast/audit.jsonl"),
    )

From a TOML file (``layercast web --config web.toml``), environment variables
``LAYERCAST_WEB_*`` and flags, through :func:`load_web_settings`::

    cloud = "127.0.0.1:50051"
    cloud_token_file = "/etc/layercast/web.token"   # when the cloud requires operator tokens
    cloud_ca_cert = "/etc/layercast/pki/ca.pem"     # the cloud's TLS (default: the system's roots)
    cloud_client_cert = "/etc/layercast/pki/operators/web.pem"   # when the cloud requires client
    cloud_client_key = "/etc/layercast/pki/operators/web.key"    # certificates (tls.client_ca)
    # cloud_insecure = true                         # plain-text gRPC, explicitly (logged as a warning)
    listen = "127.0.0.1"
    port = 8080
    tls_cert = "/etc/layercast/pki/web.pem"        # the page's HTTPS certificate and key; without them
    tls_key = "/etc/layercast/pki/web.key"         # it serves plain HTTP on loopback only (a warning),
    # plain_http = true                             # or anywhere with this (behind a TLS proxy)
    audit_log = "/var/log/layercast/audit.jsonl"
    secret_key_file = "/etc/layercast/web.secret"   # signs the session cookie (default: random per start)
    users = ["alice=enhancer:$argon2id$v=19$m=65536,t=3,p=4$…", "bob=viewer:$argon2id$…"]
    tokens = ["dashboard=viewer:sha256:<64 hex>"]    # Authorization: Bearer <token> for scripts

Make a password hash with ``layercast web --hash-password`` (reads the password on stdin).
Put ``users`` in the TOML file: an environment variable splits lists at commas, and
Argon2 hashes contain commas.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from layercast.cloud.web.passwords import hash_password, is_password_hash
from layercast.shared.config import load_config
from layercast.shared.errors import ConfigError
from layercast.shared.tls import ClientTls

Role = Literal["viewer", "enhancer"]
#: What each role may do. An enhancer can do everything a viewer can.
ROLES: dict[str, frozenset[str]] = {
    "viewer": frozenset({"view"}),
    "enhancer": frozenset({"view", "enhance"}),
}
ENV_PREFIX = "LAYERCAST_WEB_"
_NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_TOKEN_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
MiB = 1 << 20


@dataclass
class WebSettings:
    """Everything ``create_app`` needs. Secrets are kept out of ``repr``."""

    #: ``host:port`` of the cloud's gRPC server (Operator and Analytics services).
    cloud_target: str = "127.0.0.1:50051"
    #: Bearer token the page presents to the cloud when the cloud requires operator tokens.
    cloud_token: str = field(default="", repr=False)
    #: PEM file of the CA of the cloud's TLS certificate; None = the system's trusted roots.
    cloud_ca_cert: Path | None = None
    #: The page's client certificate and key (an operator certificate), for a cloud with mutual TLS.
    cloud_client_cert: Path | None = None
    cloud_client_key: Path | None = None
    #: Plain-text gRPC to the cloud, only when asked for (loopback, closed networks; logged as a warning).
    cloud_insecure: bool = False
    #: name -> (Argon2 password hash, role).
    users: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    #: name -> ("sha256:<hex>" of a token, role), for scripts using ``Authorization: Bearer <token>``.
    tokens: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    #: Key signing the session cookie; empty = a random key per start. Sessions themselves live in
    #: the page's memory, so everyone signs in again after a restart either way.
    secret_key: str = field(default="", repr=False)
    #: JSON-lines file of every enhancement request (who, camera, frame, when, outcome).
    audit_log: Path = Path("layercast-web-audit.jsonl")
    #: A session ends this long after sign-in.
    session_max_age_s: int = 8 * 3600
    #: The page's own TLS certificate and key (PEM): served over HTTPS, and the cookie is ``Secure``.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Serve plain HTTP on a non-loopback address (behind a TLS proxy; logged as a warning).
    #: Without TLS and without this, the page serves on loopback addresses only.
    plain_http: bool = False
    #: Send the session cookie over HTTPS only; always so with ``tls_cert`` (set it behind a TLS proxy).
    cookie_secure: bool = False
    #: Signed-in sessions kept at once (server-side); beyond that the oldest ends.
    max_sessions: int = 10_000
    #: Live events a browser may have waiting; beyond that its oldest are dropped (never slowing anyone).
    sse_queue: int = 64
    #: Live event streams (browser tabs) served at once.
    max_event_streams: int = 100
    #: Seconds between keep-alive comments on idle event streams.
    sse_heartbeat_s: float = 15.0
    #: Deadline of an Enhance call (the camera must answer within it).
    enhance_timeout_s: float = 30.0
    #: Deadline of the other cloud calls.
    rpc_timeout_s: float = 10.0
    #: Frames per page of the timeline.
    frames_per_page: int = 100
    #: Bytes of preview PNGs kept by the page (shared by every browser).
    preview_cache_bytes: int = 32 * MiB
    #: Failed sign-ins from one address within ``login_window_s`` before it must wait.
    login_max_failures: int = 10
    #: Failed sign-ins for one account name (from any address) within the window before it must wait.
    login_max_failures_per_account: int = 10
    #: Failed sign-ins on the whole page within the window before every sign-in must wait.
    login_max_failures_global: int = 200
    login_window_s: float = 300.0
    #: Password checks (Argon2, 64 MiB each) run at once; more sign-ins at once get 503 at once.
    login_verify_slots: int = 2

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming what to change."""
        for kind, table in (("users", self.users), ("tokens", self.tokens)):
            for name, entry in table.items():
                if not _NAME_RE.match(name):
                    raise ConfigError(f"{kind}: name {name!r} must be 1-64 characters of [A-Za-z0-9._@-]")
                if not (isinstance(entry, tuple | list) and len(entry) == 2):
                    raise ConfigError(f"{kind}[{name!r}] must be a (hash, role) pair")
                secret, role = entry
                if role not in ROLES:
                    raise ConfigError(f"{kind}[{name!r}]: role {role!r} is not one of {', '.join(ROLES)}")
                if kind == "users" and not is_password_hash(secret):
                    raise ConfigError(
                        f"users[{name!r}]: expected an Argon2 hash ($argon2id$…), not a plaintext password; "
                        "make one with `layercast web --hash-password`"
                    )
                if kind == "tokens" and not _TOKEN_HASH_RE.match(secret):
                    raise ConfigError(f"tokens[{name!r}]: expected sha256:<64 lowercase hex>")
        clash = set(self.users) & set(self.tokens)
        if clash:
            raise ConfigError(f"names used both as a user and a token: {', '.join(sorted(clash))}")
        for name, value, lo in (
            ("session_max_age_s", self.session_max_age_s, 60),
            ("sse_queue", self.sse_queue, 1),
            ("max_event_streams", self.max_event_streams, 1),
            ("frames_per_page", self.frames_per_page, 1),
            ("login_max_failures", self.login_max_failures, 1),
            ("login_max_failures_per_account", self.login_max_failures_per_account, 1),
            ("login_max_failures_global", self.login_max_failures_global, 1),
            ("login_verify_slots", self.login_verify_slots, 1),
            ("max_sessions", self.max_sessions, 1),
        ):
            if value < lo:
                raise ConfigError(f"{name} = {value} must be at least {lo}")
        for name, value in (
            ("enhance_timeout_s", self.enhance_timeout_s),
            ("rpc_timeout_s", self.rpc_timeout_s),
            ("sse_heartbeat_s", self.sse_heartbeat_s),
            ("login_window_s", self.login_window_s),
        ):
            if value <= 0:
                raise ConfigError(f"{name} = {value} must be positive")
        if not self.cloud_target.strip():
            raise ConfigError("cloud_target must be host:port of the cloud's gRPC server")
        if self.cloud_insecure and self.cloud_ca_cert is not None:
            raise ConfigError("cloud_insecure = true and cloud_ca_cert are both given; choose one")
        if (self.cloud_client_cert is None) != (self.cloud_client_key is None):
            raise ConfigError("cloud_client_cert and cloud_client_key must be given together")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key must be given together")

    @property
    def https(self) -> bool:
        """Whether the page itself is served over TLS."""
        return self.tls_cert is not None

    @property
    def cloud_tls(self) -> ClientTls:
        """How the page's gRPC client reaches the cloud."""
        return ClientTls(
            insecure=self.cloud_insecure,
            ca_cert=self.cloud_ca_cert,
            client_cert=self.cloud_client_cert,
            client_key=self.cloud_client_key,
        )


def demo_settings(
    *,
    cloud_target: str,
    username: str = "operator",
    password: str,
    role: str = "enhancer",
    data_dir: Path,
    cloud_token: str = "",
    cloud_tls: ClientTls | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> WebSettings:
    """Settings with one user whose plaintext ``password`` is hashed now (for ``layercast demo``);
    ``cloud_tls`` says how to reach the cloud (default: TLS with the system's roots); the page
    is served over HTTPS with ``tls_cert`` / ``tls_key``."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    tls = cloud_tls or ClientTls()
    return WebSettings(
        cloud_target=cloud_target,
        cloud_token=cloud_token,
        cloud_ca_cert=tls.ca_cert,
        cloud_client_cert=tls.client_cert,
        cloud_client_key=tls.client_key,
        cloud_insecure=tls.insecure,
        users={username: (hash_password(password), role)},
        audit_log=data_dir / "audit.jsonl",
        tls_cert=tls_cert,
        tls_key=tls_key,
    )


def parse_entries(entries: list[str], *, kind: str) -> dict[str, tuple[str, str]]:
    """``name=role:secret`` entries (as in the TOML file) → ``{name: (secret, role)}``."""
    out: dict[str, tuple[str, str]] = {}
    for entry in entries:
        name, sep, rest = entry.partition("=")
        role, sep2, secret = rest.partition(":")
        if not sep or not sep2 or not name.strip() or not secret:
            # Only the name part is quoted: the rest may be a password or token written by mistake.
            shown = f"{name.strip()[:64]}=…" if sep else "…"
            raise ConfigError(f"{kind} entry {shown!r}: expected name=role:hash")
        name = name.strip()
        if name in out:
            raise ConfigError(f"{kind}: {name!r} is listed twice")
        out[name] = (secret.strip(), role.strip())
    return out


@dataclass
class WebFileConfig:
    """What a TOML file / ``LAYERCAST_WEB_*`` / flags may set (see the module docstring)."""

    cloud: str = "127.0.0.1:50051"
    cloud_token_file: Path | None = None
    cloud_ca_cert: Path | None = None
    cloud_client_cert: Path | None = None
    cloud_client_key: Path | None = None
    cloud_insecure: bool = False
    listen: str = "127.0.0.1"
    port: int = field(default=8080, metadata={"min": 0, "max": 65535})
    tls_cert: Path | None = None
    tls_key: Path | None = None
    plain_http: bool = False
    audit_log: Path = Path("layercast-web-audit.jsonl")
    secret_key_file: Path | None = None
    users: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    session_max_age_s: int = field(default=8 * 3600, metadata={"min": 60})
    cookie_secure: bool = False
    sse_queue: int = field(default=64, metadata={"min": 1})
    max_event_streams: int = field(default=100, metadata={"min": 1})
    enhance_timeout_s: float = field(default=30.0, metadata={"min": 0.1})
    rpc_timeout_s: float = field(default=10.0, metadata={"min": 0.1})
    login_max_failures: int = field(default=10, metadata={"min": 1})
    login_max_failures_per_account: int = field(default=10, metadata={"min": 1})
    login_max_failures_global: int = field(default=200, metadata={"min": 1})
    login_window_s: float = field(default=300.0, metadata={"min": 1.0})
    login_verify_slots: int = field(default=2, metadata={"min": 1})

    def to_settings(self) -> WebSettings:
        return WebSettings(
            cloud_target=self.cloud,
            cloud_token=_read_secret(self.cloud_token_file, "cloud_token_file"),
            cloud_ca_cert=self.cloud_ca_cert,
            cloud_client_cert=self.cloud_client_cert,
            cloud_client_key=self.cloud_client_key,
            cloud_insecure=self.cloud_insecure,
            users=parse_entries(self.users, kind="users"),
            tokens=parse_entries(self.tokens, kind="tokens"),
            secret_key=_read_secret(self.secret_key_file, "secret_key_file"),
            audit_log=self.audit_log,
            session_max_age_s=self.session_max_age_s,
            cookie_secure=self.cookie_secure,
            sse_queue=self.sse_queue,
            max_event_streams=self.max_event_streams,
            enhance_timeout_s=self.enhance_timeout_s,
            rpc_timeout_s=self.rpc_timeout_s,
            tls_cert=self.tls_cert,
            tls_key=self.tls_key,
            plain_http=self.plain_http,
            login_max_failures=self.login_max_failures,
            login_max_failures_per_account=self.login_max_failures_per_account,
            login_max_failures_global=self.login_max_failures_global,
            login_window_s=self.login_window_s,
            login_verify_slots=self.login_verify_slots,
        )


def _read_secret(path: Path | None, key: str) -> str:
    if path is None:
        return ""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"{key} = {str(path)!r}: cannot read it ({exc.strerror or exc})") from None
    if not lines or not lines[0].strip():
        raise ConfigError(f"{key} = {str(path)!r} is empty")
    return lines[0].strip()


def load_web_settings(
    toml_path: str | Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> tuple[WebFileConfig, WebSettings]:
    """Defaults < TOML file < ``LAYERCAST_WEB_*`` < ``overrides``; returns the file config
    (for ``listen`` and ``port``) and the settings built from it."""
    cfg = load_config(
        WebFileConfig, toml_path=toml_path, env_prefix=ENV_PREFIX, overrides=overrides, environ=environ
    )
    return cfg, cfg.to_settings()
