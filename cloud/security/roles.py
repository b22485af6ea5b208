"""Operator roles on the gRPC Operator and Analytics APIs.

Two roles, as on the operator page: a **viewer** may list cameras and frames, see previews,
subscribe to results and run Infer; an **enhancer** may also call Operator.Enhance (which asks a
camera for its enhancement layer: the full picture). Every caller is a viewer unless
``auth.enhancers`` names it. A name is an operator token's (``auth.operator_tokens``) or an
operator certificate's (its ``layercast:operator:<name>`` URI, with ``tls.client_ca``)::

    [auth]
    operator_tokens = ["alice=sha256:…", "dashboard=sha256:…"]
    enhancers = ["alice", "web"]          # "web": the operator page's certificate

``anonymous`` names the caller without credentials, which exists only with the loopback-only
development switch ``auth.allow_anonymous_operators`` (see :mod:`layercast.cloud.config`).

A caller that acts for someone else (the operator page, for its signed-in user) says so in the
``x-layercast-on-behalf-of`` metadata entry; the audit log then reads ``web:alice``. It is taken
only from enhancers and only for the record: it never grants anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from layercast.shared.errors import ConfigError

Role = Literal["viewer", "enhancer"]
ROLES: tuple[Role, ...] = ("viewer", "enhancer")

#: Methods only an enhancer may call (full method names).
ENHANCER_METHODS = frozenset({"/layercast.v1.Operator/Enhance"})

#: Metadata key naming the person a trusted caller acts for.
ON_BEHALF_OF_KEY = "x-layercast-on-behalf-of"
_ON_BEHALF_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")

#: The name of a caller without credentials (only with ``auth.allow_anonymous_operators``).
ANONYMOUS = "anonymous"


class OperatorRoles:
    """Operator name → role: enhancers are the names listed, everyone else is a viewer."""

    def __init__(self, enhancers: Iterable[str] | None, names: Iterable[str]) -> None:
        #: Operator names with a token (certificate names are not known in advance).
        self.names = frozenset(names)
        self.enhancers = frozenset(enhancers or ())

    @classmethod
    def from_config(
        cls,
        enhancers: list[str] | None,
        names: Iterable[str],
        *,
        certificates: bool = False,
        anonymous: bool = False,
    ) -> OperatorRoles:
        """Check ``auth.enhancers``: without operator certificates (``tls.client_ca``) every name
        must have a token (or be ``anonymous`` with the development switch); ConfigError naming a
        stray one."""
        names = frozenset(names)
        if not certificates:
            known = names | ({ANONYMOUS} if anonymous else set())
            unknown = sorted(set(enhancers or ()) - known)
            if unknown:
                raise ConfigError(
                    f"auth.enhancers names {unknown[0]!r}, which has no entry in auth.operator_tokens "
                    "(and without tls.client_ca there are no operator certificates; known operators: "
                    f"{', '.join(sorted(known)) or 'none'})"
                )
        return cls(enhancers, names)

    def role_of(self, name: str) -> Role:
        """The role of an authenticated operator ("" = the anonymous caller)."""
        return "enhancer" if (name or ANONYMOUS) in self.enhancers else "viewer"

    def allows(self, name: str, method: str) -> bool:
        """May operator ``name`` call ``method``?"""
        return method not in ENHANCER_METHODS or self.role_of(name) == "enhancer"

    def describe(self) -> str:
        """One line for the start-up log (names only, never tokens)."""
        if not self.enhancers:
            return "operator roles: nobody may Enhance (auth.enhancers is empty); every operator is a viewer"
        return f"operator roles: enhancers {sorted(self.enhancers)}; every other operator is a viewer"


def on_behalf_of(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The ``x-layercast-on-behalf-of`` entry, if present and well formed ("" otherwise; a malformed
    value becomes ``"?"`` so the record shows that something was claimed)."""
    for key, value in metadata or ():
        if key.lower() == ON_BEHALF_OF_KEY:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            return text if _ON_BEHALF_RE.match(text) else "?"
    return ""
