"""`layercast demo`: the whole product on one machine, on the CPU.

One process runs a cloud gRPC server, N synthetic cameras (edge pipelines
sharing one encoder) streaming base bitstreams to it over loopback, and the
operator web page. It prints where to look and stops cleanly on Ctrl-C
(cameras first, then the web page, then the cloud, which drains in-flight
frames). Credentials are made up at start-up and printed; nothing listens
beyond 127.0.0.1 unless asked.

Every gRPC link is mutual TLS and the operator page is HTTPS, as in a deployment:
a private CA, the cloud's certificate (which the page serves HTTPS with too) and
one certificate per camera (its identity) and for the page and the command line
are made at start-up in ``<data dir>/pki`` (``shared/pki.py``, milliseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import tempfile
import time
from pathlib import Path

log = logging.getLogger("layercast.commands.demo")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="cloud + synthetic cameras + operator page on this machine (CPU)")
    p.add_argument("--cameras", type=int, default=3, help="synthetic cameras (default 3)")
    p.add_argument("--fps", type=float, default=2.0, help="frames per second per camera")
    p.add_argument("--model", default="default", help="registry name of the codec")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--grpc-port", type=int, default=50051, help="0 = any free port")
    p.add_argument("--web-port", type=int, default=8080, help="0 = any free port")
    p.add_argument(
        "--metrics-port", type=int, default=9464, help="cloud /metrics (0 = any free port, -1 = off)"
    )
    p.add_argument("--data-dir", type=Path, default=None, help="default: a fresh temporary folder")
    p.add_argument("--password", default=None, help="operator password (default: generated and printed)")
    p.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (0 = until Ctrl-C)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    import secrets

    import torch

    from layercast.cloud.config import load_cloud_config
    from layercast.cloud.server import CloudServer
    from layercast.edge.app import EdgeApp
    from layercast.edge.config import load_edge_config
    from layercast.edge.encoder import Encoder
    from layercast.shared.codec import load_codec
    from layercast.shared.codec.runtime import configure_threads
    from layercast.shared.pki import create_local_pki
    from layercast.shared.tls import ClientTls

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="layercast-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    cameras = [f"cam-{i + 1}" for i in range(args.cameras)]
    pki = create_local_pki(data_dir / "pki", cameras, operators=["web", "cli"], **_server_names(args.host))
    cloud_cfg = load_cloud_config(
        overrides={
            "listen": args.host,
            "port": args.grpc_port,
            "data_dir": str(data_dir / "cloud"),
            "model": args.model,
            "device": "cpu",
            # Mutual TLS: each camera is who its certificate says (no tokens needed).
            "tls.cert": str(pki.server_cert),
            "tls.key": str(pki.server_key),
            "tls.client_ca": str(pki.ca_cert),
            # Operators are who their certificates say; the page ("web") and the CLI ("cli") may Enhance.
            "auth.enhancers": ["web", "cli"],
            "metrics_port": args.metrics_port,
        }
    )
    print(f"layercast demo: loading model {args.model!r} on the CPU ...", flush=True)
    # Cloud and cameras share this process and its threads: the cloud's settings (one intra-op
    # thread by default, docs/speed.md) and its runtime of the CPU transforms.
    configure_threads(cloud_cfg.threads)
    codec = load_codec(args.model, device="cpu", runtime=cloud_cfg.runtime)
    cloud = CloudServer(cloud_cfg, codec=codec)
    port = await cloud.start()
    target = f"{args.host}:{port}"

    encoder = Encoder(codec, device="cpu", batch_max=4)
    edges = []
    for i, cam in enumerate(cameras):
        cam_cert, cam_key = pki.camera(cam)
        cfg = load_edge_config(
            overrides={
                "camera_id": cam,
                "data_dir": str(data_dir / cam),
                "link.cloud": target,
                "link.ca_cert": str(pki.ca_cert),
                "link.client_cert": str(cam_cert),
                "link.client_key": str(cam_key),
                "source.spec": "synthetic",
                "source.seed": 100 + i,
                "source.fps": args.fps,
                "encoder.model": args.model,
                "metrics_port": -1 if args.metrics_port < 0 else 0,
            }
        )
        edges.append(EdgeApp(cfg, encoder=encoder))
    edge_tasks = [asyncio.create_task(e.run(), name=f"edge-{e.config.camera_id}") for e in edges]

    web_server = web_task = None
    password = args.password or secrets.token_urlsafe(9)
    web_url = None
    try:
        from layercast.cloud.web.app import build_web_server, create_app, demo_settings
    except ImportError:
        log.warning("operator web page not available in this build")
    else:
        web_cert, web_key = pki.operator("web")
        settings = demo_settings(
            cloud_target=target,
            username="operator",
            password=password,
            data_dir=data_dir / "web",
            cloud_tls=ClientTls(ca_cert=pki.ca_cert, client_cert=web_cert, client_key=web_key),
            # HTTPS with the demo CA's server certificate (the same names as the cloud's).
            tls_cert=pki.server_cert,
            tls_key=pki.server_key,
        )
        web_server = build_web_server(create_app(settings), args.host, args.web_port)
        web_task = asyncio.create_task(web_server.serve(), name="web")
        await web_server.wait_started()
        web_url = web_server.url

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    try:
        await asyncio.sleep(1.0)  # let the cameras open their streams and metrics endpoints
        print("\nlayercast demo is running (Ctrl-C to stop)")
        print(
            f"  model        {codec.base_model_id} (base, task {codec.task})"
            f"{', enhancement ' + codec.enhancement_model_id if codec.enhancement_model_id else ''}"
        )
        print(f"  cloud gRPC   {target}   mutual TLS (health, reflection, EdgeLink, Analytics, Operator)")
        print(
            f"  compute      {torch.get_num_threads()} intra-op thread(s), "
            f"{cloud_cfg.batching.workers} batch workers, CPU transforms placed by runtime = {codec.runtime!r}"
        )
        print(f"  certificates {pki.layout.root}   (CA, cloud, one per camera, operators web and cli)")
        print(f"  cameras      {', '.join(cameras)} at {args.fps:g} fps each (synthetic streets)")
        if web_url:
            print(f"  operator     {web_url}   user 'operator', password '{password}'")
            print(
                f"               HTTPS signed by the demo CA {pki.ca_cert} (trust it, or accept the warning)"
            )
        if cloud.metrics_server is not None:
            print(f"  metrics      {cloud.metrics_server.url} (cloud)")
            edge_urls = [e.metrics_server.url for e in edges if getattr(e, "metrics_server", None)]
            if edge_urls:
                print(f"               {'  '.join(edge_urls)} (cameras)")
        cli_cert, cli_key = pki.operator("cli")
        tls_flags = f"--ca-cert {pki.ca_cert} --client-cert {cli_cert} --client-key {cli_key}"
        print(f"  results      layercast subscribe --cloud {target} {tls_flags}")
        print(
            f"  enhance      layercast enhance --cloud {target} {tls_flags} --camera cam-1 --seq 5 -o cam-1-5.png"
        )
        print(f"  data         {data_dir}\n", flush=True)

        if args.duration > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration)
        else:
            await stop.wait()
    finally:
        print(
            "stopping: cameras, then the web page, then the cloud (draining in-flight frames) ...", flush=True
        )
        for e in edges:
            e.request_stop()
        results = await asyncio.gather(*edge_tasks, return_exceptions=True)
        if web_server is not None:
            web_server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(web_task, 10)
        await cloud.stop()
        if hasattr(encoder, "close"):
            encoder.close()
    elapsed = time.monotonic() - started
    for e, r in zip(edges, results, strict=True):
        if isinstance(r, BaseException):
            print(f"  {e.config.camera_id}: stopped with {type(r).__name__}: {r}")
        else:
            print(f"  {e.config.camera_id}: {_stats_line(r)}")
    print(f"demo ran {elapsed:.0f} s; stopped cleanly")
    return 0


def _server_names(host: str) -> dict[str, list[str]]:
    """The names the cloud's certificate must carry for clients dialling ``host``."""
    import ipaddress

    hosts, ips = ["localhost"], ["127.0.0.1"]
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        hosts.append(host)
    else:
        ips.append(host.strip("[]"))
    return {"hosts": list(dict.fromkeys(hosts)), "ips": list(dict.fromkeys(ips))}


def _stats_line(stats) -> str:
    fields = (
        "frames_captured",
        "frames_encoded",
        "frames_sent",
        "frames_acked",
        "frames_resent",
        "frames_dropped_capture",
        "frames_dropped_outbox",
    )
    parts = [f"{f.removeprefix('frames_')} {getattr(stats, f)}" for f in fields if hasattr(stats, f)]
    return ", ".join(parts) or repr(stats)
