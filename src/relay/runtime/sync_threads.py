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

    def _start(self) -> bool:
        """Called by the pool thread: False if the call was stopped while it waited in the queue."""
        with self._lock:
            if self._finished:
                return False
            self._thread_id = threading.get_ident()
            return True

    def _finish(self) -> None:
        """Called by the pool thread when the job's code returned: no interrupt may follow, and one
        already sent but not yet delivered is withdrawn."""
        with self._lock:
            self._finished = True
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.get_ident()), None)

    def interrupt(self) -> bool:
        """Raise JobInterrupted in the thread running this call; False if it is not running (a call
        not started yet will not start at all)."""
        with self._lock:
            if self._thread_id is None:
                self._finished = True  # still queued: _run skips it
                return False
            if self._finished:
                return False
            n = ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self._thread_id), ctypes.py_object(JobInterrupted)
            )
            return bool(n == 1)


class SyncThreadPool:
    def __init__(self, size: int, name: str = "relay-job") -> None:
        self._queue: queue.SimpleQueue[SyncCall | None] = queue.SimpleQueue()
        self._name = name
        self._threads: list[threading.Thread] = []
        for _ in range(size):
            self.add_thread()

    def add_thread(self) -> None:
        """One more thread: to replace one stuck in a job that was abandoned, so slots stay usable."""
        thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
        self._threads.append(thread)
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
        outcome: tuple[bool, Any] = (False, JobInterrupted("stopped before it started"))
        try:
            if call._start():
                try:
                    outcome = (True, call.context.run(call.fn, *call.args, **call.kwargs))
                except BaseException as exc:  # the job's error (or our interrupt) goes back to the loop
                    outcome = (False, exc)
                finally:
                    call._finish()
        except JobInterrupted:
            pass  # an interrupt that landed after the job's code ended: the outcome stands
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
