"""The app factory: a wired :class:`relay.Relay` and :class:`ServerSettings` in, a FastAPI app out.

Requests pass, outermost first: the JSON 500 guard, the request counter, the dashboard (its own
paths, with its login cookie), authentication, then the routes (each checks its own scope). The
lifespan opens storage and runs the change feed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

from relay import __version__
from relay.app import Relay
from relay.server.auth import AuthMiddleware
from relay.server.dashboard import mount_dashboard
from relay.server.errors import InternalErrorMiddleware, install_error_handlers
from relay.server.feed import ChangeFeed
from relay.server.limits import Limits
from relay.server.metrics import HttpMetricsMiddleware, ServerMetrics
from relay.server.openapi import install_openapi
from relay.server.routes import ROUTERS
from relay.server.settings import ServerSettings
from relay.server.state import ServerState
from relay.server.tokens import TokenVerifier
from relay.server.workflows import load_definitions

DESCRIPTION = """Relay's HTTP API: enqueue and steer jobs and workflow runs, watch queues and workers, and run
`external` jobs from any language with the relay-rs runner protocol. Errors are always
`{"error": {"code", "message", "field"}}`. See docs/api.md."""


def create_app(relay: Relay, settings: ServerSettings | None = None) -> FastAPI:
    """The ASGI app serving ``relay``. Raises ConfigurationError for settings it must not start with
    (auth needed but no key, a bad key, an invalid workflow definition, ...), before anything listens."""
    settings = (settings or ServerSettings.from_env()).check()
    verifier = TokenVerifier.from_settings(settings) if settings.auth_required else None
    metrics = ServerMetrics(relay.clock.now())
    feed = None
    if settings.events_interval > 0:
        feed = ChangeFeed(relay.storage, settings.events_interval, observer=metrics.observe)
        metrics.watch_feed(lambda: feed.polls if feed is not None else 0)
    limits = Limits(settings.max_body_bytes, settings.max_json_depth, settings.max_batch)
    workflows = load_definitions(relay)  # a bad definition fails here, before anything listens
    state = ServerState(relay, settings, limits, metrics, feed, workflows)

    app = FastAPI(
        title="Relay",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan(state),
        redoc_url=None,
    )
    app.state.relay_server = state
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    # add_middleware wraps what is there: the last added runs first.
    app.add_middleware(AuthMiddleware, verifier=verifier)
    mount_dashboard(app, state, verifier)  # before auth: the dashboard checks its own login cookie
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    app.add_middleware(InternalErrorMiddleware)
    install_openapi(app, auth=verifier is not None)
    return app


def _lifespan(state: ServerState) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.relay.open_async()
        stop = asyncio.Event()
        tasks = [asyncio.create_task(state.feed.run(stop))] if state.feed is not None else []
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    return lifespan
