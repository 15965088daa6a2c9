"""Where the dashboard meets the server: an ASGI middleware that answers the dashboard's paths with
the dashboard's app, and passes everything else on to the API.

It sits outside the API's bearer-token middleware on purpose: a browser cannot send a bearer header
with a page load or an ``EventSource``, so the dashboard authenticates its own login cookie (with the
same verifier and scopes). Every response it sends carries the security headers of
:mod:`relay.server.dashboard.security`.

With auth off, it only answers requests addressed to a loopback name (``127.0.0.1``, ``localhost``,
``[::1]``): a web page whose domain an attacker re-points at 127.0.0.1 (DNS rebinding) would otherwise
be "same origin" with an unauthenticated dashboard, tokens, Origin check and all.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.server.dashboard.routes import STATIC_PREFIX, is_dashboard_path
from relay.server.dashboard.security import SECURITY_HEADERS
from relay.server.settings import is_loopback

MISDIRECTED = (
    "This dashboard has no auth, so it answers only at a loopback address (http://127.0.0.1:PORT/ or "
    "http://localhost:PORT/). To reach it under another name, turn auth on (RELAY_JWT_SECRET)."
)


def _loopback_host(scope: Scope) -> bool:
    host = Headers(scope=scope).get("host", "")
    name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
    return is_loopback(name.lower())


class DashboardMiddleware:
    def __init__(self, app: ASGIApp, dashboard: ASGIApp, loopback_only: bool) -> None:
        self.app = app
        self.dashboard = dashboard
        self.loopback_only = loopback_only  # auth is off: see the module docstring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_dashboard_path(scope["path"]):
            await self.app(scope, receive, send)
            return

        # Static files are revalidated (ETag), so an upgrade is seen at once; everything else is data
        # that must not linger in caches.
        cache = b"no-cache" if scope["path"].startswith(STATIC_PREFIX) else b"no-store"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in SECURITY_HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                if not any(k.lower() == b"cache-control" for k, _ in kept):
                    kept.append((b"cache-control", cache))
                message = {**message, "headers": [*kept, *SECURITY_HEADERS]}
            await send(message)

        if self.loopback_only and not _loopback_host(scope):
            refused = PlainTextResponse(MISDIRECTED, status_code=421)
            await refused(scope, receive, send_with_headers)
            return
        await self.dashboard(scope, receive, send_with_headers)
