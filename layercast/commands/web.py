"""`layercast web`: the operator web page on its own, against a running cloud.

    layercast web --cloud 127.0.0.1:50051 --config web.toml --tls-cert web.pem --tls-key web.key
    echo 'a long passphrase' | layercast web --hash-password     # for users = ["name=role:<hash>"]
    layercast web --new-token                                    # a token for scripts and its sha256

The page is served over HTTPS with ``--tls-cert`` / ``--tls-key`` (``tls_cert``, ``tls_key``);
without them only on a loopback ``--host`` (a warning), unless ``--plain-http`` says it sits
behind a TLS proxy. Users and roles (``viewer`` sees previews and detections, ``enhancer`` may also
fetch enhancement layers) come from the TOML file; see
``layercast.cloud.web.settings``. Every enhancement request is appended to the
audit log (``audit_log``, JSON lines).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

_FLAG_KEYS = {
    "cloud": "cloud",
    "cloud_token_file": "cloud_token_file",
    "cloud_ca_cert": "cloud_ca_cert",
    "cloud_client_cert": "cloud_client_cert",
    "cloud_client_key": "cloud_client_key",
    "cloud_insecure": "cloud_insecure",
    "host": "listen",
    "tls_cert": "tls_cert",
    "tls_key": "tls_key",
    "plain_http": "plain_http",
    "port": "port",
    "audit_log": "audit_log",
    "secret_key_file": "secret_key_file",
}


def register(subparsers: Any) -> None:
    """Add ``web`` to the CLI."""
    p = subparsers.add_parser(
        "web",
        help="serve the operator web page against a running cloud",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML settings file (users, tokens, audit log …)"
    )
    p.add_argument("--cloud", metavar="HOST:PORT", help="the cloud's gRPC address (default 127.0.0.1:50051)")
    p.add_argument("--cloud-token-file", type=Path, help="file with the operator token the cloud expects")
    p.add_argument(
        "--cloud-ca-cert", type=Path, help="CA certificate of the cloud's TLS (default: the system's roots)"
    )
    p.add_argument(
        "--cloud-client-cert", type=Path, help="the page's client certificate, for a cloud with mutual TLS"
    )
    p.add_argument("--cloud-client-key", type=Path, help="the page's client private key")
    p.add_argument(
        "--cloud-insecure",
        action="store_const",
        const=True,
        default=None,
        help="plain-text gRPC to the cloud (testing only; logged as a warning)",
    )
    p.add_argument("--host", help="address to serve on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to serve on; 0 = any free port (default 8080)")
    p.add_argument(
        "--tls-cert", type=Path, help="the page's HTTPS certificate (PEM); the cookie is then Secure"
    )
    p.add_argument("--tls-key", type=Path, help="the page's HTTPS private key (PEM)")
    p.add_argument(
        "--plain-http",
        action="store_const",
        const=True,
        default=None,
        help="serve plain HTTP on a non-loopback --host (behind a TLS proxy; logged as a warning)",
    )
    p.add_argument("--audit-log", type=Path, help="JSON-lines audit log of enhancement requests")
    p.add_argument(
        "--secret-key-file", type=Path, help="key signing the session cookie (default: random per start)"
    )
    p.add_argument("--port-file", type=Path, help="write the bound port to this file once serving")
    p.add_argument(
        "--hash-password", action="store_true", help="read a password on stdin, print its Argon2 hash, exit"
    )
    p.add_argument(
        "--new-token", action="store_true", help="print a new random token and its sha256 form, exit"
    )
    p.set_defaults(func=run_web)


def run_web(args: argparse.Namespace) -> int:
    from layercast.cloud.web.passwords import hash_password, hash_token, new_secret

    if args.hash_password:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            print("layercast web: no password on stdin", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    if args.new_token:
        token = new_secret(32)
        print(json.dumps({"token": token, "hash": hash_token(token)}))
        return 0

    from layercast.cloud.web.settings import load_web_settings

    overrides = {
        key: getattr(args, dest) for dest, key in _FLAG_KEYS.items() if getattr(args, dest) is not None
    }
    cfg, settings = load_web_settings(args.config, overrides=overrides)
    if not settings.users and not settings.tokens:
        print(
            'layercast web: no users configured; add users = ["name=enhancer:<hash>"] to --config '
            "(hash from `layercast web --hash-password`)",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(_serve(settings, cfg.listen, cfg.port, args.port_file))


async def _serve(settings: Any, host: str, port: int, port_file: Path | None) -> int:
    from layercast.cloud.web.app import build_web_server, create_app
    from layercast.shared.errors import ConfigError

    try:
        server = build_web_server(create_app(settings), host, port)
    except ConfigError as exc:
        print(f"layercast web: {exc}", file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    task = asyncio.create_task(server.serve())
    try:
        bound = await server.wait_started()
    except ConfigError as exc:
        with contextlib.suppress(ConfigError):
            await task
        print(f"layercast web: {exc}", file=sys.stderr)
        return 1
    print(
        f"layercast web: operator page on {server.url} (cloud {settings.cloud_target}, "
        f"audit log {settings.audit_log})",
        flush=True,
    )
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(f"{bound}\n")
        tmp.replace(port_file)
    await task
    print("layercast web: stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run these commands without the full ``layercast`` CLI (``python -m layercast.commands.web web …``)."""
    from layercast.shared.cli import build_parser, run

    return run(build_parser([register]), argv)


if __name__ == "__main__":
    sys.exit(main())
