"""Operator roles on the gRPC Operator and Analytics APIs.

Two roles, as on the operator page: a **viewer** may list cameras and frames, see previews,
subscribe to results and run Infer; an **enhancer** may also call Operator.Enhance (which asks a
camera for its enhancement layer: the full picture). Configuration::

    [auth]
    operator_tokens = ["alice=sha256:…", "web=sha256:…", "dashboard=sha256:…"]
    enhancers = ["alice", "web"]          # everyone else with a token is a viewer

``auth.enhancers`` unset keeps what configurations written before roles meant: every operator
token may Enhance (a line at start-up says so). Set it (``[]`` for nobody) to choose. Names in it
must have a token. With no operator tokens at all the APIs are open and everyone may Enhance.

A caller that acts for someone else (the operator page, for its signed-in user) says so in the
``x-layercast-on-behalf-of`` metadata entry; the audit log then reads ``web:alice``. It is taken
only from enhancer tokens and only for the record: it never grants anything.
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

#: The caller's name in the audit log when the operator APIs need no token.
ANONYMOUS = "anonymous"


class OperatorRoles:
    """Operator name → role."""

    def __init__(self, enhancers: Iterable[str] | None, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        #: True when ``auth.enhancers`` is unset: every operator token may Enhance (as before roles).
        self.all_enhance = enhancers is None
        self.enhancers = frozenset(self.names if enhancers is None else enhancers)

    @classmethod
    def from_config(cls, enhancers: list[str] | None, names: Iterable[str]) -> OperatorRoles:
        """Check ``auth.enhancers`` against the operator names; ConfigError naming a stray one."""
        names = frozenset(names)
        if enhancers is not None:
            if not names:
                raise ConfigError(
                    "auth.enhancers is set but auth.operator_tokens is empty: roles need operator tokens "
                    "(without tokens the operator APIs are open to everyone)"
                )
            unknown = sorted(set(enhancers) - names)
            if unknown:
                raise ConfigError(
                    f"auth.enhancers names {unknown[0]!r}, which has no entry in auth.operator_tokens "
                    f"(known operators: {', '.join(sorted(names))})"
                )
        return cls(enhancers, names)

    def role_of(self, name: str) -> Role:
        """The role of an authenticated operator ("" = open APIs, where everyone is an enhancer)."""
        if not name or name in self.enhancers:
            return "enhancer"
        return "viewer"

    def allows(self, name: str, method: str) -> bool:
        """May operator ``name`` call ``method``?"""
        return method not in ENHANCER_METHODS or self.role_of(name) == "enhancer"

    def describe(self) -> str:
        """One line for the start-up log (names only, never tokens)."""
        if not self.names:
            return "operator APIs open (no auth.operator_tokens): everyone may Enhance"
        if self.all_enhance:
            return (
                f"operator roles: every operator token may Enhance ({len(self.names)} operators; "
                "auth.enhancers unset)"
            )
        viewers = sorted(self.names - self.enhancers)
        return f"operator roles: enhancers {sorted(self.enhancers)}, viewers {viewers}"


def on_behalf_of(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The ``x-layercast-on-behalf-of`` entry, if present and well formed ("" otherwise; a malformed
    value becomes ``"?"`` so the record shows that something was claimed)."""
    for key, value in metadata or ():
        if key.lower() == ON_BEHALF_OF_KEY:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            return text if _ON_BEHALF_RE.match(text) else "?"
    return ""
