"""Helpers for the server tests: an in-process API client, a real uvicorn server in a thread, tokens."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from relay.app import Relay
from relay.server import ServerSettings, create_app, serve_async

SECRET = "test-secret-that-is-at-least-32-bytes-long"
POLL = 0.01  # how often a condition is looked at again: not a wait for time to pass


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(POLL)


@asynccontextmanager
async def api_client(
    relay: Relay, settings: ServerSettings | None = None, token: str | None = None, app: FastAPI | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the ASGI app in-process, with the app's lifespan running."""
    app = app or create_app(relay, settings or ServerSettings(events_interval=0))
    # Every body these tests send is JSON, raw ones included: say so, as real clients do.
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:4000", headers=headers
        ) as client:
            yield client


class ServerThread:
    """``serve_async`` on a free loopback port, in a thread with its own event loop: a real uvicorn."""

    def __init__(self, relay: Relay, settings: ServerSettings) -> None:
        self.relay = relay
        self.settings = settings
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="relay-test-server", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            await serve_async(self.relay, self.settings, stop=self._stop, sockets=[self.sock])

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc
            self._started.set()

    def start(self, timeout: float = 10.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.error is None:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(POLL)
        raise AssertionError(f"the server did not start: {self.error!r}")

    def stop(self, timeout: float = 20.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the server did not stop"


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Like :func:`eventually`, for sync code."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL)
