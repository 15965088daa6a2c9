"""A small thread pool for sync task functions whose jobs can be interrupted.

Python cannot kill a thread, but it can raise an exception in one (``PyThreadState_SetAsyncExc``), as
dramatiq does for time limits. The exception is delivered at the thread's next bytecode, so pure-Python
code stops promptly; a thread blocked in C (a long ``time.sleep``, a socket read) stops only when that
call returns. We run our own threads rather than ``concurrent.futures``' because an interrupt that lands
just after the job returned must not kill a pool thread: ours catch it and carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class JobInterrupted(BaseException):
    """Raised inside a sync job's thread to stop it (timeout, cancellation, shutdown)."""


@dataclass(eq=False)
class SyncCall:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    context: contextvars.Context
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    # The thread running the call, while it runs; guarded by _lock so an interrupt never lands late.
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread_id: int | None = None
    _finished: bool = False

    def interrupt(self) -> bool:
        """Raise JobInterrupted in the thread running this call; False if it is not running."""
        with self._lock:
            if self._thread_id is None or self._finished:
                return False
            n = ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self._thread_id), ctypes.py_object(JobInterrupted)
            )
            return bool(n == 1)


class SyncThreadPool:
    def __init__(self, size: int, name: str = "relay-job") -> None:
        self._queue: queue.SimpleQueue[SyncCall | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> SyncCall:
        """Run ``fn`` in a pool thread with the caller's context; await ``call.future`` for the result."""
        loop = asyncio.get_running_loop()
        call = SyncCall(fn, args, kwargs, contextvars.copy_context(), loop, loop.create_future())
        self._queue.put(call)
        return call

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(None)

    def _work(self) -> None:
        while True:
            try:
                call = self._queue.get()
                if call is None:
                    return
                self._run(call)
            except JobInterrupted:
                # Landed between jobs (the job finished just as it was interrupted): harmless here.
                continue

    def _run(self, call: SyncCall) -> None:
        with call._lock:
            call._thread_id = threading.get_ident()
        outcome: tuple[bool, Any]
        try:
            outcome = (True, call.context.run(call.fn, *call.args, **call.kwargs))
        except BaseException as exc:  # the job's error (or our interrupt) goes back to the loop
            outcome = (False, exc)
        finally:
            with call._lock:
                call._finished = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for this result
            call.loop.call_soon_threadsafe(_resolve, call.future, outcome)


def _resolve(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
