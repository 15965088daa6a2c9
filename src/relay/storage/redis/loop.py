"""The backend's own event loop, on a daemon thread: where its Redis client lives.

Relay calls storage from several event loops and threads at once (the sync producer API runs a loop in
a thread, each worker runs its own loop, a worker's heartbeat thread runs another), but a
``redis.asyncio`` client and its connection pool are bound to the loop that created them. So the
backend owns one private loop, creates its client there, and every public coroutine hops onto it with
``run_coroutine_threadsafe`` and awaits the result with ``wrap_future`` from the caller's loop, as the
SQLite backend owns one thread for its connection.

Cancelling the awaiting caller cancels the hop's task on the private loop too (``wrap_future`` chains
the cancellation), so a cancelled claim does not keep running behind the caller's back.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from relay.errors import StorageUnavailableError

T = TypeVar("T")


class LoopThread:
    """One event loop running forever on a daemon thread, until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()  # guards _loop / _thread across callers of start and stop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._loop is not None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            raise StorageUnavailableError("the Redis storage is not open")
        return loop

    def start(self) -> bool:
        """Start the loop; False when it was running already."""
        with self._lock:
            if self._loop is not None:
                return False
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(target=self._run, args=(loop, ready), name=self._name, daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            return True

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop and await its result from the caller's loop."""
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except BaseException as exc:
            coro.close()  # never scheduled: do not leave a "never awaited" coroutine behind
            if isinstance(exc, RuntimeError):  # the loop closed between the check and the call
                raise StorageUnavailableError("the Redis storage is closed") from exc
            raise
        return await asyncio.wrap_future(future)

    def submit(self, coro: Coroutine[Any, Any, None]) -> None:
        """Start ``coro`` on the private loop without waiting for it (its errors are its own to log)."""
        try:
            asyncio.run_coroutine_threadsafe(coro, self.loop)
        except BaseException as exc:
            coro.close()
            if isinstance(exc, RuntimeError):
                raise StorageUnavailableError("the Redis storage is closed") from exc
            raise

    def stop(self) -> None:
        """Stop the loop and join its thread. Its tasks must be finished (the backend closes first)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
