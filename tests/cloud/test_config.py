"""CloudConfig: sources in order, and errors a person understands."""

from __future__ import annotations

import pytest

from layercast.cloud.config import load_cloud_config
from layercast.cloud.security.credentials import TokenTable, hash_token
from layercast.shared.errors import ConfigError

CAM = "cam-1=" + hash_token("secret-token")


def test_sources_override_in_order(tmp_path):
    toml = tmp_path / "cloud.toml"
    toml.write_text(
        f'port = 6000\ninsecure = true\n[batching]\nmax_batch_size = 4\nmax_queue_delay_ms = 20\n[auth]\ncamera_tokens = ["{CAM}"]\n'
    )
    env = {"LAYERCAST_CLOUD_BATCHING__MAX_BATCH_SIZE": "16", "LAYERCAST_CLOUD_PORT": "7000"}
    cfg = load_cloud_config(toml, environ=env, overrides={"port": 0})
    assert cfg.port == 0  # flag beats env beats file
    assert cfg.insecure  # a top-level TOML key
    assert cfg.batching.max_batch_size == 16  # env beats file
    assert cfg.batching.max_queue_delay_ms == 20.0  # file beats default
    assert cfg.db_path == cfg.data_dir / "cloud.db"
    assert cfg.camera_credentials().verify("cam-1", "secret-token")
    assert not cfg.camera_credentials().verify("cam-1", "secret-tokem")


def test_no_credentials_is_explained():
    with pytest.raises(ConfigError, match="no camera credentials configured"):
        load_cloud_config(environ={}, overrides={"insecure": True})
    cfg = load_cloud_config(environ={}, overrides={"insecure": True, "auth.allow_any_camera": True})
    assert cfg.auth.allow_any_camera


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (
            {"batching.max_batch_size": 0},
            "batching.max_batch_size = 0 (from command line) is below the minimum 1",
        ),
        ({"port": "http"}, "port = 'http' (from command line): expected an integer"),
        ({"depth_encoding": "jpeg"}, "expected one of 'png16', 'f16'"),
        ({"limits.max_frame_bytes": 32 << 20}, "limits.max_frame_bytes"),
        ({"auth.camera_tokens": ["cam-1=plain-secret"]}, "not a token hash"),
        ({"auth.camera_tokens": ["bad id!=" + hash_token("x")]}, "must match"),
        ({"keepalive_timeout_s": 60.0}, "keepalive_timeout_s"),
    ],
)
def test_bad_values_name_the_key(overrides, needle):
    base = {"auth.camera_tokens": [CAM], "insecure": True}
    with pytest.raises(ConfigError) as info:
        load_cloud_config(environ={}, overrides={**base, **overrides})
    assert needle in str(info.value)


def test_errors_never_echo_a_token():
    with pytest.raises(ConfigError) as info:
        load_cloud_config(
            environ={}, overrides={"insecure": True, "auth.camera_tokens": ["my-very-secret-token"]}
        )
    assert "my-very-secret-token" not in str(info.value)


def test_unknown_toml_key_is_refused(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text(f'[auth]\ncamera_tokens = ["{CAM}"]\n[batching]\nmax_batch = 3\n')
    with pytest.raises(ConfigError, match="unknown configuration key 'batching.max_batch'"):
        load_cloud_config(toml, environ={})


def test_credentials_file(tmp_path):
    creds = tmp_path / "cameras.toml"
    creds.write_text(f'[cameras]\ncam-2 = "{hash_token("t2")}"\n')
    cfg = load_cloud_config(
        environ={},
        overrides={"insecure": True, "auth.credentials_file": str(creds), "auth.camera_tokens": [CAM]},
    )
    table = cfg.camera_credentials()
    assert table.names() == ["cam-1", "cam-2"]
    assert table.verify("cam-2", "t2") and not table.verify("cam-2", "t1")


def test_token_table_find_and_unknown_names():
    table = TokenTable.parse(["alice=" + hash_token("a"), "bob=" + hash_token("b")])
    assert table.find("b") == "bob" and table.find("c") is None
    assert not table.verify("carol", "a")
