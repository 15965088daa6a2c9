"""Running the server with uvicorn: :func:`serve` for ``relay server``, :func:`serve_async` to run it
beside a worker in one event loop (``relay up``).

Like relay-rs, the server also takes part in maintenance (the reaper returns the jobs of runners that
stopped heartbeating; the scheduler, the pruner): only the elected leader of all workers and servers
acts, so running it here as well as in workers is safe, and a server without workers still reaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

from relay.app import Relay
from relay.errors import ConfigurationError
from relay.runtime.maintenance import MaintenanceRunner, Service, default_services
from relay.server.app import create_app
from relay.server.grpc.serve import GrpcServer, start_grpc
from relay.server.settings import ServerSettings
from relay.server.state import ServerState
from relay.server.tokens import TokenVerifier
from relay.types import worker_identity

log = logging.getLogger("relay.server")

GRACEFUL_SHUTDOWN = 10  # seconds open requests get to finish at shutdown


class _Server(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, state: ServerState, handle_signals: bool, grpc: GrpcServer | None
    ) -> None:
        super().__init__(config)
        self._state = state
        self._handle_signals = handle_signals
        self._grpc = grpc

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Inside `relay up` the worker owns SIGTERM/SIGINT and stops us through `stop`.
        if self._handle_signals:
            with super().capture_signals():
                yield
        else:
            yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Event streams never end on their own: end them first, or shutdown would wait for them.
        if self._state.feed is not None:
            self._state.feed.close()
        if self._grpc is None:
            await super().shutdown(sockets)
        else:  # both at once: open gRPC calls get the same grace as open requests
            await asyncio.gather(super().shutdown(sockets), self._grpc.stop(GRACEFUL_SHUTDOWN))


def _services(relay: Relay) -> list[Service]:
    s = relay.settings
    return default_services(
        relay.storage,
        relay.clock,
        reaper_interval=s.reaper_interval,
        scheduler_interval=s.scheduler_interval,
        retention=s.retention,
        cron_interval=s.cron_interval,
    )


async def serve_async(
    relay: Relay,
    settings: ServerSettings | None = None,
    *,
    stop: asyncio.Event | None = None,
    sockets: list[socket.socket] | None = None,
    access_log: bool = False,
) -> None:
    """Serve until ``stop`` is set (or, without ``stop``, until SIGTERM/SIGINT).

    ``sockets``: listen on these instead of binding ``settings.host``/``port`` (tests pass a socket
    bound to port 0). Raises ConfigurationError before binding for settings it must not start with.

    >>> stop = asyncio.Event()                                          # doctest: +SKIP
    >>> server = asyncio.create_task(serve_async(relay, settings, stop=stop))
    >>> await worker.run()          # the worker handles the signals
    >>> stop.set(); await server
    """
    settings = (settings or ServerSettings.from_env()).check()
    app = create_app(relay, settings)
    state: ServerState = app.state.relay_server
    await relay.open_async()  # a bad storage URL fails here, before anything listens
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # the caller configures logging (relay's, in the CLI)
        access_log=access_log,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )
    # gRPC first: a port it cannot bind is a ConfigurationError before anything listens on HTTP.
    verifier = TokenVerifier.from_settings(settings) if settings.auth_required else None
    grpc_server = await start_grpc(state, settings, verifier)
    server = _Server(config, state, handle_signals=stop is None, grpc=grpc_server)
    side_stop = asyncio.Event()
    side = _side_tasks(relay, settings, server, stop, side_stop)
    try:
        await server.serve(sockets=sockets)
    except SystemExit:
        # uvicorn logs why (an address in use, a failed startup) and exits; `relay up` has a worker
        # running in this process, so turn that into an error its caller can report and clean up after.
        where = f"{settings.host}:{settings.port}"
        raise ConfigurationError(
            f"the server could not start on {where} (the reason is logged above)"
        ) from None
    finally:
        side_stop.set()
        if grpc_server is not None:
            await grpc_server.stop(0)  # already stopped, unless uvicorn never started
        await asyncio.gather(*side, return_exceptions=True)


def _side_tasks(
    relay: Relay,
    settings: ServerSettings,
    server: uvicorn.Server,
    stop: asyncio.Event | None,
    done: asyncio.Event,
) -> list[asyncio.Task[None]]:
    """The tasks that run beside uvicorn until ``done``: the stop watcher, and maintenance."""
    tasks = [asyncio.create_task(_watch(stop, server, done))] if stop is not None else []
    if settings.maintenance:
        holder = f"server:{worker_identity()}"
        runner = MaintenanceRunner(relay.storage, holder, _services(relay), relay.settings.leader_ttl)
        tasks.append(asyncio.create_task(runner.run(done)))
    return tasks


async def _watch(stop: asyncio.Event, server: uvicorn.Server, done: asyncio.Event) -> None:
    """Turn ``stop`` into uvicorn's exit flag (uvicorn checks it every tick)."""
    stop_wait = asyncio.ensure_future(stop.wait())
    done_wait = asyncio.ensure_future(done.wait())
    try:
        await asyncio.wait({stop_wait, done_wait}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_wait.cancel()
        done_wait.cancel()
    server.should_exit = True


def serve(
    relay: Relay,
    host: str | None = None,
    port: int | None = None,
    *,
    settings: ServerSettings | None = None,
    access_log: bool = False,
    **overrides: Any,
) -> None:
    """Run the server in this thread until SIGTERM/SIGINT (``relay server``), then close storage.

    ``host`` and ``port`` (and keyword ``overrides`` of :class:`ServerSettings`) win over
    ``RELAY_HOST``/``RELAY_PORT`` and the other ``RELAY_*`` variables; None means "not given".
    The first signal stops the server gracefully (open requests get 10 seconds); a second one
    interrupts at once."""
    chosen = settings or ServerSettings.from_env(host=host, port=port, **overrides)

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        try:
            await serve_async(relay, chosen, stop=stop, access_log=access_log)
        finally:
            await relay.storage.close()

    asyncio.run(main())


def _stop_on_signals(stop: asyncio.Event) -> None:
    # Our own handlers rather than uvicorn's: uvicorn re-raises the signal after shutting down, which
    # would kill the process before storage is closed, and exit with a signal status instead of 0.
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)

    def first_signal() -> None:
        log.info("stopping the server")
        stop.set()
        for sig in signals:
            loop.remove_signal_handler(sig)  # a second signal gets the default behaviour: exit now

    for sig in signals:
        loop.add_signal_handler(sig, first_signal)
