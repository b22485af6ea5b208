"""Small helpers shared by the edge's and the cloud's Prometheus metrics.

Each component builds its own :class:`prometheus_client.CollectorRegistry`
(several can live in one process, e.g. in tests or ``layercast demo``) and
serves it with :func:`start_metrics_server`::

    server = await start_metrics_server(registry, host="127.0.0.1", port=0)   # 0 = any free port
    ...   # GET http://127.0.0.1:{server.port}/metrics
    await server.close()

The server is a tiny HTTP/1.1 responder on the running asyncio loop (no
thread): collectors run on the loop thread, so they may read loop-owned state
(sessions, queues) without locks. It answers ``GET``/``HEAD`` on ``/metrics``
(Prometheus text or OpenMetrics, as the scraper's ``Accept`` asks), ``/`` and
``/healthz``; anything else gets 404/405. Every connection is closed after
one answer and slow or oversized requests are cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from layercast.shared.errors import ConfigError

log = logging.getLogger(__name__)

#: Longest a client may take to send its request line and headers.
REQUEST_TIMEOUT_S = 10.0
#: Largest request head (request line + headers) accepted.
MAX_REQUEST_HEAD = 16 * 1024


#: Buckets of the bits-per-pixel histograms (edge and cloud): a learned codec's base layer
#: is typically 0.02-0.5 bpp, an enhancement layer up to a few bpp.
BPP_BUCKETS = (
    0.01,
    0.02,
    0.05,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    4.0,
    6.0,
    8.0,
    12.0,
    24.0,
)


def metrics_enabled(port: int | None) -> bool:
    """``metrics_port`` semantics: None or a negative number = off, 0 = any free port, else that port."""
    return port is not None and port >= 0


@dataclass
class MetricsServer:
    """A running /metrics endpoint."""

    host: str
    port: int
    _server: asyncio.Server

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"http://{host}:{self.port}/metrics"

    async def close(self) -> None:
        """Stop listening (idempotent)."""
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)


async def start_metrics_server(
    registry: CollectorRegistry, *, host: str = "127.0.0.1", port: int = 0
) -> MetricsServer:
    """Serve ``registry`` on ``http://host:port/metrics`` from the running loop; returns the bound port."""
    bind_host = host.strip("[]") or "0.0.0.0"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _answer(registry, reader, writer)
        except (TimeoutError, ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass  # a client that went away or sent garbage
        except Exception:
            log.exception("metrics request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    try:
        server = await asyncio.start_server(handle, bind_host, port, limit=MAX_REQUEST_HEAD)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    bound = int(server.sockets[0].getsockname()[1])
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return MetricsServer(host, bound, server)


async def _answer(
    registry: CollectorRegistry, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    head = await asyncio.wait_for(_read_head(reader), REQUEST_TIMEOUT_S)
    if head is None:
        _respond(writer, 400, "text/plain; charset=utf-8", b"bad request\n")
        await writer.drain()
        return
    method, path, headers = head
    if method not in ("GET", "HEAD"):
        _respond(
            writer, 405, "text/plain; charset=utf-8", b"method not allowed\n", extra={"Allow": "GET, HEAD"}
        )
    elif path == "/metrics":
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        try:
            body = encoder(registry)
        except Exception:
            log.exception("collecting metrics failed")
            _respond(writer, 500, "text/plain; charset=utf-8", b"collecting metrics failed\n")
        else:
            _respond(writer, 200, content_type, body, head_only=method == "HEAD")
    elif path in ("/", "/healthz"):
        body = b'<html><body><a href="/metrics">/metrics</a></body></html>\n' if path == "/" else b"ok\n"
        ctype = "text/html; charset=utf-8" if path == "/" else "text/plain; charset=utf-8"
        _respond(writer, 200, ctype, body, head_only=method == "HEAD")
    else:
        _respond(writer, 404, "text/plain; charset=utf-8", b"not found: try /metrics\n")
    await writer.drain()


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
    """(method, path, lower-cased headers) of one request, or None when it is malformed or too large."""
    line = await reader.readline()
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    size = len(line)
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        size += len(raw)
        if size > MAX_REQUEST_HEAD:
            return None
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return parts[0].upper(), parts[1].split("?", 1)[0], headers


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    content_type: str,
    body: bytes,
    *,
    head_only: bool = False,
    extra: dict[str, str] | None = None,
) -> None:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, '')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in (extra or {}).items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head_only:
        writer.write(body)


class BuildInfoCollector(Collector):
    """``layercast_build_info{version, base_model_id, enhancement_model_id} 1``.

    ``ids`` is called at every scrape (the model may load after the server starts) and
    returns ``(base_model_id, enhancement_model_id)``; "" while unknown.
    """

    NAME = "layercast_build_info"

    def __init__(self, ids: Callable[[], tuple[str, str]]) -> None:
        self._ids = ids

    def collect(self) -> Iterator[Metric]:
        from layercast import __version__

        try:
            base, enh = self._ids()
        except Exception:  # a component not built yet
            base, enh = "", ""
        family = GaugeMetricFamily(
            self.NAME,
            "Software version and the codec models in use (always 1).",
            labels=["version", "base_model_id", "enhancement_model_id"],
        )
        family.add_metric([__version__, base or "", enh or ""], 1.0)
        yield family


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name ``registry`` can expose (``_total``, ``_bucket`` … included), families
    without samples too: what PromQL in dashboards and alert rules may refer to."""
    suffixes: dict[str, Iterable[str]] = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
        "info": ("_info",),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    }
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names
