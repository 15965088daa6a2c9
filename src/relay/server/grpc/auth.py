"""Who is calling, and may they: the bearer JWT of the call's ``authorization`` metadata, verified as the
HTTP API verifies it (:class:`relay.server.tokens.TokenVerifier`), and the same scopes per queue and
action (:mod:`relay.server.scopes`).

A missing, malformed or expired token ends the call with ``UNAUTHENTICATED`` (the reason is logged,
never sent); a good token without the scope, with ``PERMISSION_DENIED`` naming the scope. With auth off
(no key configured, loopback only), every call has every grant, as over HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, NoReturn

import grpc
import jwt

from relay.server.scopes import Action, Grants
from relay.server.tokens import TokenVerifier

log = logging.getLogger("relay.server.grpc.auth")


def bearer_of(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            return token.strip() or None if scheme.lower() == "bearer" else None
    return None


async def grants_of(context: grpc.aio.ServicerContext[Any, Any], verifier: TokenVerifier | None) -> Grants:
    """The caller's grants, or the call aborted with ``UNAUTHENTICATED``."""
    if verifier is None:
        return Grants.everything()
    token = bearer_of(context.invocation_metadata())
    if token is None:
        log.info("refused a gRPC call: no bearer token")
        await _abort(context, grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")
    try:
        return verifier.verify(token)
    except jwt.InvalidTokenError as exc:
        log.info("refused a gRPC call: %s", exc)
        await _abort(context, grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")


async def require(
    context: grpc.aio.ServicerContext[Any, Any], grants: Grants, action: Action, queues: Iterable[str]
) -> None:
    """Abort with ``PERMISSION_DENIED`` unless ``grants`` allow ``action`` on every queue of ``queues``."""
    for queue in queues:
        if not grants.allows(action, queue):
            await _abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"this token lacks the scope {action.value}:{queue}",
            )


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, message: str
) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("context.abort returned")  # it raises; this tells the type checker so
