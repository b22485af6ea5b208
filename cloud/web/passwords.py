"""Password and token hashing for the operator page.

Passwords are chosen by people, so they are stored as Argon2id hashes (a slow,
memory-hard hash; ``argon2-cffi``). Tokens for scripts are long random strings,
so they are stored as ``sha256:<hex>`` like the cloud's operator tokens.

    h = hash_password("correct horse")
    verify_password(h, "correct horse")  # True (slow on purpose: run it off the event loop)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher()
#: Verified instead of a missing user's hash, so unknown names take as long as wrong passwords.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """The Argon2id hash to keep in configuration (``$argon2id$v=19$...``)."""
    if not password:
        raise ValueError("an empty password cannot be hashed")
    return _HASHER.hash(password)


def is_password_hash(value: str) -> bool:
    """Whether ``value`` looks like an Argon2 hash (not a plaintext password put there by mistake)."""
    return value.startswith(("$argon2id$", "$argon2i$", "$argon2d$"))


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; a missing hash costs the same time and returns False."""
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def hash_token(token: str) -> str:
    """``sha256:<hex>`` of a token (the form kept in configuration)."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token_hash: str, token: str) -> bool:
    """Constant-time comparison of a presented token with a stored ``sha256:`` hash."""
    return hmac.compare_digest(hash_token(token), token_hash)


def new_secret(nbytes: int = 32) -> str:
    """A random URL-safe string (session keys, CSRF tokens, API tokens)."""
    return secrets.token_urlsafe(nbytes)
