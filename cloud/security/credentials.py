"""Bearer-token credentials kept as hashes and checked in constant time.

A configuration never holds a token itself, only ``sha256:<64 hex>`` of it
(tokens are long random strings, so a plain SHA-256 is enough; passwords chosen
by people would need a slow hash and are not accepted here). Entries read
``name=sha256:<hex>`` where ``name`` is a camera id or an operator name.

    table = TokenTable.parse(["cam-1=" + hash_token("s3cret")])
    table.verify("cam-1", "s3cret")   # True
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import tomllib
from collections.abc import Iterable
from pathlib import Path

from layercast.shared.errors import ConfigError

#: What a camera id may look like (see Hello.camera_id in edge.proto).
CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_DUMMY = "sha256:" + "0" * 64


def hash_token(token: str) -> str:
    """The form in which a token is stored in configuration."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random bearer token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class TokenTable:
    """Names mapped to token hashes; lookups take the same time whether or not the name exists."""

    def __init__(self, hashes: dict[str, str] | None = None) -> None:
        self._hashes = dict(hashes or {})

    @classmethod
    def parse(cls, entries: Iterable[str], *, source: str = "configuration") -> TokenTable:
        """Parse ``name=sha256:<hex>`` entries; raise ConfigError naming the bad one."""
        hashes: dict[str, str] = {}
        for entry in entries:
            name, sep, digest = entry.partition("=")
            name, digest = name.strip(), digest.strip().lower()
            if not sep or not name:
                raise ConfigError(
                    f"credential entry {_redact(entry)!r} (from {source}): expected name=sha256:<hex>"
                )
            cls._check(name, digest, source)
            if name in hashes:
                raise ConfigError(f"credential for {name!r} given twice (from {source})")
            hashes[name] = digest
        return cls(hashes)

    @classmethod
    def from_toml(cls, path: Path, table: str = "cameras", *, required: bool = True) -> TokenTable:
        """Read a TOML file whose ``[table]`` maps names to ``sha256:<hex>`` hashes (an empty table
        when it has none and ``required`` is false)."""
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"credentials file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"credentials file {path} is not valid TOML: {exc}") from None
        section = data.get(table)
        if section is None and not required:
            return cls()
        if not isinstance(section, dict):
            raise ConfigError(f'credentials file {path} has no [{table}] table of name = "sha256:<hex>"')
        hashes: dict[str, str] = {}
        for name, digest in section.items():
            if not isinstance(digest, str):
                raise ConfigError(f"credentials file {path}: [{table}] {name} must be a string sha256:<hex>")
            cls._check(name, digest.strip().lower(), str(path))
            hashes[name] = digest.strip().lower()
        return cls(hashes)

    @staticmethod
    def _check(name: str, digest: str, source: str) -> None:
        if not CAMERA_ID_RE.match(name):
            raise ConfigError(f"credential name {name!r} (from {source}) must match [A-Za-z0-9._-]{{1,64}}")
        if not _HASH_RE.match(digest):
            raise ConfigError(
                f"credential for {name!r} (from {source}) is not a token hash: expected sha256:<64 hex digits>; "
                "store hash_token(token), never the token itself (layercast cloud --hash-token)"
            )

    def merged(self, other: TokenTable) -> TokenTable:
        """Both tables; a name in both is an error."""
        both = set(self._hashes) & set(other._hashes)
        if both:
            raise ConfigError(f"credential for {sorted(both)[0]!r} given in two places")
        return TokenTable({**self._hashes, **other._hashes})

    def verify(self, name: str, token: str) -> bool:
        """True when ``token`` is the one stored for ``name`` (constant time in the token)."""
        expected = self._hashes.get(name, _DUMMY)
        ok = hmac.compare_digest(hash_token(token).encode(), expected.encode())
        return ok and name in self._hashes

    def find(self, token: str) -> str | None:
        """The name whose token this is, or None (compares against every entry)."""
        digest = hash_token(token).encode()
        found = None
        for name, expected in self._hashes.items():
            if hmac.compare_digest(digest, expected.encode()):
                found = name
        return found

    def __contains__(self, name: object) -> bool:
        return name in self._hashes

    def __len__(self) -> int:
        return len(self._hashes)

    def names(self) -> list[str]:
        return sorted(self._hashes)


def _redact(entry: str) -> str:
    """Never echo what might be a secret: keep only the name part."""
    name, sep, _ = entry.partition("=")
    return f"{name}=…" if sep else "…"
