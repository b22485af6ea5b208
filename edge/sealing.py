"""Encryption at rest of the edge's enhancement store and outbox (AES-256-GCM), and its key.

Enhancement layers are the full picture a camera saw, kept on the edge's disk for an hour or
so: someone who takes the disk (or a backup of it) should not be able to look at them (the
outbox seals its base frames with the same key, see ``layercast.edge.outbox``). Every file's
payload is sealed by :class:`AesGcmSealer` (sealer id 1 in the file header of
:mod:`layercast.edge.enhancement_store`)::

    payload = key_id (8 bytes) | nonce (12 bytes) | AES-256-GCM(key, nonce, data, aad) with its 16-byte tag

* ``key_id`` names the key (the first 8 bytes of SHA-256 over a fixed label and the key, so it
  reveals nothing about the key): a file sealed under another key is refused saying so, never
  decrypted to garbage;
* the associated data binds the file to its camera and frame number (the store's ``aad``), so a
  file copied to another name or camera fails authentication;
* a fresh random nonce per file (96 bits; the store writes far fewer than 2^32 files per key);
* any change to the stored bytes fails the tag check and is reported as tampering.

Files written without encryption (before a key was configured) are refused with a message saying
so, as are encrypted files when the key is gone: a file that cannot be authenticated is not served.

The key is 32 random bytes, base64 in a file (``store.encryption_key_file``; make one with
``layercast edge --new-key FILE``) or in ``LAYERCAST_EDGE_STORE__ENCRYPTION_KEY``. With neither,
the edge makes ``<data_dir>/edge.key`` (0600) on its first start and reuses it after
(:func:`edge_sealer`); only ``store.encryption = "off"`` stores plaintext, with a warning. The
key is never logged or put in an error message; its id is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from layercast.shared.errors import ConfigError, StorageError

log = logging.getLogger(__name__)

KEY_BYTES = 32
KEY_ID_BYTES = 8
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = KEY_ID_BYTES + NONCE_BYTES + TAG_BYTES
_KEY_ID_LABEL = b"layercast enhancement store key id v1\x00"


def key_id(key: bytes) -> bytes:
    """The 8-byte id recorded with every file sealed under ``key`` (not a secret)."""
    return hashlib.sha256(_KEY_ID_LABEL + key).digest()[:KEY_ID_BYTES]


class AesGcmSealer:
    """Seals payloads with AES-256-GCM under one key (see the module docstring)."""

    sealer_id = 1

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"an enhancement store key must be {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        self.key_id = key_id(key)

    def __repr__(self) -> str:  # never the key
        return f"AesGcmSealer(key_id={self.key_id.hex()})"

    def seal(self, data: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return self.key_id + nonce + self._aead.encrypt(nonce, data, self.key_id + aad)

    def open(self, stored: bytes, aad: bytes) -> bytes:
        if len(stored) < OVERHEAD:
            raise StorageError(
                f"encrypted payload of {len(stored)} bytes is shorter than its {OVERHEAD}-byte frame"
            )
        kid, nonce, sealed = (
            stored[:KEY_ID_BYTES],
            stored[KEY_ID_BYTES : OVERHEAD - TAG_BYTES],
            stored[OVERHEAD - TAG_BYTES :],
        )
        if kid != self.key_id:
            raise StorageError(
                f"encrypted under key {kid.hex()}, but this edge's key is {self.key_id.hex()} "
                "(store.encryption_key_file changed?)"
            )
        try:
            return self._aead.decrypt(nonce, sealed, kid + aad)
        except InvalidTag:
            raise StorageError(
                "encrypted payload fails authentication: the file was altered, or it belongs to another "
                "frame or camera"
            ) from None


def new_key() -> bytes:
    """32 random bytes."""
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str, *, source: str) -> bytes:
    """A base64 key of 32 bytes; ConfigError naming ``source`` (never echoing the text) otherwise."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            f"{source}: not a base64 key (make one with `layercast edge --new-key FILE`)"
        ) from None
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"{source}: the key is {len(key)} bytes, an AES-256 key is {KEY_BYTES} "
            "(make one with `layercast edge --new-key FILE`)"
        )
    return key


def write_key_file(path: Path) -> bytes:
    """Create ``path`` (mode 0600, never overwriting) holding a new base64 key; returns its id."""
    key = new_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; a key file is never overwritten") from None
    except OSError as exc:
        raise ConfigError(f"cannot create key file {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as f:
        f.write(encode_key(key) + "\n")
    return key_id(key)


def read_key_file(path: Path, *, key: str = "store.encryption_key_file") -> bytes:
    """The key in ``path``; warns when the file is readable by others than its owner."""
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"{key} = {str(path)!r}: cannot read the key: {exc.strerror or exc}") from None
    if mode & 0o077:
        log.warning("%s %s can be read by other users (chmod 600 it)", key, path)
    return decode_key(text, source=f"{key} = {str(path)!r}")


def sealer_from_config(key_file: Path | None, key_text: str) -> AesGcmSealer | None:
    """The sealer the edge's configuration asks for: None (no encryption) without a key."""
    if key_file is not None and key_text:
        raise ConfigError(
            "store.encryption_key_file and store.encryption_key (LAYERCAST_EDGE_STORE__ENCRYPTION_KEY) "
            "are both set; choose one"
        )
    if key_file is not None:
        return AesGcmSealer(read_key_file(key_file))
    if key_text:
        return AesGcmSealer(decode_key(key_text, source="store.encryption_key"))
    return None


def edge_sealer(
    encryption: str, key_file: Path | None, key_text: str, default_key_file: Path
) -> AesGcmSealer | None:
    """The sealer of an edge: the configured key, else ``default_key_file`` (created 0600 when
    missing); None only when ``encryption`` is "off" (a warning says the pictures are in plaintext)."""
    if encryption == "off":
        if key_file is not None or key_text:
            raise ConfigError(
                'store.encryption = "off" and an encryption key are both set; remove one of them'
            )
        log.warning(
            'store.encryption = "off": enhancement layers and base frames are stored on disk in plaintext'
        )
        return None
    configured = sealer_from_config(key_file, key_text)
    if configured is not None:
        return configured
    if not default_key_file.exists():
        kid = write_key_file(default_key_file)
        log.info("made the edge's encryption key %s (key id %s)", default_key_file, kid.hex())
    return AesGcmSealer(read_key_file(default_key_file, key="the edge's key file"))
