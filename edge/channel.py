"""The gRPC channel from the edge to the cloud: TLS or plain text, and its options, each set on purpose."""

from __future__ import annotations

import grpc
import grpc.aio

from layercast.edge.config import LinkConfig
from layercast.shared.tls import ClientTls, open_channel


def channel_options(config: LinkConfig) -> list[tuple[str, int | str]]:
    """gRPC channel arguments, each set on purpose."""
    return [
        # Ping the cloud when the connection is quiet, and give up on it when a ping goes unanswered:
        # this is what notices a dead NAT mapping or a pulled cable while the stream looks open.
        ("grpc.keepalive_time_ms", config.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", config.keepalive_timeout_ms),
        # Give every ping the keepalive's deadline. gRPC lets a keepalive ride on a ping already in
        # flight (a flow-control BDP probe, sent all the time while frames flow), and that one waits
        # for its ack for ping_timeout_ms, 60 s by default: without this a link that goes dark while
        # streaming is noticed after a minute, not after keepalive_time + keepalive_timeout
        # (measured in tests/e2e/test_faults_network.py).
        ("grpc.http2.ping_timeout_ms", config.keepalive_timeout_ms),
        # The stream is always open, but allow pings regardless (and between streams).
        ("grpc.keepalive_permit_without_calls", 1),
        # 0 = no limit on pings sent without data frames in between (the default 2 would stop them
        # on a link that is idle apart from pings).
        ("grpc.http2.max_pings_without_data", 0),
        # Base frames and enhancement responses are the largest messages sent; the cloud only sends
        # small control messages, so anything larger coming in is refused.
        ("grpc.max_send_message_length", config.max_send_message_bytes),
        ("grpc.max_receive_message_length", config.max_receive_message_bytes),
        # Our own backoff (with jitter) drives reconnects; keep gRPC's channel-level one short and
        # bounded so a fresh channel connects promptly.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", max(1000, int(config.backoff.max_s * 1000))),
        ("grpc.enable_retries", 0),  # a stream is not retryable; resending is the outbox's job
    ]


def make_channel(config: LinkConfig) -> grpc.aio.Channel:
    """A channel to ``config.cloud``: TLS (mutual when a client certificate is set) or plain text."""
    tls = ClientTls(
        insecure=config.insecure,
        ca_cert=config.ca_cert,
        client_cert=config.client_cert,
        client_key=config.client_key,
        server_name=config.server_name,
    )
    return open_channel(config.cloud, tls, channel_options(config))
