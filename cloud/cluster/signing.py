"""Message authentication between replicas: an HMAC-SHA256 with the cluster secret.

Redis is shared, so anything that can write to it could otherwise act as a replica. Every inbox
message (:mod:`.rpc`) and every results entry (:mod:`.results`) carries a tag computed with
``cluster.secret``; a message without one, or with a wrong one, is dropped and counted in
:class:`Rejections` (``layercast_cloud_cluster_rejected_total{reason}``).

The tag covers a domain label (``inbox`` / ``result``) and every field, each length-prefixed, so a
tag of one kind of message or one field layout is never valid for another.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections import Counter
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: Reasons a message from Redis is refused (label values of the rejected counter).
REASONS = (
    "unsigned",  # no tag at all
    "bad_signature",  # a tag that does not match (a forgery, or another cluster secret)
    "misaddressed",  # a signed message taken from another replica's inbox
    "replayed",  # a signed request seen before
    "unauthorised",  # a forwarded call whose caller may not do it (its role)
    "sequence_jump",  # a result whose sequence is implausibly far ahead of its camera's last one
    "malformed",  # signed, but its fields do not parse
)


class Signer:
    """Tags and checks messages with one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the cluster secret must be at least 16 bytes")
        self._key = secret

    def tag(self, domain: str, *parts: bytes) -> bytes:
        """The hex tag of ``parts`` under ``domain``."""
        mac = hmac.new(self._key, domain.encode() + b"\0", hashlib.sha256)
        for part in parts:
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return mac.hexdigest().encode()

    def check(self, tag: bytes | None, domain: str, *parts: bytes) -> str | None:
        """None when ``tag`` is right, else the reason it is refused."""
        if not tag:
            return "unsigned"
        if not hmac.compare_digest(tag, self.tag(domain, *parts)):
            return "bad_signature"
        return None


class Rejections:
    """Messages from Redis refused, by reason; logged (rate-limited) without their content."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, reason: str, what: str) -> None:
        self.counts[reason] += 1
        n = self.counts[reason]
        if n == 1 or n % 1000 == 0:
            log.warning(
                "refused %s from Redis (%s; %d so far): another writer than the cloud replicas, "
                "or a replica with another cluster.secret",
                what,
                reason,
                n,
            )

    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Caller:
    """Who a forwarded Operator call is made for, signed with the call: the operator's name (from
    its token; "" when the operator APIs need none), its role on the replica that took the call,
    the person it acts for (``x-layercast-on-behalf-of``), and the request id."""

    operator: str = ""
    role: str = ""
    on_behalf_of: str = ""
    request_id: str = "-"

    def as_header(self) -> dict[str, str]:
        return {
            "operator": self.operator,
            "role": self.role,
            "on_behalf_of": self.on_behalf_of,
            "request_id": self.request_id,
        }

    @classmethod
    def from_header(cls, value: object) -> Caller | None:
        if not isinstance(value, dict):
            return None
        fields = {k: str(value.get(k, ""))[:128] for k in ("operator", "role", "on_behalf_of", "request_id")}
        return cls(**fields)

    @property
    def user(self) -> str:
        name = self.operator or "anonymous"
        return f"{name}:{self.on_behalf_of}" if self.on_behalf_of else name
