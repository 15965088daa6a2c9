"""A backend's own event loop, on a daemon thread: where its connections live and are used.

Relay calls storage from several event loops and threads at once (the sync producer API runs a private
loop in a thread, each worker runs its own loop, a worker's heartbeat thread another one), but an
asyncio database client (a psycopg pool, a redis.asyncio client) is bound to the loop that created it.
So a network backend owns one loop, creates its client there, and every public coroutine hops onto it
with ``run_coroutine_threadsafe`` and awaits the result with ``wrap_future`` from the caller's loop, as
the SQLite backend owns one thread for its connection. Cancelling the awaiting caller cancels the hop's
task on the private loop too (``wrap_future`` chains the cancellation).
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
    """One event loop running forever on a daemon thread, until :meth:`stop`."""

    def __init__(self, name: str, what: str) -> None:
        self._name = name
        self._what = what  # "the PostgreSQL storage": how errors name the backend
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
            raise StorageUnavailableError(f"{self._what} is not open")
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

    def _schedule(self, coro: Coroutine[Any, Any, T]) -> Any:
        try:
            return asyncio.run_coroutine_threadsafe(coro, self.loop)
        except BaseException as exc:
            coro.close()  # never scheduled: do not leave a "never awaited" coroutine behind
            if isinstance(exc, RuntimeError):  # the loop closed between the check and the call
                raise StorageUnavailableError(f"{self._what} is closed") from exc
            raise

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop and await its result from the caller's loop."""
        future = self._schedule(coro)
        try:
            result: T = await asyncio.wrap_future(future)
            return result
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if future.cancelled() and caller is not None and not caller.cancelling():
                # Not our caller's cancellation: the storage closed under it (see stop()).
                raise StorageUnavailableError(f"{self._what} was closed") from None
            raise

    def submit(self, coro: Coroutine[Any, Any, None]) -> None:
        """Start ``coro`` on the private loop without waiting for it (its errors are its own to log)."""
        self._schedule(coro)

    def stop(self) -> None:
        """Cancel what still runs on the loop (its callers get StorageUnavailableError instead of
        waiting forever), then stop it and join its thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None:
            return
        here = thread is threading.current_thread()
        if not here:
            with contextlib.suppress(Exception):  # best effort: the loop stops anyway
                asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None and not here:
            thread.join(timeout=10)
        if not loop.is_running():
            loop.close()


async def _cancel_all() -> None:
    me = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not me]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
