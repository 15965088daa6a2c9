"""What every dashboard view needs, and who is asking: :class:`DashboardContext` and :func:`grants_of`.

A person's identity is the bearer token they logged in with, kept in an HttpOnly cookie and verified
on every request by the server's own :class:`~relay.server.tokens.TokenVerifier` (so an expired or
revoked-by-rotation token stops working at once); its scopes are checked by the same helpers the API
uses. With auth off, everyone may do everything, as on the API.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import jwt
from starlette.requests import Request

from relay.server.dashboard.security import TOKEN_COOKIE, CsrfGuard
from relay.server.dashboard.throughput import ThroughputTracker
from relay.server.feed import ChangeFeed
from relay.server.scopes import Grants
from relay.server.state import ServerState
from relay.server.tokens import TokenVerifier
from relay.storage.base import Storage

log = logging.getLogger("relay.server.dashboard")


class LoginRequired(Exception):
    """No valid token: pages send the person to the login form, data endpoints answer 401."""


@dataclass
class DashboardContext:
    server: ServerState
    verifier: TokenVerifier | None  # None: auth is off
    csrf: CsrfGuard
    tracker: ThroughputTracker | None  # None when the change feed is off

    @property
    def storage(self) -> Storage:
        return self.server.storage

    @property
    def feed(self) -> ChangeFeed | None:
        return self.server.feed

    @property
    def auth_on(self) -> bool:
        return self.verifier is not None

    async def open(self) -> None:
        # The server's lifespan opens storage; this covers an app run without one (idempotent).
        await self.server.relay.open_async()


def context_of(request: Request) -> DashboardContext:
    ctx: DashboardContext = request.app.state.dashboard
    return ctx


def grants_of(request: Request) -> Grants:
    """The grants of the person behind ``request``; raises LoginRequired without a valid token."""
    verifier = context_of(request).verifier
    if verifier is None:
        return Grants.everything()
    token = request.cookies.get(TOKEN_COOKIE)
    if not token:
        raise LoginRequired()
    try:
        return verifier.verify(token)
    except jwt.InvalidTokenError as exc:
        log.info("dashboard: refused the token cookie: %s", exc)
        raise LoginRequired() from None
