"""Command-line entry points of the cloud side.

``register(subparsers)`` adds:

* ``layercast cloud``     run the cloud server (settings: defaults < ``--config`` TOML <
  ``LAYERCAST_CLOUD_*`` environment < flags, and ``--set key=value`` for any key);
* ``layercast subscribe`` print results as JSON lines, resumable with ``--after CAM=SEQ``;
* ``layercast enhance``   fetch one frame's reconstruction to a PNG file.

Operator tokens are read from ``--token-file`` or ``LAYERCAST_TOKEN`` (a token on
the command line is visible to other users of the machine).

Every link uses TLS: the cloud serves with ``--tls-cert/--tls-key`` (and ``--tls-client-ca``
for mutual TLS), clients check it with ``--ca-cert`` (default: the system's trusted roots) and
present ``--client-cert/--client-key`` when the cloud asks for client certificates. Certificates
for a test or small deployment: ``layercast certs``. Plain text only with ``--insecure`` (both
sides), which is logged as a warning.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TARGET = "127.0.0.1:50051"
#: Message sizes of the subscribe/enhance clients, chosen on purpose: a reconstruction PNG of a large
#: frame is above gRPC's default 4 MiB; requests are tiny.
CLIENT_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 1 << 20)]

#: flag dest -> dotted config key of CloudConfig
_FLAG_KEYS = {
    "listen": "listen",
    "port": "port",
    "data_dir": "data_dir",
    "store": "store_path",
    "model": "model",
    "device": "device",
    "max_batch_size": "batching.max_batch_size",
    "max_queue_delay_ms": "batching.max_queue_delay_ms",
    "workers": "batching.workers",
    "credits": "credits_per_camera",
    "credentials_file": "auth.credentials_file",
    "allow_any_camera": "auth.allow_any_camera",
    "allow_anonymous_operators": "auth.allow_anonymous_operators",
    "metrics_port": "metrics_port",
    "insecure": "insecure",
    "tls_cert": "tls.cert",
    "tls_key": "tls.key",
    "tls_client_ca": "tls.client_ca",
}


def register(subparsers: Any) -> None:
    """Add ``cloud``, ``subscribe`` and ``enhance`` to the CLI."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "cloud", help="run the cloud inference server", description=__doc__, formatter_class=fmt
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    p.add_argument("--listen", help="address to bind (127.0.0.1, 0.0.0.0, [::])")
    p.add_argument("--port", type=int, help="port to bind; 0 = any free port (see --port-file)")
    p.add_argument("--data-dir", type=Path, help="directory of the store")
    p.add_argument("--store", type=Path, help="SQLite file (default DATA_DIR/cloud.db)")
    p.add_argument("--model", help="codec registry name or model id (default: default)")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when present)")
    p.add_argument("--max-batch-size", type=int, help="largest inference batch")
    p.add_argument("--max-queue-delay-ms", type=float, help="longest a frame waits for a fuller batch")
    p.add_argument("--workers", type=int, help="batches computed at the same time")
    p.add_argument("--credits", type=int, help="unacknowledged frames a camera may have in flight")
    p.add_argument("--credentials-file", type=Path, help='TOML file with [cameras] id = "sha256:…"')
    p.add_argument("--tls-cert", type=Path, help="the server's certificate chain (PEM)")
    p.add_argument("--tls-key", type=Path, help="the server's private key (PEM)")
    p.add_argument(
        "--tls-client-ca", type=Path, help="CA of client certificates: mutual TLS, cameras by certificate"
    )
    p.add_argument(
        "--insecure",
        action="store_const",
        const=True,
        default=None,
        help="serve plain text without TLS (closed test networks only; logged as a warning)",
    )
    p.add_argument(
        "--allow-any-camera",
        action="store_const",
        const=True,
        default=None,
        help="accept every camera without checking its token (closed test networks only)",
    )
    p.add_argument(
        "--allow-anonymous-operators",
        action="store_const",
        const=True,
        default=None,
        help="serve Operator/Analytics calls without credentials (development; loopback --listen only; "
        "logged as a warning)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any configuration key, e.g. retention.max_age_s=3600",
    )
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port (0 = any free)")
    p.add_argument("--port-file", type=Path, help="write the bound port to this file once serving")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.add_argument(
        "--hash-token",
        action="store_true",
        help="read a token on stdin, print the sha256:… form to put in the configuration, and exit",
    )
    p.add_argument("--new-token", action="store_true", help="print a new random token and its hash, and exit")
    p.set_defaults(func=run_cloud)

    s = subparsers.add_parser(
        "subscribe",
        help="print results from the cloud as JSON lines",
        description=__doc__,
        formatter_class=fmt,
    )
    _client_args(s)
    s.add_argument("--camera", action="append", default=[], help="only this camera (repeatable; default all)")
    s.add_argument(
        "--after",
        action="append",
        default=[],
        metavar="CAM=SEQ",
        help="resume: results of CAM after SEQ (repeatable)",
    )
    s.add_argument(
        "--from-sequence", type=int, default=0, help="other cameras start at this sequence (0 = oldest)"
    )
    s.add_argument("--live-only", action="store_true", help="skip stored results")
    s.add_argument("--limit", type=int, default=0, help="exit after this many results (0 = never)")
    s.add_argument("--depth-data", action="store_true", help="include depth map bytes (base64) in the output")
    s.add_argument(
        "--no-resume",
        action="store_true",
        help="exit with status 3 when told the subscriber lagged (default: resume)",
    )
    s.add_argument(
        "--retry", action="store_true", help="reconnect (and resume) when the cloud is unavailable"
    )
    s.set_defaults(func=run_subscribe)

    e = subparsers.add_parser(
        "enhance", help="fetch a frame's full reconstruction", description=__doc__, formatter_class=fmt
    )
    _client_args(e)
    e.add_argument("--camera", required=True, help="camera id")
    e.add_argument("--seq", type=int, required=True, help="frame sequence number")
    e.add_argument("-o", "--output", type=Path, required=True, help="PNG file to write")
    e.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the camera's answer")
    e.set_defaults(func=run_enhance)


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cloud", default=os.environ.get("LAYERCAST_CLOUD", DEFAULT_TARGET), metavar="HOST:PORT")
    p.add_argument("--token-file", type=Path, help="file whose first line is the operator token")
    p.add_argument(
        "--ca-cert", type=Path, help="CA certificate (PEM) of the cloud's TLS (default: system roots)"
    )
    p.add_argument("--client-cert", type=Path, help="client certificate (PEM), when the cloud asks for one")
    p.add_argument("--client-key", type=Path, help="client private key (PEM)")
    p.add_argument(
        "--insecure", action="store_true", help="plain text without TLS (testing only; logged as a warning)"
    )


def _open_channel(args: argparse.Namespace, what: str) -> Any:
    """The channel to ``--cloud``: TLS as the flags say, plain text only with ``--insecure``."""
    from layercast.shared.tls import ClientTls, open_channel, warn_insecure

    tls = ClientTls(
        insecure=args.insecure, ca_cert=args.ca_cert, client_cert=args.client_cert, client_key=args.client_key
    )
    if tls.insecure:
        warn_insecure(f"layercast {what}", args.cloud)
    return open_channel(args.cloud, tls, CLIENT_OPTIONS)


def _operator_metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    token = os.environ.get("LAYERCAST_TOKEN", "")
    if args.token_file is not None:
        token = args.token_file.read_text().splitlines()[0].strip() if args.token_file.exists() else ""
        if not token:
            from layercast.shared.errors import ConfigError

            raise ConfigError(f"token file {args.token_file} is missing or empty")
    return [("authorization", f"Bearer {token}")] if token else []


# -- layercast cloud ------------------------------------------------------------------------------
def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted config overrides for the flags given (``--set`` last)."""
    from layercast.shared.errors import ConfigError

    out = {
        key: getattr(args, dest) for dest, key in _FLAG_KEYS.items() if getattr(args, dest, None) is not None
    }
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def run_cloud(args: argparse.Namespace) -> int:
    from layercast.cloud.security.credentials import hash_token, new_token

    if args.hash_token:
        token = sys.stdin.readline().strip()
        if not token:
            print("layercast cloud: no token on stdin", file=sys.stderr)
            return 2
        print(hash_token(token))
        return 0
    if args.new_token:
        token = new_token()
        print(json.dumps({"token": token, "hash": hash_token(token)}))
        return 0

    from layercast.cloud.config import load_cloud_config
    from layercast.cloud.server import CloudServer

    config = load_cloud_config(args.config, overrides=overrides_from_args(args))
    if args.print_config:
        print(config)
        return 0

    async def main() -> None:
        server = CloudServer(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        await server.start()
        print(
            f"layercast cloud: serving on {server.target}, {server.transport} (model {server.engine.base_model_id}, "
            f"task {server.engine.task}, store {config.db_path})",
            flush=True,
        )
        if server.metrics_server is not None:
            print(f"layercast cloud: metrics on {server.metrics_server.url}", flush=True)
        if args.port_file is not None:
            tmp = args.port_file.with_suffix(".tmp")
            tmp.write_text(f"{server.port}\n")
            tmp.replace(args.port_file)
        try:
            await stop.wait()
        finally:
            print("layercast cloud: stopping (draining in-flight frames)", flush=True)
            await server.stop()

    asyncio.run(main())
    return 0


# -- layercast subscribe ----------------------------------------------------------------------------
def result_to_json(result: Any, *, depth_data: bool = False) -> dict[str, Any]:
    """A Result as plain JSON types (integers stay integers)."""
    out: dict[str, Any] = {
        "camera_id": result.camera_id,
        "sequence": result.sequence,
        "capture_time_us": result.capture_time_us,
        "processed_time_us": result.processed_time_us,
        "task": result.task,
        "model_id": result.model_id,
        "width": result.width,
        "height": result.height,
        "base_bytes": result.base_bytes,
        "base_bpp": round(result.base_bpp, 6),
        "boxes": [
            {
                "x1": b.x1,
                "y1": b.y1,
                "x2": b.x2,
                "y2": b.y2,
                "class_id": b.class_id,
                "class_name": b.class_name,
                "score": round(b.score, 6),
            }
            for b in result.boxes
        ],
    }
    if result.HasField("depth"):
        d = result.depth
        depth: dict[str, Any] = {
            "width": d.width,
            "height": d.height,
            "encoding": d.encoding,
            "scale": d.scale,
        }
        if depth_data:
            import base64

            depth["data"] = base64.b64encode(d.data).decode()
        out["depth"] = depth
    return out


def parse_after(items: list[str]) -> dict[str, int]:
    from layercast.shared.errors import ConfigError

    out: dict[str, int] = {}
    for item in items:
        cam, sep, seq = item.rpartition("=")
        if not sep or not cam or not seq.isdigit():
            raise ConfigError(f"--after {item!r}: expected CAMERA=SEQUENCE, e.g. cam-1=120")
        out[cam] = int(seq)
    return out


def run_subscribe(args: argparse.Namespace) -> int:
    return asyncio.run(_subscribe(args))


async def _subscribe(args: argparse.Namespace) -> int:
    from grpc import aio

    from layercast.shared.results_client import SubscriberLagged, results
    from layercast.shared.rpc import analytics_pb2_grpc

    resume = parse_after(args.after)
    metadata = _operator_metadata(args)
    printed = 0

    def lagged(lag: SubscriberLagged) -> None:
        print(f"layercast subscribe: lagged ({lag})", file=sys.stderr)

    async with _open_channel(args, "subscribe") as channel:
        stream = results(
            analytics_pb2_grpc.AnalyticsStub(channel),
            cameras=args.camera,
            resume_after=resume,
            from_sequence=args.from_sequence,
            live_only=args.live_only,
            metadata=metadata,
            resume_on_lag=not args.no_resume,
            on_lag=lagged,
            retry_unavailable=args.retry,
        )
        try:
            async for r in stream:
                print(json.dumps(result_to_json(r, depth_data=args.depth_data)), flush=True)
                printed += 1
                if args.limit and printed >= args.limit:
                    return 0
        except SubscriberLagged as lag:
            print(json.dumps({"lagged": lag.resume_after}), flush=True)
            return 3
        except aio.AioRpcError as exc:
            print(f"layercast subscribe: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        finally:
            await stream.aclose()
    return 0


# -- layercast enhance -------------------------------------------------------------------------------
def run_enhance(args: argparse.Namespace) -> int:
    return asyncio.run(_enhance(args))


async def _enhance(args: argparse.Namespace) -> int:
    from grpc import aio

    from layercast.shared.rpc import operator_pb2, operator_pb2_grpc

    async with _open_channel(args, "enhance") as channel:
        stub = operator_pb2_grpc.OperatorStub(channel)
        request = operator_pb2.EnhanceRequest(
            frame=operator_pb2.FrameRef(camera_id=args.camera, sequence=args.seq)
        )
        try:
            resp = await stub.Enhance(request, metadata=_operator_metadata(args), timeout=args.timeout)
        except aio.AioRpcError as exc:
            print(f"layercast enhance: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(resp.reconstruction.png)
    print(
        json.dumps(
            {
                "camera_id": args.camera,
                "sequence": args.seq,
                "output": str(args.output),
                "width": resp.reconstruction.width,
                "height": resp.reconstruction.height,
                "base_bytes": resp.base_bytes,
                "enhancement_bytes": resp.enhancement_bytes,
                "total_bpp": round(resp.total_bpp, 6),
                "fetch_seconds": round(resp.fetch_seconds, 6),
                "cached": resp.cached,
            }
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run these commands without the full ``layercast`` CLI (``python -m layercast.commands.cloud``)."""
    from layercast.shared.cli import build_parser, run

    return run(build_parser([register]), argv)


if __name__ == "__main__":
    sys.exit(main())
