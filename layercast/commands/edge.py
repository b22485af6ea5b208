"""``layercast edge``: run one camera's edge process.

Settings come from defaults < ``--config FILE`` (TOML) < ``LAYERCAST_EDGE_*``
environment variables < the flags below. Prefer ``LAYERCAST_EDGE_TOKEN`` or
``--token-file`` to ``--token`` (command lines are visible to other users).

Encryption at rest (enhancement store and outbox) is on by default with a key the edge makes in
its data dir on first start; ``layercast edge --new-key KEYFILE`` makes a key kept elsewhere,
``--encryption-key-file KEYFILE`` (``store.encryption_key_file``) uses it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: flag dest -> dotted config key
_FLAG_KEYS = {
    "camera_id": "camera_id",
    "token": "token",
    "token_file": "token_file",
    "data_dir": "data_dir",
    "cloud": "link.cloud",
    "insecure": "link.insecure",
    "ca_cert": "link.ca_cert",
    "client_cert": "link.client_cert",
    "client_key": "link.client_key",
    "source": "source.spec",
    "fps": "source.fps",
    "loop": "source.loop",
    "limit": "source.limit",
    "width": "source.width",
    "height": "source.height",
    "seed": "source.seed",
    "model": "encoder.model",
    "device": "encoder.device",
    "batch_max": "encoder.batch_max",
    "metrics_port": "metrics_port",
    "encryption_key_file": "store.encryption_key_file",
}


def register(subparsers: Any) -> None:
    """Add ``layercast edge`` to the CLI."""
    p = subparsers.add_parser(
        "edge",
        help="run an edge camera: encode frames and stream base bitstreams to the cloud",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    p.add_argument("--camera-id", help="camera name, [A-Za-z0-9._-]{1,64}")
    p.add_argument("--token", help="bearer token for the camera (prefer LAYERCAST_EDGE_TOKEN)")
    p.add_argument("--token-file", type=Path, help="file whose first line is the token")
    p.add_argument("--data-dir", type=Path, help="outbox and enhancement store directory")
    p.add_argument("--cloud", metavar="HOST:PORT", help="address of the cloud's EdgeLink service")
    p.add_argument(
        "--insecure",
        action="store_const",
        const=True,
        default=None,
        help="plain-text link without TLS (testing only)",
    )
    p.add_argument("--ca-cert", type=Path, help="CA certificate (PEM) that signed the cloud's certificate")
    p.add_argument("--client-cert", type=Path, help="this camera's certificate (PEM), for mutual TLS")
    p.add_argument("--client-key", type=Path, help="this camera's private key (PEM), for mutual TLS")
    p.add_argument(
        "--source",
        help="synthetic[:SEED] | folder:PATH | video:PATH | v4l2:/dev/videoN | device:N | a directory",
    )
    p.add_argument("--fps", type=float, help="capture rate, frames per second")
    p.add_argument("--loop", action="store_const", const=True, default=None, help="repeat a folder or video")
    p.add_argument("--limit", type=int, help="stop after this many frames (then wait for every ack)")
    p.add_argument("--width", type=int, help="synthetic camera: frame width")
    p.add_argument("--height", type=int, help="synthetic camera: frame height")
    p.add_argument("--seed", type=int, help="synthetic camera: scene seed")
    p.add_argument("--model", help="codec registry name or id")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where the encoder runs")
    p.add_argument("--batch-max", type=int, help="largest encode batch when frames queue up")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port (0 = any free)")
    p.add_argument(
        "--encryption-key-file",
        type=Path,
        help="encrypt the enhancement store with the base64 AES-256 key in this file",
    )
    p.add_argument(
        "--new-key",
        type=Path,
        metavar="FILE",
        help="write a new random encryption key to FILE (mode 0600, never overwritten) and exit",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.add_argument("--stats", action="store_true", help="print the final counters as JSON on exit")
    p.set_defaults(func=run)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted config overrides for the flags that were given."""
    return {
        key: getattr(args, dest) for dest, key in _FLAG_KEYS.items() if getattr(args, dest, None) is not None
    }


def run(args: argparse.Namespace) -> int:
    from layercast.edge.app import EdgeApp
    from layercast.edge.config import load_edge_config

    if getattr(args, "new_key", None) is not None:
        from layercast.edge.sealing import write_key_file

        kid = write_key_file(args.new_key)
        print(f"wrote a new enhancement store key to {args.new_key} (key id {kid.hex()})")
        print(f"use it with: store.encryption_key_file = {str(args.new_key)!r}")
        return 0
    config = load_edge_config(args.config, overrides_from_args(args))
    if args.print_config:
        print(config)  # the token is excluded from repr
        return 0
    app = EdgeApp(config)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, app.request_stop)
            except (NotImplementedError, RuntimeError):  # not the main thread / not POSIX
                pass
        await app.run()

    asyncio.run(main())
    if args.stats:
        json.dump(app.stats.snapshot(), sys.stdout, indent=1, default=str)
        print()
    return 0
