"""Authentication (who is this?) as ASGI middleware, authorization (may they?) as small checks.

A request with a missing, malformed, expired or otherwise bad token is answered 401 here, with the
same generic body whatever the reason (the reason is logged, never sent): it never reaches a handler.
A good token's :class:`~relay.server.scopes.Grants` travel in the ASGI scope to the handlers, which
check the one action and queue they act on with :func:`require` (403 when the grant is missing).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import jwt
from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from relay.server.errors import ApiError, error_response
from relay.server.scopes import Action, Grants
from relay.server.settings import is_loopback
from relay.server.tokens import TokenVerifier

log = logging.getLogger("relay.server.auth")

GRANTS_KEY = "relay.grants"
# Health probes and the API's own description need no token: they say nothing about any job.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
_UNAUTHORIZED = ApiError(
    401, "unauthorized", "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
)


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() or None if scheme.lower() == "bearer" else None
    return None


class AuthMiddleware:
    """Verifies the bearer token of every request but the public ones. ``verifier`` None: auth is off."""

    def __init__(self, app: ASGIApp, verifier: TokenVerifier | None) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.verifier is None:
            refusal = local_request_refusal(scope)
            if refusal is not None:
                await error_response(refusal)(scope, receive, send)
                return
            scope[GRANTS_KEY] = Grants.everything()
        elif scope["path"] in PUBLIC_PATHS:
            scope[GRANTS_KEY] = Grants()
        else:
            grants = self._verify(scope)
            if grants is None:
                await error_response(_UNAUTHORIZED)(scope, receive, send)
                return
            scope[GRANTS_KEY] = grants
        await self.app(scope, receive, send)

    def _verify(self, scope: Scope) -> Grants | None:
        assert self.verifier is not None
        token = bearer_token(scope)
        if token is None:
            log.info("refused %s %s: no bearer token", scope.get("method"), scope["path"])
            return None
        try:
            return self.verifier.verify(token)
        except jwt.InvalidTokenError as exc:
            log.info("refused %s %s: %s", scope.get("method"), scope["path"], exc)
            return None


def local_request_refusal(scope: Scope) -> ApiError | None:
    """With auth off the server trusts whoever reaches it, which only loopback callers can. A web page
    in the developer's browser can reach loopback too: refuse requests another site sent (``Origin``)
    and names other than loopback in ``Host`` (DNS rebinding), so no page can enqueue a shell job."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    host = headers.get("host")
    if host is not None and not is_loopback(_hostname(host)):
        return ApiError(421, "misdirected", "with auth off, this server answers only loopback host names")
    origin = headers.get("origin")
    if origin is not None and origin != "null" and not is_loopback(_hostname(urlsplit(origin).netloc)):
        return ApiError(403, "cross_origin", "with auth off, requests from other sites are refused")
    return None


def _hostname(netloc: str) -> str:
    """``host[:port]`` or ``[v6]:port`` to the bare host."""
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def request_grants(request: Request) -> Grants:
    """The grants of this request; none at all if the middleware did not run (deny by default)."""
    grants = request.scope.get(GRANTS_KEY)
    return grants if isinstance(grants, Grants) else Grants()


def forbidden(action: Action, queue: str) -> ApiError:
    scope = f"{action.value}:{queue}"
    return ApiError(403, "forbidden", f"this token lacks the scope {scope}", detail={"scope": scope})


def require(grants: Grants, action: Action, queue: str) -> None:
    if not grants.allows(action, queue):
        raise forbidden(action, queue)


def require_all(grants: Grants, action: Action) -> None:
    """For requests about every queue at once (all workers, the metrics, a DLQ purge of all queues)."""
    if not grants.allows_all(action):
        raise forbidden(action, "*")
