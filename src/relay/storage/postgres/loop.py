"""The backend's own event loop, on a daemon thread: every pool connection lives and is used there.

Relay calls storage from several loops and threads at once (the sync producer API runs a private loop in
a thread, each worker runs its own loop, the heartbeat thread another one). A psycopg
``AsyncConnectionPool`` and its connections are bound to the loop that opened them, so the backend owns
one loop, opens everything on it, and each public method hops there with
``asyncio.run_coroutine_threadsafe`` and awaits the result from the caller's loop. Cancelling the caller's
await cancels the hopped coroutine too (``wrap_future`` chains the cancellation).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from relay.errors import StorageUnavailableError

T = TypeVar("T")


class LoopThread:
    """An event loop running forever on its own daemon thread, until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise StorageUnavailableError("the PostgreSQL storage is not open")
        return self._loop

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this loop; await its result from any other loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            raise StorageUnavailableError("the PostgreSQL storage is not open")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if future.cancelled() and caller is not None and not caller.cancelling():
                # Not our caller's cancellation: the storage closed under it (see stop()).
                raise StorageUnavailableError("the PostgreSQL storage was closed") from None
            raise

    def run_sync(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on this loop and block this (other) thread until it is done."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        """Cancel what still runs on the loop (its callers get StorageUnavailableError instead of
        waiting forever), then stop it and join its thread."""
        loop, self._loop = self._loop, None
        thread, self._thread = self._thread, None
        if loop is None:
            return
        if thread is not threading.current_thread():
            with contextlib.suppress(Exception):  # best effort: the loop stops anyway
                asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        if not loop.is_running():
            loop.close()


async def _cancel_all() -> None:
    me = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not me]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
