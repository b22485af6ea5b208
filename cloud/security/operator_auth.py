"""Who is calling the Operator and Analytics APIs, and may they call this method.

Closed by default: every call needs an identity, taken from (in this order)

1. an ``authorization: Bearer <token>`` entry matching ``auth.operator_tokens`` (a token that
   matches nothing is UNAUTHENTICATED, never ignored);
2. an operator client certificate, whose ``layercast:operator:<name>`` URI names the operator
   (mutual TLS, ``tls.client_ca``; the handshake has verified it);
3. nothing, which is served only with the loopback-only development switch
   ``auth.allow_anonymous_operators`` (the caller is then ``anonymous``).

Otherwise the call is UNAUTHENTICATED (``no_operator_identity``). A camera's certificate is
PERMISSION_DENIED on these APIs whatever else it carries (``camera_cert_operator_api``): a camera's
credentials let it stream as itself, not read other cameras' results or ask for their pictures.
The role (:mod:`layercast.cloud.security.roles`) decides the method: a viewer calling Enhance is
PERMISSION_DENIED (``operator_role``). The caller's name is left in
:data:`~layercast.cloud.rpc.interceptors.operator_name` for the rate limit and the audit log.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from grpc import aio

from layercast.cloud.rpc.interceptors import _around, _wrap_handler, operator_name
from layercast.cloud.security.auth import AuthRefusals, bearer_token
from layercast.cloud.security.credentials import TokenTable
from layercast.cloud.security.roles import OperatorRoles
from layercast.cloud.security.tls import peer_identity


class OperatorAuthInterceptor(aio.ServerInterceptor):
    """Requires an operator identity on the given services and the enhancer role where needed."""

    def __init__(
        self,
        tokens: TokenTable,
        service_prefixes: Iterable[str],
        refusals: AuthRefusals,
        roles: OperatorRoles,
        *,
        allow_anonymous: bool = False,
    ) -> None:
        self._tokens = tokens
        self._prefixes = tuple(service_prefixes)
        self._refusals = refusals
        self.roles = roles
        self.allow_anonymous = allow_anonymous
        #: Calls refused since start.
        self.refused = 0

    def _refuse(self, reason: str) -> None:
        self.refused += 1
        self._refusals.count(reason)

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(self._prefixes):
            return handler
        token = bearer_token(details.invocation_metadata)
        token_name = self._tokens.find(token) if token else None
        full_method = details.method
        method = full_method.rsplit("/", 1)[-1]

        async def check(context: Any) -> None:
            peer = peer_identity(context)
            if peer.camera_id is not None:
                self._refuse("camera_cert_operator_api")
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"camera {peer.camera_id!r}'s certificate may only stream as that camera (EdgeLink), "
                    "not call the operator and analytics APIs",
                )
            if token is not None and token_name is None:
                self._refuse("operator_token")
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED, "wrong operator token (authorization: Bearer …)"
                )
            name = token_name or peer.operator
            if name is None:
                if not self.allow_anonymous:
                    self._refuse("no_operator_identity")
                    await context.abort(
                        grpc.StatusCode.UNAUTHENTICATED,
                        "the Operator and Analytics APIs need an operator token (authorization: Bearer …) "
                        "or an operator certificate (layercast:operator:<name>)",
                    )
                name = ""
            operator_name.set(name)
            if not self.roles.allows(name, full_method):
                self._refuse("operator_role")
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"operator {name or 'anonymous'!r} has the viewer role, which may not call {method} "
                    "(auth.enhancers lists the operators who may)",
                )

        return _wrap_handler(handler, lambda fn, _s: _around(fn, check, lambda _c, _e: None))
