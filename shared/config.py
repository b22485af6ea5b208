"""Typed configuration: one dataclass per process, filled from defaults, a TOML
file, environment variables and command-line flags (later sources win).

    @dataclass
    class CloudConfig:
        port: int = 50051
        store: Path = Path("layercast-cloud.db")
        batching: BatchingConfig = field(default_factory=BatchingConfig)   # a [batching] TOML table

    cfg = load_config(CloudConfig, toml_path="cloud.toml", env_prefix="LAYERCAST_CLOUD_",
                      overrides={"port": 6000, "batching.max_batch_size": 8})

Environment variables are the upper-cased dotted key with dots as double
underscores: ``LAYERCAST_CLOUD_BATCHING__MAX_BATCH_SIZE=8``. Supported field
types: bool, int, float, str, Path, Literal[...], list[str], optional forms of
those (``X | None``), and nested dataclasses. A field may declare bounds with
``field(metadata={"min": 1, "max": 64})``. Every failure raises ConfigError
naming the key, the value, where it came from and what was expected; a field
with ``metadata={"secret": True}`` (a token, a key) never has its value quoted.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from layercast.shared.errors import ConfigError

T = TypeVar("T")


def load_config(
    cls: type[T],
    *,
    toml_path: str | Path | None = None,
    env_prefix: str | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> T:
    """Build ``cls`` from defaults < TOML file < environment < overrides."""
    values: dict[str, tuple[Any, str]] = {}
    if toml_path is not None:
        path = Path(toml_path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for key, value in _flatten(data):
            values[key] = (value, f"{path}")
    known = dict(_leaf_fields(cls))
    if env_prefix:
        env = os.environ if environ is None else environ
        for key in known:
            name = env_prefix + key.upper().replace(".", "__")
            if name in env:
                values[key] = (env[name], f"environment variable {name}")
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = (value, "command line")
    unknown = sorted(set(values) - set(known))
    if unknown:
        where = values[unknown[0]][1]
        raise ConfigError(
            f"unknown configuration key {unknown[0]!r} (from {where}); known keys: {', '.join(sorted(known))}"
        )
    return _build(cls, "", values)


def config_keys(cls: type) -> list[str]:
    """Dotted names of every settable key of ``cls``."""
    return [k for k, _ in _leaf_fields(cls)]


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(_flatten(value, dotted + "."))
        else:
            out.append((dotted, value))
    return out


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _leaf_fields(cls: type, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(_leaf_fields(tp, f"{prefix}{f.name}."))
        else:
            out.append((f"{prefix}{f.name}", tp))
    return out


def _build(cls: type[T], prefix: str, values: dict[str, tuple[Any, str]]) -> T:
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, key + ".", values)
        elif key in values:
            raw, source = values[key]
            value = _coerce(raw, tp, key, source, secret=bool(f.metadata.get("secret")))
            _check_bounds(value, f.metadata, key, source)
            kwargs[f.name] = value
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid configuration {prefix.rstrip('.') or cls.__name__}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def _check_bounds(value: Any, meta: Any, key: str, source: str) -> None:
    lo, hi = meta.get("min"), meta.get("max")
    if value is None:
        return
    if lo is not None and value < lo:
        raise ConfigError(f"{key} = {value!r} (from {source}) is below the minimum {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key} = {value!r} (from {source}) is above the maximum {hi}")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(raw: Any, tp: Any, key: str, source: str, secret: bool = False) -> Any:
    """``raw`` as type ``tp``; a ``secret`` field's value is never quoted in the error."""

    def fail(expected: str) -> ConfigError:
        shown = "<secret, not shown>" if secret else repr(raw)
        return ConfigError(f"{key} = {shown} (from {source}): expected {expected}")

    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.lower() in {"", "none", "null"}):
            return None
        return _coerce(raw, args[0], key, source, secret)
    if origin is Literal:
        choices = get_args(tp)
        if raw not in choices:
            raise fail("one of " + ", ".join(repr(c) for c in choices))
        return raw
    if origin is list:
        (item,) = get_args(tp)
        if isinstance(raw, str):
            raw = [part.strip() for part in raw.split(",") if part.strip()]
        if not isinstance(raw, list | tuple):
            raise fail("a list")
        return [_coerce(v, item, key, source, secret) for v in raw]
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise fail("true or false")
    if tp is int:
        if isinstance(raw, bool):
            raise fail("an integer")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise fail("an integer") from None
    if tp is float:
        if isinstance(raw, bool):
            raise fail("a number")
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise fail("a number") from None
    if tp is str:
        if not isinstance(raw, str):
            raise fail("a string")
        return raw
    if tp is Path:
        if not isinstance(raw, str | Path):
            raise fail("a path")
        return Path(raw).expanduser()
    raise ConfigError(f"{key}: unsupported field type {tp!r}")
