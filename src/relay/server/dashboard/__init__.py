"""The live dashboard, served by ``relay server`` and ``relay up`` at ``/`` (see docs/dashboard.md).

Server-rendered pages (Jinja2, autoescaped) with a little hand-written JavaScript for what is live:
queue counts and throughput charts from server-sent events, new jobs and state changes in lists, a
job's log tail. Everything it needs ships in this package (``templates/``, ``static/``): no CDN, no
build step. Actions are plain form posts, protected by a CSRF token and an Origin check; a strict
Content-Security-Policy forbids inline script; with auth on, a person logs in with a token.

>>> app = create_app(relay, settings)   # mount_dashboard is part of it  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from relay.server.dashboard.context import DashboardContext
from relay.server.dashboard.middleware import DashboardMiddleware
from relay.server.dashboard.routes import dashboard_app
from relay.server.dashboard.security import CsrfGuard
from relay.server.dashboard.throughput import ThroughputTracker
from relay.server.state import ServerState
from relay.server.tokens import TokenVerifier

__all__ = ["mount_dashboard"]


def mount_dashboard(app: FastAPI, state: ServerState, verifier: TokenVerifier | None) -> None:
    """Serve the dashboard from ``app``. Call it right after adding the API's auth middleware: the
    dashboard must run before it (it checks its own login cookie, see :mod:`.middleware`)."""
    tracker = None if state.feed is None else ThroughputTracker(state.feed, state.now)
    ctx = DashboardContext(state, verifier, CsrfGuard.from_settings(state.settings), tracker)
    app.add_middleware(DashboardMiddleware, dashboard=dashboard_app(ctx), loopback_only=verifier is None)
    if tracker is not None:
        app.router.lifespan_context = _with_tracker(app.router.lifespan_context, tracker)


def _with_tracker(
    inner: Callable[[Any], AbstractAsyncContextManager[Any]], tracker: ThroughputTracker
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """The server's lifespan, plus the throughput tracker running beside its change feed."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with inner(app) as value:
            task = asyncio.create_task(tracker.run())
            try:
                yield value
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    return lifespan
