"""Edge configuration (TOML < env < flags), the CLI's flag mapping, and reconnect backoff."""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pytest

from layercast.commands import edge as cli
from layercast.edge.backoff import Backoff
from layercast.edge.channel import channel_options
from layercast.edge.config import BackoffConfig, load_edge_config
from layercast.shared.errors import ConfigError


def test_precedence_toml_env_flags(tmp_path: Path):
    toml = tmp_path / "edge.toml"
    toml.write_text(
        'camera_id = "door-1"\ndata_dir = "/var/lib/x"\n'
        '[link]\ncloud = "cloud:1"\ninsecure = true\n'
        '[source]\nspec = "folder:/srv"\nfps = 2.5\n'
        '[outbox]\nmax_frames = 100\nsynchronous = "NORMAL"\n'
        "[link.backoff]\nmax_s = 9\n"
    )
    env = {
        "LAYERCAST_EDGE_SOURCE__FPS": "7",
        "LAYERCAST_EDGE_LINK__CLOUD": "cloud:2",
        "LAYERCAST_EDGE_TOKEN": "s3",
    }
    cfg = load_edge_config(toml, overrides={"link.cloud": "cloud:3", "encoder.batch_max": 2}, environ=env)
    assert cfg.camera_id == "door-1" and cfg.data_dir == Path("/var/lib/x")
    assert cfg.link.cloud == "cloud:3" and cfg.link.insecure
    assert cfg.source.fps == 7.0 and cfg.source.spec == "folder:/srv"
    assert cfg.outbox.max_frames == 100 and cfg.outbox.synchronous == "NORMAL"
    assert cfg.link.backoff.max_s == 9 and cfg.encoder.batch_max == 2
    assert cfg.resolved_token() == "s3"
    assert "s3" not in repr(cfg)
    assert cfg.outbox_path == Path("/var/lib/x/outbox.sqlite3")
    assert cfg.store_dir == Path("/var/lib/x/enhancement/door-1")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"camera_id": "bad id!"}, "camera_id"),
        ({"camera_id": "x" * 65}, "camera_id"),
        ({"encoder.device": "tpu"}, "encoder.device"),
        ({"outbox.synchronous": "OFF"}, "outbox.synchronous"),
        ({"source.fps": 0}, "source.fps"),
        ({"link.client_cert": "/c.pem"}, "client_key"),
        ({"link.backoff.initial_s": 5, "link.backoff.max_s": 1}, "backoff"),
        ({"nope": 1}, "nope"),
    ],
)
def test_invalid_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_edge_config(overrides=overrides, environ={})


def test_token_file(tmp_path: Path):
    (tmp_path / "tok").write_text("abc123\n")
    cfg = load_edge_config(overrides={"token_file": str(tmp_path / "tok")}, environ={})
    assert cfg.resolved_token() == "abc123"
    cfg = load_edge_config(overrides={"token_file": str(tmp_path / "missing")}, environ={})
    with pytest.raises(ConfigError, match="token_file"):
        cfg.resolved_token()


def test_cli_flags_map_to_config_keys():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli.register(sub)
    args = parser.parse_args(
        [
            "edge",
            "--camera-id",
            "c1",
            "--cloud",
            "h:1",
            "--insecure",
            "--fps",
            "3",
            "--source",
            "synthetic:4",
            "--device",
            "cpu",
            "--batch-max",
            "2",
            "--limit",
            "10",
        ]
    )
    assert args.func is cli.run
    ov = cli.overrides_from_args(args)
    assert ov == {
        "camera_id": "c1",
        "link.cloud": "h:1",
        "link.insecure": True,
        "source.fps": 3.0,
        "source.spec": "synthetic:4",
        "source.limit": 10,
        "encoder.device": "cpu",
        "encoder.batch_max": 2,
    }
    cfg = load_edge_config(overrides=ov, environ={})
    assert cfg.link.insecure and cfg.source.limit == 10


def test_print_config_hides_the_token(capfd: pytest.CaptureFixture[str]):
    """``layercast edge --print-config`` through the command's own parser; every byte written to the
    process's stdout and stderr (logging included) is searched for the token."""
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["edge", "--token", "supersecret", "--camera-id", "c9", "--print-config"])
    assert args.func(args) == 0
    out, err = capfd.readouterr()
    assert "c9" in out and "supersecret" not in out + err


def test_keepalive_and_message_limits_are_set():
    cfg = load_edge_config(overrides={"link.keepalive_time_ms": 15000, "link.insecure": True}, environ={})
    opts = dict(channel_options(cfg.link))
    assert opts["grpc.keepalive_time_ms"] == 15000
    assert opts["grpc.keepalive_timeout_ms"] == cfg.link.keepalive_timeout_ms
    # any ping (a flow-control probe the keepalive rides on) must be answered within the keepalive's timeout
    assert opts["grpc.http2.ping_timeout_ms"] == cfg.link.keepalive_timeout_ms
    assert opts["grpc.keepalive_permit_without_calls"] == 1
    assert opts["grpc.max_send_message_length"] == cfg.link.max_send_message_bytes
    assert opts["grpc.max_receive_message_length"] == cfg.link.max_receive_message_bytes


def test_backoff_full_jitter_grows_to_the_cap_and_resets():
    b = Backoff(BackoffConfig(initial_s=0.5, max_s=4.0, multiplier=2.0, jitter=1.0), rng=random.Random(0))
    ceilings, delays = [], []
    for _ in range(8):
        ceilings.append(b.ceiling())
        delays.append(b.next_delay())
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # randomised
    b.reset()
    assert b.ceiling() == 0.5
    fixed = Backoff(BackoffConfig(initial_s=1.0, max_s=8.0, jitter=0.0))
    assert [fixed.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    b.failures = 10_000  # a very long outage does not overflow
    assert b.ceiling() == 4.0
